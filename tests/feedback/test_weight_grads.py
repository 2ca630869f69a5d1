"""Weight gradients accumulated in place equal autograd's own sums; the forward is unchanged."""

from contextlib import nullcontext

import pytest
import torch
from torch import nn

import labml_style_nn.feedback.feedback_transformer as feedback_transformer
from labml_style_nn.feedback import FeedbackTransformer
from labml_style_nn.feedback.weight_grads import accumulated_weight_grads


def grads(model, x, monkeypatch, accumulate):
    if not accumulate:
        monkeypatch.setattr(feedback_transformer, "accumulated_weight_grads", lambda module: nullcontext())
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    monkeypatch.undo()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("seq_len", [1, 3])
def test_feedback_gradients_equal_the_plain_ones(seq_len, monkeypatch):
    torch.manual_seed(0)
    model = FeedbackTransformer(num_tokens=20, dim=16, depth=2, seq_len=seq_len, mem_len=4, heads=2,
                                dim_head=8, ff_glu=True)
    x = torch.randint(0, 20, (2, 7))
    out, accumulated = grads(model, x, monkeypatch, accumulate=True)
    ref_out, plain = grads(model, x, monkeypatch, accumulate=False)
    torch.testing.assert_close(out, ref_out, atol=0, rtol=0)
    assert set(accumulated) == set(plain) and all(g is not None for g in accumulated.values())
    # The same sums in another order (and the input gradients from a batched rather than a flattened
    # product): equal within fp32 rounding, a few 1e-5 relative at most on gradients of order 1.
    for name, g in plain.items():
        torch.testing.assert_close(accumulated[name], g, atol=1e-5, rtol=1e-4, msg=name)
    # The layers' forwards are the class's again after the call.
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_a_linear_used_three_times_with_bias_and_a_second_backward():
    torch.manual_seed(0)
    lin, xs = nn.Linear(3, 4), [torch.randn(2, 3, requires_grad=True) for _ in range(3)]
    def loss() -> torch.Tensor:
        return torch.stack([lin(x) * (i + 1) for i, x in enumerate(xs)]).sum(0).pow(2).sum()

    y_plain = loss()
    expected = torch.autograd.grad(y_plain, [lin.weight, lin.bias, *xs])
    with accumulated_weight_grads(lin):
        y = loss()
    torch.testing.assert_close(y, y_plain)
    y.backward(retain_graph=True)
    first = [t.grad.clone() for t in (lin.weight, lin.bias, *xs) if t.grad is not None]
    for got, want in zip(first, expected, strict=True):
        torch.testing.assert_close(got, want)
    y.backward()  # the buffer starts from zero again: the gradients double
    assert len(first) == 5
    torch.testing.assert_close(lin.weight.grad, 2 * expected[0])
    torch.testing.assert_close(lin.bias.grad, 2 * expected[1])


def test_without_gradients_the_plain_layer_runs():
    lin, x = nn.Linear(3, 4), torch.randn(2, 3)
    with torch.no_grad(), accumulated_weight_grads(lin):
        assert "forward" not in lin.__dict__
        torch.testing.assert_close(lin(x), x @ lin.weight.t() + lin.bias)
    lin.requires_grad_(False)
    with accumulated_weight_grads(lin):
        assert "forward" not in lin.__dict__
