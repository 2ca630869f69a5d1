"""The GLU family of Shazeer (2020), the activations of `ff_activation`, and the feed-forward keywords."""

import doctest

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn import Decoder
from labml_style_nn.feedforward import activations, glu
from labml_style_nn.feedforward.feedforward import FeedForward
from labml_style_nn.feedforward.glu import GLU, VARIANTS, GatedLinearUnit

# The paper's gates, written here: $\phi$ of each variant.
PAPER = {"glu": torch.sigmoid, "bilinear": lambda t: t, "reglu": F.relu, "geglu": F.gelu, "swiglu": F.silu}


@pytest.mark.parametrize("module", [activations, glu])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_is_the_papers_formula(variant):
    torch.manual_seed(0)
    unit = GatedLinearUnit(8, 5, activation=VARIANTS[variant], bias=False)
    W_value, W_gate = unit.proj.weight[:5], unit.proj.weight[5:]
    x = torch.randn(3, 8)
    # $\phi(x W) \odot x V$
    torch.testing.assert_close(unit(x), PAPER[variant](x @ W_gate.T) * (x @ W_value.T))


def test_old_name_is_the_same_class():
    assert GLU is GatedLinearUnit


def test_swiglu_from_keywords():
    torch.manual_seed(0)
    net = Decoder(dim=8, depth=1, heads=2, ff_glu=True, ff_swish=True, ff_inner_dim=11, ff_no_bias=True)
    ff = net.blocks[1].fn
    assert ff.proj_in.proj.weight.shape == (22, 8) and ff.proj_in.proj.bias is None and ff.proj_out.bias is None
    x = torch.randn(2, 3, 8)
    W = ff.proj_in.proj.weight
    torch.testing.assert_close(ff(x), ff.proj_out(F.silu(x @ W[11:].T) * (x @ W[:11].T)))


@pytest.mark.parametrize("name,fn", [
    ("gelu", F.gelu), ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh")), ("relu", F.relu),
    ("silu", F.silu), ("sigmoid", torch.sigmoid), ("identity", lambda t: t), ("relu_squared", lambda t: F.relu(t) ** 2),
])
def test_ff_activation_is_the_named_function(name, fn):
    torch.manual_seed(0)
    ff = Decoder(dim=8, depth=1, heads=2, ff_activation=name).blocks[1].fn
    x = torch.randn(2, 3, 8)
    lin = ff.proj_in[0]
    torch.testing.assert_close(ff(x), ff.proj_out(fn(lin(x))))


def test_gelu_tanh_is_the_papers_approximation():
    x = torch.linspace(-4, 4, 101)
    tanh_form = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(activations.GELUTanh()(x), tanh_form)
    assert 1e-5 < (F.gelu(x) - tanh_form).abs().max() < 1e-3


def test_ff_swish_without_glu_is_a_silu_mlp():
    ff = Decoder(dim=8, depth=1, heads=2, ff_swish=True).blocks[1].fn
    assert isinstance(ff.proj_in[1], torch.nn.SiLU)


def test_inner_dim_overrides_mult():
    ff = FeedForward(8, mult=4, inner_dim=13)
    assert ff.proj_in[0].out_features == 13 and ff.proj_out.in_features == 13
