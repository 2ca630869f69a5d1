"""Residual blocks: where the norms go, ReZero's identity at initialisation, gated and scaled sums."""

import pytest
import torch
from torch import nn

from labml_style_nn import Decoder, Encoder
from labml_style_nn.residual.gated_residual import GatedResidual
from labml_style_nn.residual.residual import Block
from labml_style_nn.residual.rezero import ReZero
from labml_style_nn.residual.scale_residual import ScaledResidual


def ff_block(**kw):
    torch.manual_seed(0)
    return Encoder(dim=8, depth=1, heads=2, **kw).blocks[1]


def test_pre_post_and_sandwich_norm_formulas():
    x = torch.randn(2, 4, 8)
    b = ff_block()
    torch.testing.assert_close(b.join(b.fn(b.branch_input(x)), x), x + b.fn(b.pre_norm(x)))
    b = ff_block(pre_norm=False)
    assert b.pre_norm is None
    torch.testing.assert_close(b.join(b.fn(b.branch_input(x)), x), b.post_norm(x + b.fn(x)))
    b = ff_block(sandwich_norm=True)
    torch.testing.assert_close(b.join(b.fn(b.branch_input(x)), x), x + b.branch_norm(b.fn(b.pre_norm(x))))


def test_final_norm_only_for_pre_norm():
    assert isinstance(Encoder(dim=8, depth=1, heads=2).final_norm, nn.LayerNorm)
    assert isinstance(Encoder(dim=8, depth=1, heads=2, pre_norm=False).final_norm, nn.Identity)
    assert isinstance(Encoder(dim=8, depth=1, heads=2, use_rezero=True).final_norm, nn.Identity)


@pytest.mark.parametrize("kw", [dict(use_rezero=True, use_scalenorm=True), dict(use_rezero=True, sandwich_norm=True),
                                dict(sandwich_norm=True, pre_norm=False), dict(use_rmsnorm=True, use_scalenorm=True)])
def test_meaningless_norm_combinations_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        Encoder(dim=8, depth=1, heads=2, **kw)


@pytest.mark.parametrize("cls", [Encoder, Decoder])
@pytest.mark.parametrize("kw", [{}, dict(macaron=True), dict(shift_tokens=1, ff_glu=True), dict(cross_attend=True)])
def test_rezero_stack_is_the_identity_at_initialisation(cls, kw):
    torch.manual_seed(0)
    model = cls(dim=16, depth=4, heads=2, use_rezero=True, **kw)
    x = torch.randn(2, 7, 16)
    context = torch.randn(2, 3, 16) if kw.get("cross_attend") else None
    assert all(isinstance(b.branch_scale, ReZero) and b.pre_norm is None for b in model.blocks)
    torch.testing.assert_close(model(x, context=context), x, rtol=0, atol=0)
    # ... and stops being it once $\alpha$ moves
    with torch.no_grad():
        model.blocks[0].branch_scale.alpha.fill_(0.1)
    assert not torch.allclose(model(x, context=context), x)


def test_rezero_alpha_learns_from_zero():
    model = Decoder(dim=16, depth=2, heads=2, use_rezero=True)
    x = torch.randn(2, 5, 16)
    (model(x) * torch.randn(2, 5, 16)).sum().backward()
    assert all(b.branch_scale.alpha.grad.abs() > 0 for b in model.blocks)


def test_scaled_residual_is_lambda_x_plus_branch():
    torch.manual_seed(0)
    r = ScaledResidual(4)
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(r(y, x), x + y)  # $\lambda_0 = 1$
    with torch.no_grad():
        r.scale.copy_(torch.tensor([1.0, 2.0, 0.0, -1.0]))
    torch.testing.assert_close(r(y, x), x * r.scale + y)


def gru_reference(gate, y, x):
    """GTrXL's gate written out, with GRUCell's weight layout (reset, update, new)."""
    W, U, bw, bu = gate.gru.weight_ih, gate.gru.weight_hh, gate.gru.bias_ih, gate.gru.bias_hh
    Wr, Wz, Wn = W.chunk(3)
    Ur, Uz, Un = U.chunk(3)
    br, bz, bn = bw.chunk(3)
    cr, cz, cn = bu.chunk(3)
    r = torch.sigmoid(y @ Wr.T + br + x @ Ur.T + cr)
    keep = torch.sigmoid(y @ Wz.T + bz + x @ Uz.T + cz)  # $1 - z$ in the paper's notation
    h = torch.tanh(y @ Wn.T + bn + r * (x @ Un.T + cn))
    return keep * x + (1 - keep) * h


def test_gated_residual_matches_the_gru_equations_and_starts_near_identity():
    torch.manual_seed(0)
    gate = GatedResidual(8)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(gate(y, x), gru_reference(gate, y, x), atol=1e-5, rtol=1e-5)
    # the gate bias starts the update small: closer to the residual than an unbiased gate
    plain = GatedResidual(8, gate_bias=0.0)
    plain.load_state_dict({k: v for k, v in gate.state_dict().items()})
    with torch.no_grad():
        plain.gru.bias_ih[8:16] -= 2.0
    assert (gate(y, x) - x).abs().mean() < 0.6 * (plain(y, x) - x).abs().mean()


def test_gate_and_scale_are_used_by_the_stack():
    assert all(isinstance(b.residual, GatedResidual) for b in Decoder(dim=8, depth=2, heads=2, gate_residual=True).blocks)
    assert all(isinstance(b.residual, ScaledResidual) for b in Decoder(dim=8, depth=2, heads=2, scale_residual=True).blocks)


def test_block_step_scales_only_the_branch():
    fn = nn.Linear(4, 4)
    b = Block("f", fn, step=0.5)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(b.join(fn(x), x), x + 0.5 * fn(x))


def _refused(**kw):
    try:
        Decoder(dim=8, depth=1, heads=2, **kw)
    except ValueError as e:
        return next(iter(kw)) in str(e)
    return False


def test_gate_and_scale_residual_together_are_refused():
    assert _refused(gate_residual=True, scale_residual=True)


def test_rezero_and_gate_residual_together_are_refused():
    assert _refused(use_rezero=True, gate_residual=True)
