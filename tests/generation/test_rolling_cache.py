"""The rolling cache of sliding-window attention: W + 1 slots per layer, overwritten in place, and
a rolling generation equals one windowed pass over the whole sequence."""

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.generation.rolling_cache import RollingLayersCache, RollingLayout

W = 5
SCHEMES = {
    "rotary": dict(rotary_pos_emb=True),
    "alibi": dict(alibi_pos_emb=True),
    "t5": dict(rel_pos_bias=True),
    "none": {},
    "rotary_gqa": dict(rotary_pos_emb=True, attn_kv_heads=2),
    "explicit_path": dict(rotary_pos_emb=True, attn_talking_heads=True),
    "rotary_latent": dict(rotary_pos_emb=True, attn_use_latent_kv=True, attn_dim_latent_kv=12),
    "alibi_latent_deepseek": dict(alibi_pos_emb=True, attn_use_latent_kv=True, attn_dim_latent_kv=12,
                                  attn_latent_rope_dim=4),
}


def windowed(kw, depth=2):
    torch.manual_seed(0)
    dec = Decoder(dim=32, depth=depth, heads=4, attn_dim_head=8, attn_max_attend_past=W, **kw)
    return TransformerWrapper(num_tokens=50, max_seq_len=16, attn_layers=dec, use_abs_pos_emb=False).eval()


def rolled(net, x, prompt, chunk=1, mask=None):
    """Logits of `x` fed through a rolling cache: the prompt, then `chunk` tokens per step."""
    cache = RollingLayersCache.for_window(net.attn_layers, x.shape[0])
    outs = [net(x[:, :prompt], cache=cache, mask=None if mask is None else mask[:, :prompt])]
    for t in range(prompt, x.shape[1], chunk):
        outs.append(net(x[:, t:t + chunk], cache=cache))
    return torch.cat(outs, dim=1), cache


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("prompt", [1, 4, 13])
def test_rolling_steps_equal_one_windowed_pass(name, prompt):
    net = windowed(SCHEMES[name])
    x = torch.randint(0, 50, (2, 4 * 8))  # four times the window's worth of wrap-arounds
    out, _ = rolled(net, x, prompt)
    torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["rotary", "alibi"])
def test_chunks_of_several_tokens_equal_one_windowed_pass(name):
    net = windowed(SCHEMES[name])
    x = torch.randint(0, 50, (2, 35))
    out, _ = rolled(net, x, prompt=8, chunk=3)
    torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-4)


def test_cache_holds_w_plus_one_keys_overwritten_in_place():
    net = windowed(SCHEMES["rotary"])
    x = torch.randint(0, 50, (1, 64))  # four times max_seq_len
    cache = RollingLayersCache.for_window(net.attn_layers, 1)
    net(x[:, :3], cache=cache)
    attn = [b.attn for b in cache.blocks if b.attn is not None]
    pointers = [c.k.data_ptr() for c in attn]
    for t in range(3, 64):
        net(x[:, t:t + 1], cache=cache)
    assert all(c.k.shape[2] == W + 1 and c.v.shape[2] == W + 1 for c in attn)
    assert [c.k.data_ptr() for c in attn] == pointers  # never reallocated
    assert cache.offset == 64


def test_left_padded_prompts_match_the_masked_pass():
    net = windowed(SCHEMES["rotary"])
    x = torch.randint(0, 50, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, :4] = False  # row 1 starts with padding
    out, _ = rolled(net, x, prompt=6, mask=mask)
    torch.testing.assert_close(out[mask], net(x, mask=mask)[mask], atol=1e-5, rtol=1e-4)


def test_slot_positions_follow_the_ring():
    lay = RollingLayout(window=4)
    assert [lay.slot(p) for p in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    lay.seen = 9  # token 9 goes to slot 1 and overwrites token 5
    assert lay.slot_positions(1).tolist() == [8, 9, 6, 7]
    assert lay.ordered_positions() == [6, 7, 8]
    assert lay.slot_positions(2).tolist() == [6, 7, 8, 9, 10]
    pinned = RollingLayout(window=3, pinned=2)
    assert [pinned.slot(p) for p in range(8)] == [0, 1, 2, 3, 4, 2, 3, 4]


def test_generate_uses_the_rolling_cache_and_equals_uncached_decoding():
    torch.manual_seed(0)
    net = windowed(SCHEMES["rotary"])
    wrapper = AutoregressiveWrapper(net)
    prompt = torch.randint(0, 50, (2, 4))
    made = []
    original = RollingLayersCache.for_window.__func__

    def spy(cls, layers, batch):
        made.append(original(cls, layers, batch))
        return made[-1]

    RollingLayersCache.for_window = classmethod(spy)
    try:
        cached = wrapper.generate(prompt, 60, temperature=0)
    finally:
        RollingLayersCache.for_window = classmethod(original)
    assert len(made) == 1 and made[0].offset == 63
    torch.testing.assert_close(cached, wrapper.generate(prompt, 60, temperature=0, cache_kv=False))


def test_refusals_name_the_argument():
    full = Decoder(dim=32, depth=1, heads=4, rotary_pos_emb=True)
    with pytest.raises(ValueError, match="attn_max_attend_past"):
        RollingLayersCache.for_window(full, 1)
    with pytest.raises(ValueError, match="window"):
        RollingLayersCache(full, 1, window=0)
    with pytest.raises(ValueError, match="position infused"):
        RollingLayersCache(Decoder(dim=32, depth=1, heads=4, position_infused_attn=True), 1, window=4)


@pytest.mark.parametrize("name", ["rolling_cache", "attention_sinks"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"labml_style_nn.generation.{name}"), verbose=False)
    assert result.attempted > 0 and result.failed == 0
