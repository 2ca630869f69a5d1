"""The attention module itself: fused == explicit, masks, fully masked rows, mask sizes."""

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn.attention.attention import Attention, SharedAttentionInputs
from labml_style_nn.positional.alibi import AlibiPositionalBias
from labml_style_nn.positional.rotary import RotaryEmbedding

B, N, DIM, H, D = 2, 7, 32, 4, 8


def _pair(causal=False, cross=False, **kw):
    attn = Attention(DIM, heads=H, dim_head=D, causal=causal, dim_context=DIM if cross else None, **kw).eval()
    return attn


def _run(attn, x, explicit, **kw):
    out, _ = attn(x, return_scores=explicit, **kw)
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("biased", [False, True])
def test_fused_equals_explicit_self_attention(causal, masked, biased):
    attn = _pair(causal=causal)
    x = torch.randn(B, N, DIM)
    mask = torch.rand(B, N) > 0.3 if masked else None
    pos = torch.arange(N)
    shared = SharedAttentionInputs(
        rotary=RotaryEmbedding(D)(pos),
        attn_bias=AlibiPositionalBias(H)(pos, pos) if biased else None)
    fused = _run(attn, x, False, mask=mask, shared=shared)
    explicit = _run(attn, x, True, mask=mask, shared=shared)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_equals_explicit_cross_attention(masked):
    attn = _pair(cross=True)
    x, ctx = torch.randn(B, N, DIM), torch.randn(B, 5, DIM)
    cmask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]]) if masked else None
    fused = _run(attn, x, False, context=ctx, context_mask=cmask)
    explicit = _run(attn, x, True, context=ctx, context_mask=cmask)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_explicit_path_matches_a_reference_written_here():
    attn = _pair(causal=True)
    x = torch.randn(B, N, DIM)
    q, k, v = attn.to_qkv(x).chunk(3, dim=-1)
    q, k, v = (t.view(B, N, H, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / D ** 0.5
    scores = scores.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, H * D)
    ref = attn.to_out(ref)
    torch.testing.assert_close(_run(attn, x, True), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_run(attn, x, False), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_row_is_zero_and_finite(explicit, causal):
    attn = _pair(causal=causal)
    x = torch.randn(B, N, DIM, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0] = False  # every key of sequence 0 is padding
    out, _ = attn(x, mask=mask, return_scores=explicit)
    assert torch.isfinite(out).all()
    # A query that sees no key aggregates nothing: its output is the projection of zero.
    torch.testing.assert_close(out[0], torch.zeros_like(out[0]))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_causal_rows_fully_masked_only_by_padding_at_the_start():
    # Left padding: the first query of row 0 sees only padded keys (itself), later ones see real keys.
    attn = _pair(causal=True)
    x = torch.randn(B, N, DIM)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, :3] = False
    for explicit in (False, True):
        out, _ = attn(x, mask=mask, return_scores=explicit)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[0, :3], torch.zeros(3, DIM))
        assert out[0, 3:].abs().sum() > 0


def test_padding_and_causality_never_build_a_heads_axis(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(None if attn_mask is None else tuple(attn_mask.shape))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = torch.randn(B, N, DIM)
    mask = torch.rand(B, N) > 0.3
    _pair(causal=True)(x, mask=mask)
    _pair(causal=False)(x, mask=mask)
    _pair(causal=True)(x)
    assert seen[0] == (B, 1, N, N)   # causal & padding: no heads axis
    assert seen[1] == (B, 1, 1, N)   # padding only: one row per sequence
    assert seen[2] is None           # plain causal: the kernel builds the triangle


def test_memory_offset_lets_queries_see_all_earlier_keys():
    # With m earlier tokens (an XL memory), query i sees keys j <= i + m.
    attn = _pair(causal=True)
    mem, x = torch.randn(1, 3, DIM), torch.randn(1, 4, DIM)
    joint, _ = attn(torch.cat((mem, x), 1))
    with_mem, _ = attn(x, mem=mem)
    torch.testing.assert_close(with_mem, joint[:, 3:], atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    attn = Attention(DIM, heads=H, dim_head=D, dropout=0.5)
    x = torch.randn(B, N, DIM)
    attn.eval()
    a, _ = attn(x)
    b, _ = attn(x)
    torch.testing.assert_close(a, b)
    attn.train()
    c, _ = attn(x)
    assert not torch.allclose(a, c)


def test_masks_are_built_once_per_forward_not_per_layer(monkeypatch):
    from labml_style_nn import Decoder

    calls = {"visibility": 0, "fused_mask": 0}
    for name in calls:
        real = getattr(Attention, f"_{name}")

        def counting(self, *args, _real=real, _name=name):
            calls[_name] += 1
            return _real(self, *args)
        monkeypatch.setattr(Attention, f"_{name}", counting)
    stack = Decoder(dim=DIM, depth=4, heads=H, attn_dim_head=D, rel_pos_bias=True, attn_num_mem_kv=2).eval()
    x = torch.randn(B, N, DIM)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, :2] = False
    out = stack(x, mask=mask)
    assert calls == {"visibility": 1, "fused_mask": 1}
    # The shared masks change nothing: layer by layer, each attention building its own gives the same.
    stack.options.gradient_checkpointing = True
    stack.train()
    for m in stack.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    torch.testing.assert_close(stack(x, mask=mask), out, atol=1e-5, rtol=1e-5)
    assert calls["visibility"] == 1 + 4
