"""The keywords added for pretrained decoders keep every invariant of the stack.

Grouped/multi-query attention, the sliding window, projection biases, the logit scale, the
feed-forward activations, inner width and biases, the norms' epsilon and the rotary base: each
stack stays causal, ignores padding, gives the same logits with and without the key/value cache,
the same on the fused and explicit attention paths, and the same with a Transformer-XL memory as
in one joint pass.
"""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation import AutoregressiveWrapper, LayersCache

V, DIM, HEADS, DIM_HEAD = 41, 24, 6, 4

FEATURES = {
    "kv_heads": dict(attn_kv_heads=2),
    "one_kv_head": dict(attn_one_kv_head=True),
    "window": dict(attn_max_attend_past=3),
    "window_zero": dict(attn_max_attend_past=0),
    "biases_scale": dict(attn_qkv_bias=True, attn_out_bias=True, attn_scale=0.3),
    "swiglu_inner_no_bias": dict(ff_glu=True, ff_swish=True, ff_inner_dim=37, ff_no_bias=True),
    "gelu_tanh_eps": dict(ff_activation="gelu_tanh", norm_eps=1e-2),
    "rmsnorm_eps": dict(use_rmsnorm=True, norm_eps=0.5),
    "llama_like": dict(attn_kv_heads=3, rotary_pos_emb=True, rotary_emb_dim=DIM_HEAD, rotary_theta=500.0,
                       use_rmsnorm=True, ff_glu=True, ff_swish=True, ff_no_bias=True, ff_inner_dim=40),
    "mistral_like": dict(attn_kv_heads=2, attn_max_attend_past=4, rotary_pos_emb=True, rotary_emb_dim=DIM_HEAD,
                         use_rmsnorm=True, ff_glu=True, ff_swish=True),
    "kv_heads_alibi": dict(attn_kv_heads=2, alibi_pos_emb=True, disable_abs_pos_emb=True),
    "window_t5_talking": dict(attn_max_attend_past=3, rel_pos_bias=True, attn_talking_heads=True),
    "kv_heads_mem_kv_qk_norm": dict(attn_one_kv_head=True, attn_num_mem_kv=2, attn_qk_norm=True),
    "window_mem_kv": dict(attn_max_attend_past=2, attn_num_mem_kv=2, attn_kv_heads=3),
    "kv_heads_gates_rotary": dict(attn_kv_heads=3, attn_gate_values=True, attn_head_scale=True, rotary_pos_emb=True),
    "kv_heads_gates_residual": dict(attn_kv_heads=2, attn_gate_values=True, attn_head_scale=True,
                                    residual_attn=True, rotary_pos_emb=True),
}
# Stacks with a relative scheme (or none that needs positions to continue) take an XL memory.
RELATIVE = {name for name, kw in FEATURES.items()
            if kw.get("rotary_pos_emb") or kw.get("alibi_pos_emb") or kw.get("rel_pos_bias")}


def make(name: str, **wrapper) -> TransformerWrapper:
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=V, max_seq_len=64, attn_layers=Decoder(
        dim=DIM, depth=2, heads=HEADS, attn_dim_head=DIM_HEAD, **FEATURES[name]), **wrapper)
    with torch.no_grad():  # nonzero biases and gates, so that they matter
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def tokens(b: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FEATURES)
def test_causal(name):
    net, x = make(name), tokens(2, 14)
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % V
    with torch.no_grad():
        torch.testing.assert_close(net(x)[:, :9], net(y)[:, :9], atol=1e-5, rtol=0)
        assert (net(x)[:, 9:] - net(y)[:, 9:]).abs().max() > 1e-4


@pytest.mark.parametrize("name", FEATURES)
def test_right_padding_changes_nothing(name):
    net, x = make(name), tokens(3, 12)
    lengths = torch.tensor([12, 7, 3])
    mask = torch.arange(12)[None] < lengths[:, None]
    with torch.no_grad():
        padded = net(x, mask=mask)
        for row, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(padded[row, :n], net(x[row:row + 1, :n])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FEATURES)
def test_cached_steps_equal_full_pass(name):
    net, seq = make(name), tokens(2, 13)
    cache = LayersCache(net.attn_layers, 2, 13)
    with torch.no_grad():
        torch.testing.assert_close(net(seq[:, :5], cache=cache), net(seq[:, :5]), atol=1e-5, rtol=0)
        for t in range(5, 13):
            step = net(seq[:, t:t + 1], cache=cache)[:, -1]
            torch.testing.assert_close(step, net(seq[:, :t + 1])[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FEATURES)
def test_cached_greedy_equals_uncached(name):
    model = AutoregressiveWrapper(make(name))
    prompts = [tokens(1, 6, seed=2)[0], tokens(1, 3, seed=3)[0]]
    assert torch.equal(model.generate(prompts, 10, temperature=0.0),
                       model.generate(prompts, 10, temperature=0.0, cache_kv=False))


@pytest.mark.parametrize("name", FEATURES)
def test_fused_equals_explicit(name):
    net, x = make(name), tokens(2, 11)
    mask = torch.arange(11)[None] < torch.tensor([11, 6])[:, None]
    with torch.no_grad():
        fused = net(x, mask=mask)
        explicit, _ = net(x, mask=mask, return_attn=True)  # inspection takes the explicit path
    torch.testing.assert_close(fused[mask], explicit[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(RELATIVE))
def test_xl_memory_equals_joint_pass(name):
    net, x = make(name, max_mem_len=32), tokens(2, 15)
    with torch.no_grad():
        full = net(x)
        _, mems = net(x[:, :9], return_mems=True)
        torch.testing.assert_close(net(x[:, 9:], mems=mems), full[:, 9:], atol=1e-4, rtol=0)


#
# Refusals name the keyword.
@pytest.mark.parametrize("kwargs,match", [
    (dict(attn_kv_heads=4), "attn_kv_heads"),
    (dict(attn_kv_heads=0), "attn_kv_heads"),
    (dict(attn_kv_heads=2, attn_one_kv_head=True), "one_kv_head"),
    (dict(attn_kv_heads=2, attn_collab_heads=True), "collab_heads"),
    (dict(attn_max_attend_past=-1), "attn_max_attend_past"),
    (dict(attn_scale=0.0), "attn_scale"),
    (dict(attn_scale=0.5, attn_qk_norm=True), "attn_scale"),
    (dict(attn_qkv_bias="yes"), "attn_qkv_bias"),
    (dict(ff_activation="tanh"), "ff_activation"),
    (dict(ff_swish=True, ff_activation="relu"), "ff_swish and ff_activation"),
    (dict(ff_swish=True, ff_relu_squared=True), "ff_swish and ff_relu_squared"),
    (dict(ff_inner_dim=0), "ff_inner_dim"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(rotary_theta=-1.0, rotary_pos_emb=True), "rotary_theta"),
    (dict(rotary_theta=500.0), "rotary_theta"),
])
def test_bad_values_are_refused_naming_the_keyword(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Decoder(dim=DIM, depth=1, heads=HEADS, **kwargs)


def test_window_applies_to_self_attention_only():
    # An encoder's window is x-transformers': W tokens back and every later one
    # (tests/positional/test_pos_in_attention.py); cross-attention has none.
    with pytest.raises(ValueError, match="cross_attn_max_attend_past"):
        Decoder(dim=DIM, depth=1, heads=HEADS, cross_attend=True, cross_attn_max_attend_past=3)


def test_defaults_are_unchanged():
    # No new keyword: the same parameters as before (no biases on attention, GELU with biases).
    net = Decoder(dim=DIM, depth=1, heads=HEADS)
    attn, ff = net.blocks[0].fn, net.blocks[1].fn
    assert attn.to_qkv.bias is None and attn.to_out.bias is None and attn.kv_heads == HEADS
    assert attn.to_qkv.weight.shape == (3 * HEADS * 64, DIM) and attn.max_attend_past is None
    assert isinstance(ff.proj_in[1], torch.nn.GELU) and ff.proj_in[0].bias is not None
    assert net.blocks[0].pre_norm.eps == 1e-5


@pytest.mark.parametrize("kwargs", [dict(attn_kv_heads=2), dict(cross_attn_one_kv_head=True, attn_kv_heads=3)])
def test_grouped_cross_attention_fused_explicit_and_cached(kwargs):
    from labml_style_nn import XTransformer

    torch.manual_seed(0)
    model = XTransformer(dim=DIM, enc_num_tokens=V, enc_depth=1, enc_heads=HEADS, enc_max_seq_len=32,
                         dec_num_tokens=V, dec_depth=2, dec_heads=HEADS, dec_max_seq_len=32,
                         **{f"dec_{k}": v for k, v in kwargs.items()}).eval()
    cross = [b.fn for b in model.decoder.net.attn_layers.blocks if b.kind == "c"]
    assert cross[0].kv_heads == (1 if "cross_attn_one_kv_head" in kwargs else 2)
    src, tgt = tokens(2, 9), tokens(2, 7, seed=4)
    src_mask = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    with torch.no_grad():
        enc = model.encoder(src, mask=src_mask, return_embeddings=True)
        fused = model.decoder.net(tgt, context=enc, context_mask=src_mask)
        explicit, _ = model.decoder.net(tgt, context=enc, context_mask=src_mask, return_attn=True)
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
        cached = model.generate(src, tgt[:, :2], 6, src_mask=src_mask, temperature=0.0)
        uncached = model.generate(src, tgt[:, :2], 6, src_mask=src_mask, temperature=0.0, cache_kv=False)
    assert torch.equal(cached, uncached)
