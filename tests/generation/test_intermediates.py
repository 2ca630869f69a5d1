"""x-transformers' cache spelling: return_intermediates=True / cache=intermediates over one LayersCache."""

import copy

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, Decoder, Encoder, TransformerWrapper
from labml_style_nn.generation.intermediates import LayerIntermediates

V = 20


def model(**kwargs):
    stack = {k: kwargs.pop(k) for k in list(kwargs) if k in ("rotary_pos_emb", "alibi_pos_emb", "rel_pos_bias")}
    torch.manual_seed(0)
    return TransformerWrapper(num_tokens=V, max_seq_len=32, attn_layers=Decoder(dim=16, depth=2, heads=2, **stack),
                              **kwargs).eval()


@pytest.mark.parametrize("kwargs", [dict(), dict(rotary_pos_emb=True, num_memory_tokens=2), dict(alibi_pos_emb=True)],
                         ids=["absolute", "rotary+memory", "alibi"])
def test_the_round_trip_equals_one_full_pass(kwargs):
    m = model(**kwargs)
    x = torch.randint(0, V, (2, 9))
    full = m(x)
    with torch.no_grad():
        # x-transformers' loop: the whole sequence each call, only the new tokens run.
        a, cache = m(x[:, :5], return_intermediates=True)
        b, cache = m(x[:, :6], cache=cache, return_intermediates=True)
        c, cache = m(x, cache=cache, return_intermediates=True)
    assert isinstance(cache, LayerIntermediates) and cache.cache_length == 9
    assert b.shape == (2, 1, V) and c.shape == (2, 3, V)
    torch.testing.assert_close(torch.cat((a, b, c), dim=1), full, atol=1e-5, rtol=1e-4)


def test_snapshots_branch_rewind_grow_and_refuse_when_stale():
    m = model(rotary_pos_emb=True)
    x = torch.randint(0, V, (1, 12))
    full = m(x)
    with torch.no_grad():
        _, prefix = m(x[:, :4], return_intermediates=True)
        assert prefix.shared_cache.cache.max_len == 4  # allocated for the prompt ...
        _, longer = m(x[:, :11], cache=prefix, return_intermediates=True)  # ... grown past it
        # A call from the older snapshot rewinds the shared cache and gives the same logits.
        again, branch = m(x[:, :6], cache=prefix, return_intermediates=True)
        torch.testing.assert_close(again, full[:, 4:6], atol=1e-5, rtol=1e-4)
        with pytest.raises(ValueError, match="overwrote"):
            m(x, cache=longer)  # positions 4..5 were written again by the branch
        # A deep copy is a branch of its own.
        own = copy.deepcopy(branch)
        m(x[:, :8], cache=branch)
        torch.testing.assert_close(m(x[:, :7], cache=own), full[:, 6:7], atol=1e-5, rtol=1e-4)
        # Only the new tokens, with input_not_include_cache.
        torch.testing.assert_close(m(x[:, 6:7], cache=copy.deepcopy(own), input_not_include_cache=True),
                                   full[:, 6:7], atol=1e-5, rtol=1e-4)


def test_intermediates_carry_attention_hiddens_and_refuse_without_keys():
    m = model()
    x = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        _, inter = m(x, return_intermediates=True)
    assert [t.post_softmax_attn.shape for t in inter.attn_intermediates] == [(2, 2, 6, 6)] * 2
    assert len(inter.hiddens) == 2 and inter.last_layer_hiddens.shape == (2, 6, 16)
    torch.testing.assert_close(inter.attn_intermediates[0].post_softmax_attn.sum(-1), torch.ones(2, 2, 6))
    enc = TransformerWrapper(num_tokens=V, max_seq_len=16, attn_layers=Encoder(dim=16, depth=1, heads=2)).eval()
    _, inter = enc(x, return_intermediates=True)
    with pytest.raises(ValueError, match="no keys and values"):
        enc(x, cache=inter)


def test_the_stack_speaks_it_too():
    dec = Decoder(dim=16, depth=2, heads=2, rotary_pos_emb=True).eval()
    x = torch.randn(2, 7, 16)
    full = dec(x)
    with torch.no_grad():
        a, inter = dec(x[:, :4], return_hiddens=True)
        b, inter = dec(x, cache=inter, return_hiddens=True)
    assert len(inter.hiddens) == 2
    torch.testing.assert_close(torch.cat((a, b), 1), full, atol=1e-5, rtol=1e-4)


def test_a_manual_xtransformers_loop_gives_generate_s_greedy_tokens():
    m = model(rotary_pos_emb=True)
    prompt = torch.randint(0, V, (2, 3))
    expected = AutoregressiveWrapper(m).generate(prompt, 5, temperature=0)
    out, cache = prompt, None
    with torch.no_grad():
        for _ in range(5):
            logits, cache = m(out, cache=cache, return_intermediates=True)
            out = torch.cat((out, logits[:, -1].argmax(-1, keepdim=True)), dim=-1)
    assert torch.equal(out[:, 3:], expected)
    tokens, inter = AutoregressiveWrapper(m).generate(prompt, 5, temperature=0, return_intermediates=True)
    assert torch.equal(tokens, expected) and inter.cache_length == 3 + 5 - 1


def test_positions_prepended_embeddings_and_both_outputs():
    m = model()
    x = torch.randint(0, V, (2, 6))
    logits = m(x)
    # pos= with the default positions changes nothing; shifted positions change the output.
    torch.testing.assert_close(m(x, pos=torch.arange(6)), logits)
    assert not torch.allclose(m(x, pos=torch.arange(6) + 3), logits)
    # seq_start_pos: a left-padded row equals the row alone.
    padded = torch.cat((torch.zeros(1, 2, dtype=torch.long), x[:1, :4]), dim=1)
    out = m(padded, seq_start_pos=torch.tensor([2]))
    torch.testing.assert_close(out[:, 2:], m(x[:1, :4]), atol=1e-5, rtol=1e-4)
    # prepend_embeds: p embeddings before the tokens; excised on request.
    pre = torch.randn(2, 3, 16)
    assert m(x, prepend_embeds=pre).shape == (2, 9, V)
    assert m(x, prepend_embeds=pre, excise_prepend_embeds=True).shape == (2, 6, V)
    assert not torch.allclose(m(x, prepend_embeds=pre)[:, 3:], logits)
    both_logits, emb = m(x, return_logits_and_embeddings=True)
    torch.testing.assert_close(both_logits, logits)
    assert emb.shape == (2, 6, 16)


def test_custom_embedding_head_and_embed_only():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, 16)
    head = torch.nn.Sequential(torch.nn.Linear(16, 5))
    m = TransformerWrapper(num_tokens=V, max_seq_len=16, attn_layers=Decoder(dim=16, depth=1, heads=2),
                           token_emb=emb, to_logits=head)
    assert m.token_emb is emb and m(torch.randint(0, V, (1, 4))).shape == (1, 4, 5)
    m = TransformerWrapper(num_tokens=V, max_seq_len=16, attn_layers=Decoder(dim=16, depth=1, heads=2),
                           return_only_embed=True)
    assert m.to_logits is None and m(torch.randint(0, V, (1, 4))).shape == (1, 4, 16)


def test_additional_keys_and_cross_attention_residuals():
    torch.manual_seed(0)
    dec = Decoder(dim=16, depth=2, heads=2).eval()
    x = torch.randn(2, 8, 16)
    full = dec(x)
    with torch.no_grad():
        # The keys and values of a causal prefix, given to the rest: the full pass (no positions in the stack).
        _, prefix = dec(x[:, :5], return_hiddens=True)
        torch.testing.assert_close(dec(x[:, 5:], self_attn_additional_kv=prefix), full[:, 5:], atol=1e-5, rtol=1e-4)
        # Routed to the top: one pair reaches only the last layer.
        top_only = dec(x[:, 5:], self_attn_additional_kv=[(torch.randn(2, 2, 3, 64), torch.randn(2, 2, 3, 64))])
        assert not torch.allclose(top_only, dec(x[:, 5:]))
    cross = Decoder(dim=16, depth=2, heads=2, cross_attend=True).eval()
    ctx, res = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    torch.testing.assert_close(cross(x, context=ctx, cross_attn_kv_residuals=res), cross(x, context=ctx + res))
    both = cross(x, context=ctx, cross_attn_kv_residuals=torch.stack((res, torch.zeros_like(res))))
    assert not torch.allclose(both, cross(x, context=ctx)) and not torch.allclose(both, cross(x, context=ctx + res))
