"""T5: our keyword-built `XTransformer` against Hugging Face `transformers`' `T5ForConditionalGeneration`.

Random-init models from small configs: v1.0 (ReLU, tied and scaled head) and v1.1 (gated GELU,
tied and untied), odd head counts, head widths that are not D / h, encoders and decoders of
different depths.  Encoder states, decoder logits (with padding), greedy generation with the cache,
and loading a folder written by `save_pretrained`.
"""

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from labml_style_nn import Decoder, RMSNorm, TransformerWrapper, from_hf, from_pretrained  # noqa: E402
from labml_style_nn.positional.t5_bias import relative_position_bucket  # noqa: E402
from labml_style_nn.pretrained import t5  # noqa: E402

ATOL = 1e-4

CONFIGS = {
    # T5 v1.0: ReLU, head tied to the embedding and scaled by D^-1/2; a deeper decoder.
    "v1.0-tied": dict(vocab_size=61, d_model=24, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=3,
                      num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                      feed_forward_proj="relu"),
    # T5 v1.1: gated GELU (tanh), own head, no scaling; 5 heads of width 6 (not D / h); a shallower decoder.
    "v1.1-untied": dict(vocab_size=53, d_model=20, d_kv=6, d_ff=36, num_layers=3, num_decoder_layers=1,
                        num_heads=5, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                        feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # What `transformers` 5 builds for a v1.1 config: tied head, unscaled.
    "v1.1-tied-unscaled": dict(vocab_size=47, d_model=16, d_kv=4, d_ff=28, num_layers=1, num_decoder_layers=2,
                               num_heads=3, relative_attention_num_buckets=6, relative_attention_max_distance=12,
                               feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                               layer_norm_epsilon=1e-2),  # an epsilon that matters: norm_eps must carry it
    # mT5: T5 v1.1 whose head `transformers` never scales.
    "mt5": dict(vocab_size=59, d_model=18, d_kv=5, d_ff=30, num_layers=2, num_decoder_layers=2, num_heads=3,
                relative_attention_num_buckets=10, relative_attention_max_distance=24, feed_forward_proj="gated-gelu"),
}


def make_hf(name: str):
    torch.manual_seed(0)
    if name.startswith("mt5"):
        config = transformers.MT5Config(dropout_rate=0.0, decoder_start_token_id=0, **CONFIGS[name])
        hf = transformers.MT5ForConditionalGeneration(config).eval()
    else:
        config = transformers.T5Config(dropout_rate=0.0, decoder_start_token_id=0, **CONFIGS[name])
        hf = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Larger position biases than the initialisation, so that a wrong bucket shows.
        for m in hf.modules():
            if isinstance(m, transformers.models.t5.modeling_t5.T5Attention) and m.has_relative_attention_bias:
                m.relative_attention_bias.weight.normal_(0, 1.0)
        if name != "v1.1-untied":
            # A small embedding, so that the residual stream does not just echo the input token
            # through the tied head (random tied models otherwise repeat one token forever).
            hf.shared.weight.mul_(0.05)
            hf.decoder.final_layer_norm.weight.mul_(20.0)  # logits of order one all the same
        if name == "v1.1-untied":
            # A head of its own, as `transformers` 5 loads a Flan-T5 checkpoint: untied weights,
            # while its config still says tie_word_embeddings=True (and scale_decoder_outputs=False).
            hf.lm_head.weight = nn.Parameter(torch.randn_like(hf.shared.weight) * 0.5)
    return hf


def hf_generate(hf, src, src_mask, n: int, eos: int = 1):
    """`transformers`' greedy decoding, with the cache.

    Its default cache is sized from the encoder's depth; a cache that grows per layer lets the
    decoder be deeper than the encoder.
    """
    cache = transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache())
    with torch.no_grad():
        return hf.generate(input_ids=src, attention_mask=src_mask, max_new_tokens=n, do_sample=False,
                           decoder_start_token_id=0, eos_token_id=eos, pad_token_id=0, cache=cache, use_cache=True)


def batch(vocab: int):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(2, vocab, (3, 13), generator=g)
    src_mask = torch.ones(3, 13, dtype=torch.bool)
    src_mask[1, 9:] = False  # right padding
    src_mask[2, :6] = False  # left padding: relative positions make it equivalent
    src = src.masked_fill(~src_mask, 0)
    tgt = torch.randint(2, vocab, (3, 7), generator=g)
    tgt[:, 0] = 0  # decoder_start_token_id
    return src, src_mask, tgt


def test_bucket_function_is_t5s():
    rel = torch.arange(-600, 601)[None, :]
    for num_buckets, max_distance in ((32, 128), (8, 20), (6, 12), (33, 100)):
        for causal in (True, False):
            theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
                rel, bidirectional=not causal, num_buckets=num_buckets, max_distance=max_distance)
            ours = relative_position_bucket(rel, causal, num_buckets, max_distance)
            assert torch.equal(ours, theirs), (num_buckets, max_distance, causal)


def test_rms_norm_is_t5s_layer_norm():
    # T5's "LayerNorm": gamma * x / sqrt(mean(x^2) + eps), no mean, no bias, no sqrt(D) factor.
    theirs = transformers.models.t5.modeling_t5.T5LayerNorm(12, eps=1e-6)
    ours = RMSNorm(12, eps=1e-6)
    with torch.no_grad():
        theirs.weight.normal_()
        ours.gamma.copy_(theirs.weight)
    x = torch.randn(2, 5, 12) * 3 + 1
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)


def test_tie_embedding_scale_is_checked():
    with pytest.raises(ValueError, match="tie_embedding_scale"):
        TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(dim=8, depth=1, heads=2),
                           tie_embedding_scale=0.5)  # no tied head to scale
    with pytest.raises(ValueError, match="tie_embedding_scale"):
        TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(dim=8, depth=1, heads=2),
                           tie_embedding=True, tie_embedding_scale=-1.0)
    lm = TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(dim=8, depth=1, heads=2),
                            tie_embedding=True, tie_embedding_scale=0.25)
    h = torch.randn(2, 3, 8)
    torch.testing.assert_close(lm.logits(h), 0.25 * h @ lm.token_emb.weight.t())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_states_and_logits_match(name):
    hf = make_hf(name)
    ours = from_hf(hf)
    assert isinstance(ours, t5.XTransformer) and not ours.training
    assert ("dec_tie_embedding_scale" in t5.keywords(hf.config.to_dict())) == (name == "v1.0-tied")
    src, src_mask, tgt = batch(hf.config.vocab_size)
    with torch.no_grad():
        theirs_enc = hf.encoder(input_ids=src, attention_mask=src_mask).last_hidden_state
        enc = ours.encode(src, src_mask)
        assert (enc - theirs_enc).abs().max().item() < ATOL
        theirs = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits
        logits = ours.decoder.net(tgt, context=enc, context_mask=src_mask)
        assert (logits - theirs).abs().max().item() < ATOL
        # Right-padded targets: equal on the real tokens.
        tgt_mask = torch.ones_like(tgt, dtype=torch.bool)
        tgt_mask[0, 5:] = False
        theirs = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                    decoder_attention_mask=tgt_mask).logits
        logits = ours.decoder.net(tgt, mask=tgt_mask, context=enc, context_mask=src_mask)
        assert (logits - theirs)[tgt_mask].abs().max().item() < ATOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_generation_matches(name):
    hf = make_hf(name)
    ours = from_hf(hf)
    src, src_mask, _ = batch(hf.config.vocab_size)
    n = 9
    theirs = hf_generate(hf, src, src_mask, n)
    out = ours.generate(src, 0, n, src_mask=src_mask, temperature=0.0, eos_token=1)
    assert theirs[:, 0].eq(0).all()
    k = theirs.shape[1] - 1  # `transformers` stops when every row has ended
    assert torch.equal(out[:, :k], theirs[:, 1:])
    assert out[:, k:].eq(0).all()
    assert len(set(out.flatten().tolist())) > 2  # not one token repeated
    # One start token id is the same as a column of it; the key/value cache changes nothing.
    start = torch.zeros(src.shape[0], 1, dtype=torch.long)
    assert torch.equal(ours.generate(src, start, n, src_mask=src_mask, temperature=0.0, eos_token=1,
                                     cache_kv=False), out)


def test_generation_stops_at_eos_like_transformers():
    # End-of-sequence is a token the model does emit after a few steps, so rows end at different times.
    hf = make_hf("v1.1-untied")
    ours = from_hf(hf)
    src, src_mask, _ = batch(hf.config.vocab_size)
    free = ours.generate(src, 0, 12, src_mask=src_mask, temperature=0.0)
    eos = next(t for t in free[0, 2:].tolist() if t != 0)  # not the padding token
    theirs = hf_generate(hf, src, src_mask, 12, eos=eos)
    out = ours.generate(src, 0, 12, src_mask=src_mask, temperature=0.0, eos_token=eos)
    k = theirs.shape[1] - 1
    assert torch.equal(out[:, :k], theirs[:, 1:]) and out[:, k:].eq(0).all()
    ended_at = [(row == eos).nonzero()[0].item() if (row == eos).any() else None for row in out]
    assert ended_at[0] is not None and out[0, ended_at[0] + 1:].eq(0).all()  # padded after its eos
    assert len(set(ended_at)) > 1  # rows end at different times (or not at all)


def test_keywords_and_head_conventions():
    kw = t5.keywords(make_hf("v1.0-tied").config.to_dict())
    assert kw["enc_attn_scale"] == 1.0 and kw["dec_rel_pos_bias"] and kw["enc_use_rmsnorm"]
    assert kw["dec_tie_embedding"] and kw["dec_tie_embedding_scale"] == pytest.approx(24 ** -0.5)
    assert kw["enc_ff_activation"] == "relu" and not kw["enc_ff_glu"] and kw["enc_ff_no_bias"]
    kw = t5.keywords(make_hf("v1.1-untied").config.to_dict())
    assert kw["dec_ff_glu"] and kw["dec_ff_activation"] == "gelu_tanh" and "dec_tie_embedding" not in kw
    assert (kw["enc_depth"], kw["dec_depth"]) == (3, 1)
    # An original v1.1 config.json: tie_word_embeddings false, no scale_decoder_outputs.
    assert t5._head({"tie_word_embeddings": False}) == (False, False)
    assert t5._head({}) == (True, True)
    assert t5._head({"tie_word_embeddings": True, "scale_decoder_outputs": False}) == (False, False)
    assert t5._head({"model_type": "mt5"}) == (False, False)
    with pytest.raises(ValueError, match="feed_forward_proj"):
        t5._feed_forward({"feed_forward_proj": "fancy-relu"})


def test_convert_refuses_unknown_and_untied_heads():
    hf = make_hf("v1.0-tied")
    config, state = hf.config.to_dict(), dict(hf.state_dict())
    with pytest.raises(ValueError, match="does not know"):
        t5.convert(config, {**state, "encoder.block.0.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        t5.convert(config, {**state, "lm_head.weight": torch.randn_like(state["shared.weight"])})


@pytest.mark.parametrize("name", ["v1.0-tied", "v1.1-untied"])
def test_from_pretrained_folder(tmp_path, name):
    hf = make_hf(name)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    src, src_mask, tgt = batch(hf.config.vocab_size)
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits
        logits = ours.decoder.net(tgt, context=ours.encode(src, src_mask), context_mask=src_mask)
    assert (logits - theirs).abs().max().item() < ATOL


@pytest.mark.parametrize("name", ["v1.0-tied", "v1.1-untied"])
def test_from_pretrained_folder_in_the_hubs_original_format(tmp_path, name):
    # Checkpoints on the hub predate `scale_decoder_outputs`: v1.0 configs say nothing about the head
    # (tied, scaled), v1.1 configs say tie_word_embeddings=false (own head, unscaled).  Their
    # safetensors hold each tied matrix once, as `shared.weight`.
    import json

    from safetensors.torch import save_file

    hf = make_hf(name)
    config = {k: v for k, v in hf.config.to_dict().items() if k not in ("scale_decoder_outputs", "tie_word_embeddings")}
    state = {k: v.contiguous() for k, v in hf.state_dict().items()
             if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    if name == "v1.1-untied":
        config["tie_word_embeddings"] = False
    else:
        del state["lm_head.weight"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "model.safetensors"))
    ours = from_pretrained(tmp_path)
    src, src_mask, tgt = batch(hf.config.vocab_size)
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits
        logits = ours.decoder.net(tgt, context=ours.encode(src, src_mask), context_mask=src_mask)
    assert (logits - theirs).abs().max().item() < ATOL
