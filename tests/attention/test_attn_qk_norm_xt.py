"""x-transformers' qk-norm (`attn_qk_norm`, `attn_qk_norm_scale`, `attn_qk_norm_groups`, `attn_qk_norm_dim_scale`):
the fixed scale, groups, per-feature scales, the old learned temperature, rules and parity."""

import pytest
import torch
import torch.nn.functional as F
from xt_parity import assert_same_logits, build_pair, rotary_rows

from labml_style_nn import Decoder
from labml_style_nn.attention.qk_norm import l2norm_groups

DIM, H = 32, 4


def test_grouped_scores_are_sums_of_cosines_times_the_scale():
    model = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=8, attn_qk_norm=True, attn_qk_norm_groups=2,
                    attn_qk_norm_scale=3.0)
    attn = model.blocks[0].fn
    x = torch.randn(1, 6, DIM) * 10
    _, scores = attn(x, return_scores=True)
    q, k, _ = (t.unflatten(-1, (H, 8)).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    cos = sum(F.cosine_similarity(q[..., None, s], k[..., None, :, s], dim=-1) for s in (slice(0, 4), slice(4, 8)))
    torch.testing.assert_close(scores, 3.0 * cos, atol=1e-5, rtol=1e-5)
    assert scores.abs().max() <= 3.0 * 2 * (1 + 1e-5)  # bounded by scale x groups
    assert l2norm_groups(torch.tensor([3.0, 4.0, 0.0, 2.0]), 2).tolist()[2:] == [0.0, 1.0]


def test_dim_scale_starts_as_cosine_similarity_and_old_temperature_is_reachable():
    attn = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=16, attn_qk_norm=True,
                   attn_qk_norm_dim_scale=True).blocks[0].fn
    assert attn.scale == pytest.approx(16 ** -0.5)
    assert attn.qk_transform.q_scale.shape == (H, 1, 16)
    _, scores = attn(torch.randn(1, 5, DIM), return_scores=True)
    assert scores.abs().max() <= 1 + 1e-5  # $d^{1/4} d^{1/4} / \sqrt d = 1$
    old = Decoder(dim=DIM, depth=1, heads=H, attn_qk_norm=True, attn_qk_norm_seq_len=64).blocks[0].fn
    assert old.scale == 1.0 and old.qk_transform.temperature is not None


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(attn_qk_norm_scale=5.0), "attn_qk_norm_scale: only meaningful with attn_qk_norm"),
    (dict(attn_qk_norm=True, attn_dim_head=8, attn_qk_norm_groups=4), "attn_qk_norm_groups: .* more than 2"),
    (dict(attn_qk_norm=True, attn_dim_head=8, attn_qk_norm_groups=3), "attn_qk_norm_groups: expected a divisor"),
    (dict(attn_qk_norm=True, attn_qk_norm_dim_scale=True, attn_qk_norm_scale=5.0), "choose one"),
    (dict(attn_qk_norm=True, attn_qk_norm_seq_len=64, attn_qk_norm_scale=5.0), "qk_norm_seq_len and"),
])
def test_meaningless_combinations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Decoder(dim=DIM, depth=1, heads=H, **kwargs)


def copy_dim_scales(ours, theirs, put):
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind != "f":
            put(block.fn.qk_transform.q_scale, fn.qk_norm_q_scale)
            put(block.fn.qk_transform.k_scale, fn.qk_norm_k_scale)


@pytest.mark.parametrize("kwargs", [
    dict(attn_qk_norm=True, rotary_pos_emb=True, attn_qk_norm_scale=7, attn_num_mem_kv=2),
    dict(attn_qk_norm=True, attn_qk_norm_groups=2, attn_dim_head=8),
    dict(attn_qk_norm=True, attn_qk_norm_dim_scale=True),
], ids=["scale_rotary_memory", "groups", "dim_scale"])
def test_parity_with_xtransformers(kwargs):
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder", dict(dim=DIM, depth=2, heads=H, **kwargs))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "qk_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)

    def memory(ours, theirs, put):
        for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
            if block.kind != "f" and block.fn.memory_kv is not None:
                # Persistent keys are normalised and scaled, never rotated; their features follow our rotary order.
                rot, d = ours.attn_layers.rotary.dim, fn.mem_k.shape[-1]
                put(block.fn.memory_kv.keys, fn.mem_k[..., rotary_rows(1, d, rot)])
                put(block.fn.memory_kv.values, fn.mem_v)

    extra = [copy_dim_scales] if "attn_qk_norm_dim_scale" in kwargs else [memory]
    assert_same_logits(ours, theirs, num_tokens=64, grads="rotary_pos_emb" in kwargs, extra=extra)
