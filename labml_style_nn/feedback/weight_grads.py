r"""
# Weight gradients accumulated in place across windows

*Paper:* [Addressing Some Limitations of Transformers with Feedback Memory](https://arxiv.org/abs/2002.09402) (Fan et al., 2021)

The [Feedback Transformer](feedback_transformer.md) runs every layer once per window, so each weight
$W$ of a layer is used $T$ times in one call ($T$ windows; the shared key/value projection of
[the memory](feedback_memory.md) $(L + 1)\,T - 1$ times).  Its gradient is a sum over the uses,

$$\frac{\partial \mathcal{L}}{\partial W} = \sum_{t=1}^{T} G_t^\top X_t,
\qquad Y_t = X_t W^\top,\quad G_t = \frac{\partial \mathcal{L}}{\partial Y_t},$$

with $X_t$ the `(b w, D_in)` inputs of window $t$ and $G_t$ the gradients of its outputs.  Left to
autograd, every use computes its own $G_t^\top X_t$ into a fresh tensor, and the engine adds the
$T$ tensors one by one: $T - 1$ passes over a tensor as large as the weight, which for the
feed-forward layers ($D \times 8D$) costs as much memory traffic as a small matrix product.

Here every use adds its term straight into one buffer with the matrix product's own accumulation,
`buffer.addmm_(G_t.T, X_t)`, i.e. $C \leftarrow C + G_t^\top X_t$ in a single BLAS call ($\beta = 1$), and
the buffer is handed to autograd once, after the last use's backward.  The products are the same;
the separate additions and the $T$ temporary gradients are gone.  The input gradients
$G_t W$ stay per window: window $t$'s backward needs window $t + 1$'s.

What it saves depends on the number of windows.  With the paper's windows of one token (`seq_len=1`,
dim 256, depth 4, batch 4 x 64 tokens: 64 uses per weight), a training step went from 671 to
626 ms of CPU time (one thread, medians of 11 steps in turns on a loaded machine).  With the four
windows of 32 tokens of `experiments/benchmarks/benchmark.py`, the change is below the noise (224 ms
against 224 ms): the step is dominated by the products themselves.  The other form, the inputs and
output gradients of all windows concatenated and one product per weight, was slower there (240
against 229 ms): the concatenations cost more than the larger products gain.

The sums are the same sums in another order, so the gradients equal autograd's within fp32
rounding (`tests/feedback/test_weight_grads.py` checks it, and that the forward is unchanged).

How it plugs in: `accumulated_weight_grads(module)` is a context manager around one forward call; for
its duration every `nn.Linear` inside `module` runs through the functions below.  A zero-dimensional
*token* tensor ties the uses to one node that owns the weight: autograd runs that node only after
every use that the loss reaches has run its backward, which is exactly when the buffer is complete.

Shapes: `b` batch, `w` window, `T` windows, `D_in`, `D_out` the widths of one `nn.Linear`.

Not supported, and then the plain `nn.Linear` runs: autocast, `torch.no_grad()` and weights without
`requires_grad`.  The backward is not differentiable again (no `create_graph=True` through it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class _Buffer:
    r"""The running sums $\sum_t G_t^\top X_t$ and $\sum_t \mathbf{1}^\top G_t$ of one layer."""

    def __init__(self):
        self.weight: Optional[Tensor] = None
        self.bias: Optional[Tensor] = None

    def add(self, g: Tensor, x: Tensor, with_bias: bool):
        # $C \leftarrow C + G_t^\top X_t$: the first use allocates, the others accumulate in the product
        if self.weight is None:
            self.weight = g.t().mm(x)  # (D_out, D_in)
        else:
            self.weight.addmm_(g.t(), x)
        if with_bias:
            s = g.sum(0)  # (D_out,)
            self.bias = s if self.bias is None else self.bias.add_(s)


class _Owner(torch.autograd.Function):
    """The node that hands the finished sums to `weight.grad` and `bias.grad`, once per backward."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, bias: Optional[Tensor], buffer: _Buffer) -> Tensor:
        ctx.buffer = buffer
        return weight.new_zeros(())  # the token, read by every use

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, _token_grad: Tensor):
        buffer = ctx.buffer
        weight, bias = buffer.weight, buffer.bias
        buffer.weight = buffer.bias = None  # a second backward (retain_graph) starts from zero
        return weight, bias, None


class _Use(torch.autograd.Function):
    r"""$Y_t = X_t W^\top + b$; the backward returns $G_t W$ and adds $G_t^\top X_t$ to the buffer."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, token: Tensor, weight: Tensor, bias: Optional[Tensor],
                buffer: _Buffer) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.buffer, ctx.with_bias = buffer, bias is not None
        return F.linear(x, weight, bias)  # (..., D_out)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor):
        x, weight = ctx.saved_tensors
        ctx.buffer.add(g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1]), ctx.with_bias)
        grad_x = g.matmul(weight) if ctx.needs_input_grad[0] else None  # $G_t W$, (..., D_in)
        # The token's gradient is never read: `None`, which autograd still counts as this use done.
        return grad_x, None, None, None, None


class _AccumulatingLinear:
    """Stands in for one `nn.Linear`'s `forward` during a call: every use goes through `_Use`."""

    def __init__(self, linear: nn.Linear):
        self.linear, self.buffer, self.token = linear, _Buffer(), None

    def __call__(self, input: Tensor) -> Tensor:  # noqa: A002 (nn.Linear.forward's own name)
        lin, x = self.linear, input
        if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
            return F.linear(x, lin.weight, lin.bias)
        if self.token is None:  # one owner node per call, made at the first use
            self.token = _Owner.apply(lin.weight, lin.bias, self.buffer)
        bias = None if lin.bias is None else lin.bias.detach()
        return _Use.apply(x, self.token, lin.weight.detach(), bias, self.buffer)


@contextmanager
def accumulated_weight_grads(module: nn.Module) -> Iterator[None]:
    """Run every `nn.Linear` inside `module` through the in-place gradient accumulation, for one call.

    Nothing changes while gradients are off, for a layer whose weight does not require them, or
    for a layer already inside such a call.
    """
    linears = [m for m in module.modules() if type(m) is nn.Linear and m.weight.requires_grad
               and (m.bias is None or m.bias.requires_grad) and "forward" not in m.__dict__]
    if not torch.is_grad_enabled():
        linears = []
    for m in linears:
        m.forward = _AccumulatingLinear(m)  # an instance attribute, found before the class's method
    try:
        yield
    finally:
        for m in linears:
            del m.forward
