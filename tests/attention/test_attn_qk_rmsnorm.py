"""RMSNorm on queries, keys and values (`attn_qk_rmsnorm`, `attn_k_rmsnorm`, `attn_value_rmsnorm`):
the closed form, the bound on the scores, rules and parity."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair, rotary_rows

from labml_style_nn import Decoder
from labml_style_nn.attention.qk_rmsnorm import MultiheadRMSNorm

DIM, H, D = 32, 4, 8


def test_rmsnorm_closed_form_and_bounded_scores():
    norm = MultiheadRMSNorm(H, D)
    with torch.no_grad():
        norm.gain.normal_()
    u = torch.randn(2, H, 5, D)
    ref = u / u.square().mean(-1, keepdim=True).sqrt() * norm.gain
    torch.testing.assert_close(norm(u), ref, atol=1e-5, rtol=1e-5)
    # Gains at one: $|S_{ij}| = |\sqrt d \cos\theta| \le \sqrt d$, whatever the inputs' scale.
    attn = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, attn_qk_rmsnorm=True).blocks[0].fn
    _, scores = attn(torch.randn(1, 6, DIM) * 100, return_scores=True)
    assert D ** 0.5 * 0.5 < scores.abs().max() <= D ** 0.5 * (1 + 1e-5)


def test_k_rmsnorm_leaves_queries_and_value_rmsnorm_bounds_values():
    attn = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, attn_k_rmsnorm=True, attn_kv_heads=2,
                   attn_value_rmsnorm=True).blocks[0].fn
    q = torch.randn(1, H, 3, D)
    assert attn.qk_transform.queries(q) is q and attn.qk_transform.k_norm.gain.shape == (2, 1, D)
    assert attn.value_norm.gain.shape == (2, 1, D)  # one gain per key/value head
    with pytest.raises(ValueError, match="attn_qk_rmsnorm and attn_k_rmsnorm"):
        Decoder(dim=DIM, depth=1, attn_qk_rmsnorm=True, attn_k_rmsnorm=True)
    with pytest.raises(ValueError, match="attn_qk_rmsnorm and attn_qk_norm"):
        Decoder(dim=DIM, depth=1, attn_qk_rmsnorm=True, attn_qk_norm=True)


def copy_gains(ours, theirs, put):
    """x-transformers stores each gain minus one; with rotary our features are in halves, theirs in pairs."""
    rotary = ours.attn_layers.rotary
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind == "f":
            continue
        t = block.fn.qk_transform
        d = block.fn.dim_head
        order = rotary_rows(1, d, rotary.dim) if rotary is not None else torch.arange(d)
        put(t.k_norm.gain, (fn.k_rmsnorm.gamma + 1)[..., order])
        if t.q_norm is not None:
            put(t.q_norm.gain, (fn.q_rmsnorm.gamma + 1)[..., order])
        if block.fn.value_norm is not None:
            put(block.fn.value_norm.gain, fn.value_rmsnorm.gamma + 1)


@pytest.mark.parametrize("kwargs", [
    dict(attn_qk_rmsnorm=True, attn_value_rmsnorm=True, attn_dim_head=D),
    dict(attn_k_rmsnorm=True, rotary_pos_emb=True),  # heads of 64, rotary on 32 features in both libraries
], ids=["qk_and_values", "keys_rotary"])
def test_parity_with_xtransformers(kwargs):
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder",
                              dict(dim=DIM, depth=2, heads=H, **kwargs))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "rmsnorm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    assert_same_logits(ours, theirs, num_tokens=64, grads="rotary_pos_emb" in kwargs, extra=[copy_gains])
