"""x-transformers' FeedForward keywords: `ff_dim_out`, `ff_glu_mult_bias`, `ff_solu`, `ff_custom_activation`,
`ff_softclamp_value`, `ff_glu_softclamp` and its two bounds: closed forms, bounds, refusals, parity."""

import pytest
import torch
from torch import nn
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import Decoder
from labml_style_nn.feedforward.feedforward import FeedForward
from labml_style_nn.feedforward.solu import SoLU

DIM = 32


def _ff(model):
    return [b.fn for b in model.blocks if b.kind == "f"]


def test_solu_is_its_formula():
    solu = SoLU(5)
    h = torch.randn(3, 5)
    torch.testing.assert_close(solu(h), nn.functional.layer_norm(h * h.softmax(-1), (5,)))
    ff = _ff(Decoder(dim=DIM, depth=1, ff_solu=True, ff_glu=True))[0]
    assert isinstance(ff.proj_in.act, SoLU) and ff.proj_in.act.norm.normalized_shape == (4 * DIM,)


def test_custom_activation_is_copied_into_each_layer():
    act = nn.PReLU()
    model = Decoder(dim=DIM, depth=2, ff_custom_activation=act)
    a, b = (ff.proj_in[-1] for ff in _ff(model))
    assert isinstance(a, nn.PReLU) and a is not act and a is not b and a.weight is not b.weight
    x = torch.randn(4, DIM)
    torch.testing.assert_close(a(x), act(x))
    with pytest.raises(ValueError, match="ff_solu and ff_custom_activation"):
        Decoder(dim=DIM, depth=1, ff_solu=True, ff_custom_activation=nn.Tanh())
    with pytest.raises(ValueError, match="ff_custom_activation: expected"):
        Decoder(dim=DIM, depth=1, ff_custom_activation="tanh")


def test_soft_clamps_bound_what_they_clamp():
    x = torch.randn(2, 5, DIM) * 100
    ff = _ff(Decoder(dim=DIM, depth=1, ff_softclamp_value=2.0, ff_activation="identity"))[0]
    assert ff.proj_in(x).abs().max() <= 2.0
    glu = _ff(Decoder(dim=DIM, depth=1, ff_glu=True, ff_swish=True, ff_glu_softclamp=True,
                      ff_glu_gate_softclamp_value=3.0, ff_glu_up_softclamp_value=5.0))[0]
    out = glu.proj_in(x)
    assert out.abs().max() <= 15.0 and out.abs().max() > 5.0  # (-c_g c_u, c_g c_u)
    plain = _ff(Decoder(dim=DIM, depth=1, ff_glu=True, ff_swish=True))[0]
    plain.load_state_dict(glu.state_dict())
    small = torch.randn(2, 5, DIM) * 0.01  # far inside the bounds: nearly the plain SwiGLU
    torch.testing.assert_close(glu.proj_in(small), plain.proj_in(small), atol=1e-4, rtol=1e-2)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(ff_glu=True, ff_softclamp_value=5.0), "ff_softclamp_value and ff_glu"),
    (dict(ff_glu_softclamp=True), "ff_glu_softclamp: only meaningful with ff_glu"),
    (dict(ff_glu=True, ff_glu_softclamp=True, ff_activation="relu"), "ff_glu_softclamp: the clamped gate"),
    (dict(ff_glu=True, ff_glu_up_softclamp_value=9.0), "ff_glu_up_softclamp_value: only meaningful"),
    (dict(ff_glu_mult_bias=True), "ff_glu_mult_bias: only meaningful with ff_glu"),
    (dict(ff_dim_out=16), "ff_dim_out: .*expected 32"),
    (dict(ff_solu=True, ff_relu_squared=True), "ff_solu and ff_relu_squared"),
])
def test_meaningless_combinations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Decoder(dim=DIM, depth=1, **kwargs)


def test_dim_out_of_the_module():
    assert FeedForward(DIM, dim_out=20)(torch.randn(2, 3, DIM)).shape == (2, 3, 20)
    Decoder(dim=DIM, depth=1, ff_dim_out=DIM)


def copy_activation_parameters(ours, theirs, put):
    """The parameters inside x-transformers' activations: SoLU's norm, a custom module's, the GLU multiplier."""
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind != "f":
            continue
        mine, first = block.fn.proj_in, fn.ff[0]
        if hasattr(mine, "proj"):  # a GLU
            mine_act, their_act = mine.act, first.act
            if mine.mult_bias is not None:
                put(mine.mult_bias, first.mult_bias)
        else:
            mine_act, their_act = mine[-1], first[-1]
        if isinstance(mine_act, SoLU):
            put(mine_act.norm.weight, their_act.norm.gamma)
        elif isinstance(their_act, nn.Module):
            for p, q in zip(mine_act.parameters(), their_act.parameters(), strict=True):
                put(p, q)


@pytest.mark.parametrize("kwargs", [
    dict(ff_glu=True, ff_glu_mult_bias=True, ff_solu=True),
    dict(ff_solu=True, ff_softclamp_value=1.5),
    dict(ff_custom_activation=nn.PReLU(init=0.1)),
    dict(ff_glu=True, ff_glu_softclamp=True, ff_glu_gate_softclamp_value=0.5, ff_glu_up_softclamp_value=0.7),
    dict(ff_glu=True, ff_swish=True, ff_glu_softclamp=True),
], ids=["glu_mult_bias_solu", "solu_softclamp", "custom_prelu", "geglu_softclamp", "swiglu_softclamp"])
def test_parity_with_xtransformers(kwargs):
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder", dict(dim=DIM, depth=2, heads=4, **kwargs))
    torch.manual_seed(3)
    with torch.no_grad():  # move the activations' parameters and the multiplier off their initial values
        for name, p in theirs.named_parameters():
            if any(part in name for part in (".ff.0.act.", ".ff.0.1.", ".ff.0.2.")) or name.endswith("mult_bias"):
                p.add_(torch.randn_like(p) * 0.3)
    assert_same_logits(ours, theirs, num_tokens=64, grads="ff_glu_softclamp" in kwargs,
                       extra=[copy_activation_parameters])
