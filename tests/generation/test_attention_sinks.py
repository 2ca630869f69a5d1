"""Attention sinks (StreamingLLM): a bounded cache of the first k tokens plus the most recent ones,
with positions assigned within the cache as the paper does."""

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.generation.attention_sinks import (
    AttentionSinksCache,
    SinkAttentionCache,
    SinkLayout,
    sink_cache,
)

K, C = 3, 10
SCHEMES = {
    "rotary": dict(rotary_pos_emb=True),
    "rotary_partial_yarn": dict(rotary_pos_emb=True, rotary_emb_dim=4, rotary_yarn_factor=2.0,
                                rotary_yarn_original_max_len=16),
    "alibi": dict(alibi_pos_emb=True, disable_abs_pos_emb=True),  # positions within the cache only
    "t5": dict(rel_pos_bias=True),
    "rotary_gqa_qknorm": dict(rotary_pos_emb=True, attn_kv_heads=2, attn_qk_norm=True),
}


def full_attention(kw, depth=1):
    torch.manual_seed(0)
    dec = Decoder(dim=32, depth=depth, heads=4, attn_dim_head=8, **kw)
    return TransformerWrapper(num_tokens=50, max_seq_len=16, attn_layers=dec).eval()


def kept(t):
    """The tokens the paper's cache holds at step t (the new token included), in order."""
    return list(range(min(K, t + 1))) + list(range(max(K, t + 1 - (C - K)), t + 1))


def stream(net, x, prompt):
    cache = AttentionSinksCache(net.attn_layers, x.shape[0], sinks=K, cache_len=C)
    net(x[:, :prompt], cache=cache)
    return [net(x[:, t:t + 1], cache=cache)[:, -1] for t in range(prompt, x.shape[1])], cache


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("prompt", [1, 6])
def test_each_step_equals_a_pass_over_the_cached_tokens_at_positions_zero_to_c(name, prompt):
    # One layer: a cached key depends on its token only, so a streaming step must equal a plain pass
    # over [sinks, recent tokens, new token], which puts them at positions 0 ... len - 1.
    net = full_attention(SCHEMES[name])
    x = torch.randint(0, 50, (2, 40))
    steps, _ = stream(net, x, prompt)
    for t, out in zip(range(prompt, 40), steps, strict=True):
        torch.testing.assert_close(out, net(x[:, kept(t)])[:, -1], atol=2e-5, rtol=1e-4)


def test_without_eviction_the_sink_cache_is_the_full_cache():
    net = full_attention(SCHEMES["rotary"], depth=2)
    x = torch.randint(0, 50, (2, C))
    steps, _ = stream(net, x, prompt=2)
    torch.testing.assert_close(torch.stack(steps, dim=1), net(x)[:, 2:], atol=1e-5, rtol=1e-4)


def test_cache_positions_are_the_papers():
    lay = SinkLayout(window=C - K, pinned=K)
    for t in range(30):
        lay.seen = t
        positions = lay.cache_positions()
        count = min(t + 1, C)
        # sinks in their slots at 0 ... k - 1, every position 0 ... len - 1 once, the new token last
        assert positions[:min(K, count)].tolist() == list(range(min(K, count)))
        assert sorted(positions.tolist()) == list(range(count))
        assert positions[lay.slot(t)] == count - 1
        # the recent tokens keep their order and their distances to the new token
        true = lay.slot_positions(1)
        recent = true >= K + lay.shift()
        assert torch.equal(t - true[recent], count - 1 - positions[recent])


def test_the_sinks_are_rerotated_window_eviction_differs():
    net = full_attention(SCHEMES["rotary"])
    x = torch.randint(0, 50, (1, 30))
    t = 29
    reference = net(x[:, kept(t)])[:, -1]
    steps, _ = stream(net, x, prompt=1)
    torch.testing.assert_close(steps[-1], reference, atol=2e-5, rtol=1e-4)
    # leaving the sinks at their original positions is not the paper's rule ...
    refresh = SinkAttentionCache.refresh_pinned
    SinkAttentionCache.refresh_pinned = lambda self: None
    try:
        stale, _ = stream(net, x, prompt=1)
    finally:
        SinkAttentionCache.refresh_pinned = refresh
    assert not torch.allclose(stale[-1], reference, atol=1e-4)
    # ... and plain window eviction (no sinks) sees other tokens
    cache = AttentionSinksCache(net.attn_layers, 1, sinks=0, cache_len=C)
    net(x[:, :1], cache=cache)
    window = [net(x[:, s:s + 1], cache=cache)[:, -1] for s in range(1, 30)]
    torch.testing.assert_close(window[-1], net(x[:, t + 1 - C:t + 1])[:, -1], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(window[-1], reference, atol=1e-4)


def test_memory_is_bounded_and_written_in_place():
    net = full_attention(SCHEMES["rotary"], depth=2)
    x = torch.randint(0, 50, (1, 64))  # four times max_seq_len
    _, cache = stream(net, x, prompt=4)
    attn = [b.attn for b in cache.blocks if b.attn is not None]
    assert all(c.k.shape[2] == C for c in attn)
    assert cache.offset == 64


def test_generate_streams_past_max_seq_len():
    net = full_attention(SCHEMES["rotary"], depth=2)
    wrapper = AutoregressiveWrapper(net)
    prompt = torch.randint(0, 50, (2, 4))
    out = wrapper.generate(prompt, 60, temperature=0, cache_kv=sink_cache(sinks=K, cache_len=C))
    # the first C - 4 tokens, before any eviction, are those of the full cache
    torch.testing.assert_close(out[:, :C - 4], wrapper.generate(prompt, C - 4, temperature=0))
    assert out.shape == (2, 60)


def test_refusals_name_the_argument():
    layers = Decoder(dim=32, depth=1, heads=4, rotary_pos_emb=True)
    with pytest.raises(ValueError, match="cache_len"):
        AttentionSinksCache(layers, 1, sinks=4, cache_len=5)
    with pytest.raises(ValueError, match="sinks"):
        sink_cache(sinks=-1)
    window = Decoder(dim=32, depth=1, heads=4, rotary_pos_emb=True, attn_max_attend_past=4)
    with pytest.raises(ValueError, match="attn_max_attend_past"):
        AttentionSinksCache(window, 1)
