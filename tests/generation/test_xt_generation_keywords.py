"""AutoregressiveWrapper and XTransformer with x-transformers 2.31.10's keywords."""

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper, XTransformer
from labml_style_nn.generation.sampling import min_p, top_a, top_k, top_p

V = 20


def wrapper(**kwargs):
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=V, max_seq_len=32,
                             attn_layers=Decoder(dim=16, depth=2, heads=2, rotary_pos_emb=True))
    return AutoregressiveWrapper(net, **kwargs)


def test_filters_take_xtransformers_names():
    logits = torch.randn(3, V)
    assert torch.equal(top_p(logits, thres=0.5), top_p(logits, p=0.5))
    assert torch.equal(min_p(logits, min_p=0.3), min_p(logits, p=0.3))
    assert (~top_k(logits).isinf()).sum(-1).tolist() == [2, 2, 2]  # ceil(0.1 * 20), x-transformers' default
    assert (~top_k(logits, frac_num_tokens=0.25).isinf()).sum(-1).tolist() == [5, 5, 5]
    kept = ~top_a(logits, min_p_pow=1.0, min_p_ratio=0.5).isinf()
    probs = logits.softmax(-1)
    assert torch.equal(kept, probs >= 0.5 * probs.amax(-1, keepdim=True))
    ar = wrapper()
    prompt = torch.randint(0, V, (2, 3))
    for name, kw in (("top_p", dict(thres=0.9)), ("min_p", dict(min_p=0.1)), ("top_a", {}), ("top_k", dict(k=3))):
        assert ar.generate(prompt, 4, filter_logits_fn=name, filter_kwargs=kw).shape == (2, 4)


def test_beam_search_keeps_the_most_likely_sequence():
    ar = wrapper().eval()
    prompt = torch.randint(0, V, (2, 3))
    greedy = ar.generate(prompt, 4, temperature=0)
    assert torch.equal(ar.beam_search(prompt, 4, beams=1), greedy)
    best = ar.beam_search(prompt, 4, beams=4)
    assert torch.equal(best, ar.beam_search(prompt, 4, beams=4, cache_kv=False))  # the cache follows the beams
    beams, scores = ar.beam_search(prompt, 4, beams=4, return_beams_and_scores=True)
    assert beams.shape == (4, 2, 4) and scores.shape == (4, 2) and torch.equal(beams[0], best)
    assert (scores[:-1] >= scores[1:]).all()

    def score(seq):  # log p(seq | prompt), by one pass
        full = torch.cat((prompt, seq), 1)
        logp = ar.net(full[:, :-1]).log_softmax(-1)[:, 2:]
        return logp.gather(-1, seq[..., None]).squeeze(-1).sum(-1)

    with torch.no_grad():
        torch.testing.assert_close(score(best), scores[0], atol=1e-4, rtol=1e-4)
        assert (score(best) >= score(greedy) - 1e-5).all()
    with pytest.raises(ValueError, match="eos_token"):
        ar.beam_search(prompt, 2, eos_token=1)


def test_prompt_lens_equal_a_list_of_prompts():
    ar = wrapper()
    prompts = torch.randint(1, V, (2, 5))
    lens = torch.tensor([5, 3])
    as_list = ar.generate([prompts[0], prompts[1, :3]], 4, temperature=0)
    right_padded = prompts.clone()
    right_padded[1, 3:] = 0
    assert torch.equal(ar.generate(right_padded, 4, temperature=0, prompt_lens=lens), as_list)


def test_training_keywords_add_their_losses():
    ar = wrapper(add_attn_z_loss=True)
    x = torch.randint(0, V, (2, 8))
    loss, (logits, inter) = ar(x, return_outputs=True)
    plain = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:])
    torch.testing.assert_close(loss, plain + inter.attn_z_loss)
    # lens= is a mask by lengths.
    ar = wrapper()
    lens = torch.tensor([8, 5])
    mask = torch.arange(8)[None] < lens[:, None]
    torch.testing.assert_close(ar(x, lens=lens), ar(x, mask=mask))
    # mask_prob hides keys at random in training only.
    ar = wrapper(mask_prob=0.5)
    ar.eval()
    torch.testing.assert_close(ar(x), wrapper()(x))
    ar.train()
    torch.manual_seed(3)
    assert not torch.allclose(ar(x), wrapper()(x))


def test_next_embedding_head_trains_with_its_l1_loss():
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=V, max_seq_len=32, attn_layers=Decoder(dim=16, depth=1, heads=2),
                             add_continuous_pred_head=True)
    x = torch.randint(0, V, (2, 8))
    with_head = AutoregressiveWrapper(net, next_embed_loss_weight=0.5)(x)
    without = AutoregressiveWrapper(net, next_embed_loss_weight=0.0)(x)
    assert with_head > without
    with_head.backward()
    assert net.to_next_embed_pred[0].weight.grad is not None


def test_xtransformer_readme_runs_with_mask():
    model = XTransformer(dim=16, enc_num_tokens=V, enc_depth=1, enc_heads=2, enc_max_seq_len=16,
                         dec_num_tokens=V, dec_depth=1, dec_heads=2, dec_max_seq_len=16, tie_token_emb=True)
    src, tgt = torch.randint(0, V, (2, 10)), torch.randint(0, V, (2, 10))
    src_mask = torch.ones_like(src).bool()
    src_mask[1, -3:] = False
    loss = model(src, tgt, mask=src_mask)
    torch.testing.assert_close(loss, model(src, tgt, src_mask=src_mask))
    loss.backward()
    start = torch.ones(2, 1).long()
    model.eval()
    assert torch.equal(model.generate(src, start, 4, mask=src_mask, temperature=0),
                       model.generate(src, start, 4, src_mask=src_mask, temperature=0))
    with pytest.raises(ValueError, match="mask and src_mask"):
        model(src, tgt, mask=src_mask, src_mask=src_mask)


def test_cross_attn_tokens_dropout_acts_in_training_only():
    kw = dict(dim=16, enc_num_tokens=V, enc_depth=1, enc_heads=2, enc_max_seq_len=16, dec_num_tokens=V,
              dec_depth=1, dec_heads=2, dec_max_seq_len=16)
    torch.manual_seed(0)
    a = XTransformer(**kw)
    torch.manual_seed(0)
    b = XTransformer(**kw, cross_attn_tokens_dropout=0.5)
    src, tgt = torch.randint(0, V, (2, 10)), torch.randint(0, V, (2, 10))
    a.eval(), b.eval()
    torch.testing.assert_close(a(src, tgt), b(src, tgt))
    a.train(), b.train()
    assert not torch.allclose(a(src, tgt), b(src, tgt))


def test_beam_search_with_prompt_lens_equals_each_prompt_alone():
    ar = wrapper().eval()
    prompts = torch.randint(1, V, (2, 5))
    lens = torch.tensor([5, 3])
    both = ar.beam_search(prompts, 3, beams=2, prompt_lens=lens)
    alone = ar.beam_search(prompts[1:, :3], 3, beams=2)
    assert torch.equal(both[1:], alone)


def test_a_prompt_without_batch_dimension_gives_tokens_without_one():
    ar = wrapper()
    prompt = torch.randint(0, V, (4,))
    out = ar.generate(prompt, 5, temperature=0)
    assert out.shape == (5,)  # x-transformers' shape for an `(n,)` prompt
    assert torch.equal(out, ar.generate(prompt[None], 5, temperature=0)[0])
