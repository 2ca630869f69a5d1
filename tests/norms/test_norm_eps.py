"""`norm_eps`: every norm of the stack takes it, with epsilon inside the square root."""

import pytest
import torch

from labml_style_nn import Decoder
from labml_style_nn.norms import RMSNorm


def test_rms_norm_epsilon_is_inside_the_square_root():
    x = torch.tensor([[3.0, 4.0]])
    y = RMSNorm(2, eps=0.5)(x)
    torch.testing.assert_close(y, x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 0.5))


@pytest.mark.parametrize("kw,attr", [({}, "eps"), ({"use_rmsnorm": True}, "eps"), ({"use_scalenorm": True}, "eps")])
def test_every_norm_of_the_stack_takes_norm_eps(kw, attr):
    net = Decoder(dim=8, depth=2, heads=2, norm_eps=0.25, **kw)
    norms = [b.pre_norm for b in net.blocks] + [net.final_norm]
    assert all(getattr(n, attr) == 0.25 for n in norms)


def test_norm_eps_changes_the_output_and_none_keeps_each_default():
    torch.manual_seed(0)
    a = Decoder(dim=8, depth=1, heads=2, use_rmsnorm=True)
    b = Decoder(dim=8, depth=1, heads=2, use_rmsnorm=True, norm_eps=1.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 8) * 0.3
    assert (a(x) - b(x)).abs().max() > 1e-3
    assert a.final_norm.eps == 1e-6 and Decoder(dim=8, depth=1, heads=2).final_norm.eps == 1e-5
