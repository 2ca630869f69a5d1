"""ScaleNorm and RMSNorm: closed forms, invariances, dtype handling and use by the stack."""

import doctest
import importlib

import pytest
import torch

from labml_style_nn import Decoder
from labml_style_nn.norms import rms_norm as rms_norm_module
from labml_style_nn.norms.rms_norm import RMSNorm, rms_norm
from labml_style_nn.norms.scale_norm import ScaleNorm


def test_scale_norm_closed_form():
    x = torch.randn(3, 5, 16)
    n = ScaleNorm(16)
    assert n.g.shape == () and torch.isclose(n.g, torch.tensor(4.0))  # $g_0 = \sqrt D$
    torch.testing.assert_close(n(x), 4.0 * x / x.norm(dim=-1, keepdim=True))
    assert torch.allclose(n(x).norm(dim=-1), torch.tensor(4.0))


def test_rms_norm_closed_form():
    x = torch.randn(3, 5, 16)
    n = RMSNorm(16)
    with torch.no_grad():
        n.gamma.copy_(torch.linspace(0.5, 2, 16))
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(n(x), x / rms * n.gamma)


@pytest.mark.parametrize("norm", [ScaleNorm(8), RMSNorm(8)])
def test_rescaling_invariant_but_not_recentring(norm):
    x = torch.randn(4, 8)
    torch.testing.assert_close(norm(3.7 * x), norm(x), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(norm(x + 1.0), norm(x), atol=1e-3)  # no mean subtraction


@pytest.mark.parametrize("norm", [ScaleNorm(8), RMSNorm(8)])
def test_zero_and_half_precision_inputs_stay_finite(norm):
    assert torch.isfinite(norm(torch.zeros(2, 8))).all()
    big = torch.full((2, 8), 60000.0, dtype=torch.float16)  # squares overflow in float16
    out = norm(big)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


@pytest.mark.parametrize("kw, cls, attr", [(dict(use_scalenorm=True), ScaleNorm, "g"),
                                           (dict(use_rmsnorm=True), RMSNorm, "gamma")])
def test_stack_uses_the_norm_everywhere(kw, cls, attr):
    dec = Decoder(dim=8, depth=2, heads=2, **kw)
    assert all(isinstance(b.pre_norm, cls) for b in dec.blocks) and isinstance(dec.final_norm, cls)
    post = Decoder(dim=8, depth=2, heads=2, pre_norm=False, **kw)
    assert all(isinstance(b.post_norm, cls) for b in post.blocks)


@pytest.mark.parametrize("name", ["scale_norm", "rms_norm"])
def test_docstring_examples(name):
    module = importlib.import_module(f"labml_style_nn.norms.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("dim", [16, 40, 256])
def test_rms_norm_fused_float32_path_is_bit_for_bit_the_written_one(dim):
    # float32 runs `rms_norm`'s few operators; it must equal the explicit lines (Hugging Face's
    # formula) and `F.rms_norm` exactly, so that converted models keep their greedy tokens.
    torch.manual_seed(dim)
    n = RMSNorm(dim)
    with torch.no_grad():
        n.gamma.normal_()
    for scale in (1e-3, 1.0, 30.0):
        x = torch.randn(3, 7, dim) * scale
        xf = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + n.eps)
        assert torch.equal(n(x), xf * n.gamma)
        assert torch.equal(n(x), torch.nn.functional.rms_norm(x, (dim,), n.gamma, n.eps))
        with torch.inference_mode():  # the in-place branch of decoding
            assert torch.equal(n(x), xf * n.gamma)


def test_rms_norm_function_gradients_and_constants_made_without_autograd():
    # The in-place steps must leave autograd correct (float64 gradcheck, first and second order) ...
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g: rms_norm(x, g, 1e-3), (x, gamma))
    assert torch.autograd.gradgradcheck(lambda x, g: rms_norm(x, g, 1e-3), (x, gamma))
    # ... also when its constant tensors were first made under `inference_mode` (decoding, then training)
    rms_norm_module._CONSTANTS.clear()
    n = RMSNorm(12)
    with torch.inference_mode():
        n(torch.randn(1, 12))
    x = torch.randn(4, 12, requires_grad=True)
    n(x).pow(2).sum().backward()
    assert x.grad is not None and n.gamma.grad is not None and n.gamma.grad.abs().sum() > 0
    # and a closed form without a gain: every row has root mean square 1 (up to epsilon)
    y = rms_norm(torch.randn(5, 16) * 7, None, 0.0)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(5))


def test_rms_norm_traces_with_the_plain_lines():
    # A trace would record the kept constant tensors as values of its own: the plain lines run there.
    n = RMSNorm(8)
    with torch.no_grad():
        n.gamma.normal_()
    x = torch.randn(2, 3, 8)
    traced = torch.jit.trace(n, x)
    assert torch.equal(traced(x), n(x)) and torch.equal(traced(2 * x[:1]), n(2 * x[:1]))
