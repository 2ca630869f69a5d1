"""Every attention feature in every stack: causality, padding, context padding, finite gradients."""

import pytest
import torch
from attn_features import DIM, FEATURES, NEEDS_CROSS, feature_params, make_stack, run

from labml_style_nn.models.xtransformer import XTransformer

ALL = sorted(FEATURES)
KINDS = ["encoder", "decoder", "cross_decoder", "cross_attender"]


def _skip_if_meaningless(kind, feature):
    if feature in NEEDS_CROSS and kind in ("encoder", "decoder"):
        pytest.skip("cross_residual_attn needs cross-attention layers (refusal tested elsewhere)")


def _context(b=2, j=5):
    context = torch.randn(b, j, DIM)
    context_mask = torch.ones(b, j, dtype=torch.bool)
    context_mask[0, 3:] = False
    return context, context_mask


@pytest.mark.parametrize("kind", ["decoder", "cross_decoder"])
@pytest.mark.parametrize("feature", ALL)
def test_decoder_stays_causal(feature, kind):
    _skip_if_meaningless(kind, feature)
    model = make_stack(kind, feature)
    extra = dict(zip(("context", "context_mask"), _context(), strict=True)) if kind == "cross_decoder" else {}
    x = torch.randn(2, 9, DIM)
    x_future = x.clone()
    x_future[:, 5:] = torch.randn(2, 4, DIM)
    out = run(model, feature, x, **extra)
    out_future = run(model, feature, x_future, **extra)
    torch.testing.assert_close(out[:, :5], out_future[:, :5], atol=1e-5, rtol=1e-5)
    # The future did change something, so the comparison above could have failed.
    assert (out[:, 5:] - out_future[:, 5:]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["encoder", "decoder", "cross_decoder"])
@pytest.mark.parametrize("feature", ALL)
def test_padded_tokens_change_nothing(feature, kind):
    _skip_if_meaningless(kind, feature)
    model = make_stack(kind, feature)
    extra = dict(zip(("context", "context_mask"), _context(), strict=True)) if kind == "cross_decoder" else {}
    x = torch.randn(2, 8, DIM)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, :2] = False  # padding on the left too (a decoder's first real token sees only itself)
    x_changed = torch.where(mask[..., None], x, torch.randn_like(x) * 3)
    out = run(model, feature, x, mask=mask, **extra)
    out_changed = run(model, feature, x_changed, mask=mask, **extra)
    torch.testing.assert_close(out[mask], out_changed[mask], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["cross_decoder", "cross_attender"])
@pytest.mark.parametrize("feature", ALL)
def test_padded_context_changes_nothing(feature, kind):
    model = make_stack(kind, feature)
    x = torch.randn(2, 6, DIM)
    context, context_mask = _context()
    context_changed = torch.where(context_mask[..., None], context, torch.randn_like(context) * 3)
    out = run(model, feature, x, context=context, context_mask=context_mask)
    out_changed = run(model, feature, x, context=context_changed, context_mask=context_mask)
    torch.testing.assert_close(out, out_changed, atol=1e-5, rtol=1e-5)
    # A real context token does matter.
    context_real = context.clone()
    context_real[0, 0] += 1.0
    assert (run(model, feature, x, context=context_real, context_mask=context_mask) - out).abs().max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature", ALL)
def test_forward_backward_finite_and_gradients_reach_the_feature(feature, kind):
    _skip_if_meaningless(kind, feature)
    model = make_stack(kind, feature)
    x = torch.randn(2, 7, DIM)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    extra = dict(zip(("context", "context_mask"), _context(), strict=True)) if kind.startswith("cross") else {}
    out = run(model, feature, x, mask=mask, **extra)
    assert out.shape == x.shape and torch.isfinite(out).all()
    (out[mask] ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, p in feature_params(model, feature).items():
        assert p.grad.abs().sum() > 0, f"{feature}: no gradient reaches {name}"


def _prefixed(prefix, feature):
    return {prefix + k: v for k, v in FEATURES[feature][0].items()}


@pytest.mark.parametrize("feature", ALL)
def test_xtransformer_with_feature(feature):
    """Encoder and decoder both get the feature (`enc_*`, `dec_*`); padded source tokens change nothing."""
    enc_kw = {} if feature in NEEDS_CROSS else _prefixed("enc_", feature)
    model = XTransformer(dim=DIM, enc_num_tokens=30, enc_depth=2, enc_heads=4, enc_max_seq_len=16,
                         dec_num_tokens=30, dec_depth=2, dec_heads=4, dec_max_seq_len=16,
                         enc_attn_dim_head=8, dec_attn_dim_head=8, **enc_kw, **_prefixed("dec_", feature))
    src, tgt = torch.randint(1, 30, (2, 8)), torch.randint(1, 30, (2, 7))
    src_mask = torch.ones(2, 8, dtype=torch.bool)
    src_mask[0, 5:] = False
    src_changed = torch.where(src_mask, src, torch.randint(1, 30, src.shape))
    loss = run(model, feature, src, tgt, src_mask=src_mask)
    loss_changed = run(model, feature, src_changed, src_mask=src_mask, tgt=tgt)
    torch.testing.assert_close(loss, loss_changed, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    for name, p in feature_params(model, feature).items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{feature}: no gradient reaches {name}"
