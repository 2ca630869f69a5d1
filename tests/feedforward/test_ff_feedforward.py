"""Feed-forward variants: closed forms against the papers' equations, widths and keyword wiring."""

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labml_style_nn import Decoder
from labml_style_nn.feedforward.feedforward import FeedForward
from labml_style_nn.feedforward.glu import GLU


def test_default_is_gelu_mlp():
    torch.manual_seed(0)
    ff = FeedForward(8, mult=4)
    lin1, lin2 = ff.proj_in[0], ff.proj_out
    assert lin1.out_features == 32 and lin2.in_features == 32
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ff(x), lin2(F.gelu(lin1(x))))


def test_geglu_closed_form():
    torch.manual_seed(0)
    ff = FeedForward(8, mult=2, glu=True)
    W = ff.proj_in.proj.weight
    b = ff.proj_in.proj.bias
    assert W.shape == (2 * 16, 8)
    x = torch.randn(2, 3, 8)
    # $\operatorname{GELU}(x W) \odot (x V)$, then $W_2$
    value = x @ W[:16].T + b[:16]
    gate = x @ W[16:].T + b[16:]
    torch.testing.assert_close(ff(x), ff.proj_out(value * F.gelu(gate)))


def test_relu_squared_closed_form():
    torch.manual_seed(0)
    ff = FeedForward(8, relu_squared=True)
    x = torch.randn(2, 3, 8)
    h = ff.proj_in[0](x)
    torch.testing.assert_close(ff(x), ff.proj_out(torch.clamp(h, min=0) ** 2))
    assert (ff.proj_in(x) >= 0).all()


@pytest.mark.parametrize("glu", [False, True])
def test_post_activation_layer_norm_normalises_the_hidden_layer(glu):
    torch.manual_seed(0)
    ff = FeedForward(8, mult=3, glu=glu, post_act_ln=True)
    assert isinstance(ff.post_act_norm, nn.LayerNorm) and ff.post_act_norm.normalized_shape == (24,)
    x = 10 * torch.randn(4, 8)
    h = ff.post_act_norm(ff.proj_in(x))
    torch.testing.assert_close(h.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(ff(x), ff.proj_out(h))


@pytest.mark.parametrize("mult, hidden", [(1, 8), (2.5, 20), (0.5, 4)])
def test_ff_mult_sets_the_hidden_width(mult, hidden):
    dec = Decoder(dim=8, depth=1, heads=2, ff_mult=mult, ff_glu=True)
    assert dec.blocks[1].fn.proj_out.in_features == hidden


@pytest.mark.parametrize("kw, word", [(dict(ff_mult=0), "ff_mult"), (dict(ff_mult=0.01), "ff_mult"),
                                      (dict(ff_glu=True, ff_relu_squared=True), "ff_glu"),
                                      (dict(ff_dropout=1.0), "ff_dropout")])
def test_bad_feed_forward_keywords_are_refused(kw, word):
    with pytest.raises(ValueError, match=word):
        Decoder(dim=8, depth=1, heads=2, **kw)


def test_keywords_reach_every_feed_forward():
    dec = Decoder(dim=8, depth=3, heads=2, ff_glu=True, ff_post_act_ln=True)
    ffs = [b.fn for b in dec.blocks if b.kind == "f"]
    assert len(ffs) == 3
    assert all(isinstance(f.proj_in, GLU) and isinstance(f.post_act_norm, nn.LayerNorm) for f in ffs)


@pytest.mark.parametrize("name", ["feedforward", "glu", "relu_squared"])
def test_docstring_examples(name):
    module = importlib.import_module(f"labml_style_nn.feedforward.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
