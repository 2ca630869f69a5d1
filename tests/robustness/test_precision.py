"""Mixed precision: every seed feature stays finite under autocast and with half-precision weights.

Softmax and the norms run in float32 inside the library (`attention.softmax`, `norms/`), so bf16
and fp16 inputs must give finite outputs and gradients, masks included.  On the CPU we test
`torch.autocast` with bf16 and weights cast to bf16 and fp16; the CUDA cases run only where a GPU is
present.
"""

import pytest
import torch
from robust_features import SEED_FEATURES, make_stack, padded_batch

KINDS = ["encoder", "decoder"]


def assert_finite_fwd_bwd(model, x, mask, device_type=None, dtype=None):
    """Forward and backward; returns the output so callers can check its dtype."""
    if device_type is not None:
        with torch.autocast(device_type=device_type, dtype=dtype):
            out = model(x, mask=mask)
    else:
        out = model(x, mask=mask)
    # Padded positions of an encoder are free to hold anything finite; check every position.
    assert torch.isfinite(out.float()).all(), "non-finite output"
    out.float().square().mean().backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"
    assert any(p.grad is not None for p in model.parameters())
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature", sorted(SEED_FEATURES))
def test_autocast_bf16_cpu(feature, kind):
    model = make_stack(kind, **SEED_FEATURES[feature])
    x, mask = padded_batch()
    out = assert_finite_fwd_bwd(model, x, mask, "cpu", torch.bfloat16)
    # Autocast really ran the matrix multiplies in bf16 (or the norm at the end cast back up).
    assert out.dtype in (torch.bfloat16, torch.float32)


def _cpu_supports(dtype) -> bool:
    try:
        a = torch.randn(4, 8, dtype=dtype, requires_grad=True)
        torch.nn.functional.layer_norm(a @ a.t(), (4,)).softmax(-1).sum().backward()
        return True
    except RuntimeError:
        return False


HALF_DTYPES = [pytest.param(torch.bfloat16, id="bf16"),
               pytest.param(torch.float16, id="fp16", marks=pytest.mark.skipif(
                   not _cpu_supports(torch.float16), reason="this CPU build has no fp16 kernels"))]


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature", sorted(SEED_FEATURES))
def test_half_weights_cpu(feature, kind, dtype):
    model = make_stack(kind, **SEED_FEATURES[feature]).to(dtype)
    x, mask = padded_batch(dtype=dtype)
    out = assert_finite_fwd_bwd(model, x, mask)
    assert out.dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature", sorted(SEED_FEATURES))
def test_autocast_cuda(feature, kind, dtype):
    model = make_stack(kind, **SEED_FEATURES[feature]).cuda()
    x, mask = padded_batch()
    assert_finite_fwd_bwd(model, x.cuda(), mask.cuda(), "cuda", dtype)


def test_fully_padded_row_stays_finite_in_bf16():
    """A sequence whose every token is padding attends to nothing: zeros, not NaN, in bf16."""
    model = make_stack("encoder").to(torch.bfloat16)
    x, mask = padded_batch(dtype=torch.bfloat16)
    mask[1] = False
    out = model(x, mask=mask)
    assert torch.isfinite(out.float()).all()
