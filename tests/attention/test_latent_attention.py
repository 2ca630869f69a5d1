"""Multi-head latent attention: x-transformers' latent keywords with its weights, the latent cache, the rules."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair, rotary_rows

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.attention.extension_points import SharedAttentionInputs
from labml_style_nn.attention.latent_attention import LatentQKV
from labml_style_nn.generation.attention_sinks import AttentionSinksCache
from labml_style_nn.generation.kv_cache import LayersCache

LATENT_Q = dict(attn_use_latent_q=True, attn_dim_latent_q=12)
LATENT_KV = dict(attn_use_latent_kv=True, attn_dim_latent_kv=10)
# x-transformers' spellings only; dim_head 8 with 4 rotated features (x-transformers' default is dim_head // 2)
CASES = {
    "q": ("Decoder", dict(rotary_pos_emb=True, **LATENT_Q)),
    "kv-rotary-all-heads": ("Decoder", dict(rotary_pos_emb=True, **LATENT_KV)),
    "q-kv-subheads": ("Decoder", dict(rotary_pos_emb=True, attn_latent_rope_subheads=2, **LATENT_Q, **LATENT_KV)),
    "kv-grouped": ("Decoder", dict(rotary_pos_emb=True, attn_kv_heads=2, **LATENT_KV)),
    "kv-subheads-encoder": ("Encoder", dict(attn_latent_rope_subheads=1, **LATENT_KV)),
}


def copy_latent(ours, theirs, put):
    """x-transformers' `to_latent_q`, `to_q`, `to_latent_kv`, `to_rotateable_k`, `to_k`, `to_v` into `LatentQKV`."""
    rot = ours.attn_layers.rotary.dim if ours.attn_layers.rotary is not None else 0

    def rows(w, heads):  # their interleaved rotary pairs to our halves; a no-op without rotary
        return w[rotary_rows(heads, w.shape[0] // heads, rot)] if rot else w

    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        m = getattr(block.fn, "latent_qkv", None)
        if m is None:
            continue
        if m.to_latent_q is not None:
            put(m.to_latent_q.weight, fn.to_latent_q.weight)
        q, out = rows(fn.to_q.weight, m.heads), fn.to_out.weight
        if m.kv_heads < m.heads:
            # Their query head $m g + a$ reads key head $a$ (`(r g)`), ours $a r + m$ (`(g r)`): reorder the heads.
            g, r = m.kv_heads, m.heads // m.kv_heads
            order = torch.tensor([(i % r) * g + i // r for i in range(m.heads)])
            q = q.view(m.heads, -1, q.shape[-1])[order].flatten(0, 1)
            out = out.view(out.shape[0], m.heads, -1)[:, order].flatten(1)
        put(m.to_q.weight, q)
        put(block.fn.to_out.weight, out)
        k_heads = m.latent_key_heads
        if m.to_kv is not None:
            put(m.to_kv.weight, torch.cat([rows(fn.to_k.weight, k_heads), fn.to_v.weight]))
            continue
        down = [fn.to_latent_kv.weight]
        if m.rope_subheads:
            down.append(rows(fn.to_rotateable_k.weight, m.rope_subheads))
        put(m.to_latent_kv.weight, torch.cat(down))
        put(m.up_kv.weight, torch.cat([rows(fn.to_k.weight, k_heads), fn.to_v.weight]))


@pytest.mark.parametrize("name", CASES)
def test_logits_equal_xtransformers_with_its_weights(name):
    stack, kwargs = CASES[name]
    ours, theirs = build_pair(dict(num_tokens=40, max_seq_len=16), stack,
                              dict(dim=32, depth=2, heads=4, attn_dim_head=8, rotary_emb_dim=4, **kwargs)
                              if kwargs.get("rotary_pos_emb") else dict(dim=32, depth=2, heads=4, attn_dim_head=8,
                                                                       **kwargs))
    assert_same_logits(ours, theirs, num_tokens=40, extra=[copy_latent], grads=name == "q-kv-subheads")


@torch.no_grad()
def test_the_cache_holds_the_latent_not_the_heads():
    # h = 4 heads of d = 8: a plain cache holds 2 h d = 64 numbers per token and layer.  The latent
    # cache holds d_c = 10 (all heads rotated), d_c + s d = 26 (s = 2 decoupled heads), or
    # d_c + d_R = 14 (DeepSeek's one shared rotated key of d_R = 4).
    for extra, width in ((dict(), 10), (dict(attn_latent_rope_subheads=2), 26), (dict(attn_latent_rope_dim=4), 14)):
        torch.manual_seed(0)
        net = TransformerWrapper(num_tokens=40, max_seq_len=16, attn_layers=Decoder(
            dim=32, depth=2, heads=4, attn_dim_head=8, rotary_pos_emb=True, **LATENT_KV, **extra)).eval()
        x = torch.randint(0, 40, (2, 9))
        cache = LayersCache(net.attn_layers, 2, 9)
        steps = torch.cat([net(x[:, :5], cache=cache)] + [net(x[:, t:t + 1], cache=cache) for t in range(5, 9)], 1)
        torch.testing.assert_close(steps, net(x), atol=1e-5, rtol=1e-5)
        for block in cache.blocks:
            if block.attn is not None:
                c, k_r = block.attn.k, block.attn.v
                assert c.shape == (2, 1, 9, 10)
                assert c[0, 0, 0].numel() + k_r[0, :, 0].numel() == width


def test_latent_projection_shapes_and_parameter_count():
    # D = 64, h = 4 heads of d = 8, d'_c = 12, d_c = 10, DeepSeek's d_R = 4.
    m = LatentQKV(64, heads=4, dim_head=8, dim_latent_q=12, dim_latent_kv=10, rope_dim=4, latent_norm=True)
    assert (m.to_latent_kv.out_features, m.up_kv.out_features, m.to_q.out_features) == (10 + 4, 4 * 8 * 2, 4 * 12)
    x = torch.randn(2, 5, 64)
    rotary = torch.stack((torch.ones(5, 4), torch.zeros(5, 4)))  # angle 0: no rotation
    q, k, v, offset = m(x, x, SharedAttentionInputs(rotary=rotary), None, False)
    assert q.shape == (2, 4, 5, 12) and k.shape == (2, 4, 5, 12) and v.shape == (2, 4, 5, 8) and offset == 0
    # The decoupled key is one key shared by all heads: the last d_R features are equal across heads.
    assert torch.equal(k[:, 0, :, 8:], k[:, 3, :, 8:])


@pytest.mark.parametrize("kwargs", [LATENT_Q, LATENT_KV, dict(attn_latent_rope_subheads=1, **LATENT_KV),
                                    dict(attn_latent_rope_dim=4, **LATENT_KV),
                                    dict(attn_latent_norm=True, **LATENT_Q, **LATENT_KV),
                                    dict(attn_latent_value_dim_head=6, **LATENT_KV)],
                         ids=lambda k: ",".join(k))
def test_each_keyword_changes_the_output(kwargs):
    x = torch.randint(0, 40, (2, 7))

    def out(**kw):
        torch.manual_seed(0)
        net = TransformerWrapper(num_tokens=40, max_seq_len=16, attn_layers=Decoder(
            dim=32, depth=1, heads=4, attn_dim_head=8, rotary_pos_emb=True, **kw)).eval()
        with torch.no_grad():  # norm gains away from 1, so that the latent norms matter
            for name, p in net.named_parameters():
                if "norm" in name:
                    p.normal_(1.0, 0.3)
        return net(x)

    base = {k: v for k, v in kwargs.items() if k in ("attn_use_latent_kv", "attn_dim_latent_kv")} \
        if set(kwargs) - set(LATENT_KV) - set(LATENT_Q) else {}
    if kwargs.get("attn_latent_norm"):
        base = dict(**LATENT_Q, **LATENT_KV)
    assert out(**kwargs).shape == out(**base).shape
    assert (out(**kwargs) - out(**base)).abs().max() > 1e-3


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(attn_use_latent_q=True), "attn_use_latent_q needs attn_dim_latent_q"),
    (dict(attn_use_latent_kv=True), "attn_use_latent_kv needs attn_dim_latent_kv"),
    (dict(attn_dim_latent_kv=8), "attn_dim_latent_kv: only meaningful with attn_use_latent_kv"),
    (dict(attn_latent_rope_subheads=1, **LATENT_Q), "attn_latent_rope_subheads: only meaningful"),
    (dict(attn_latent_rope_subheads=1, attn_latent_rope_dim=4, **LATENT_KV), "choose one"),
    (dict(attn_latent_rope_subheads=5, **LATENT_KV), "at most heads"),
    (dict(attn_latent_rope_subheads=1, attn_kv_heads=2, **LATENT_KV), "attn_kv_heads"),
    (dict(attn_collab_heads=True, **LATENT_KV), "attn_collab_heads"),
    (dict(attn_latent_rope_dim=4, attn_num_mem_kv=2, **LATENT_KV), "attn_num_mem_kv"),
    (dict(attn_latent_rope_dim=4, rotary_pos_emb=True, rotary_emb_dim=6, **LATENT_KV), "rotary_emb_dim"),
    (dict(attn_dim_latent_q=0, attn_use_latent_q=True), "attn_dim_latent_q"),
])
def test_meaningless_combinations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Decoder(dim=32, depth=1, heads=4, attn_dim_head=8, **kwargs)


def test_attention_sinks_refuse_a_latent_cache():
    dec = Decoder(dim=32, depth=1, heads=4, attn_dim_head=8, rotary_pos_emb=True, **LATENT_KV)
    with pytest.raises(ValueError, match="attn_use_latent_kv"):
        AttentionSinksCache(dec, 1, sinks=2, cache_len=8)
