r"""
# Reversible layers: the backward pass

*Paper:* [The Reversible Residual Network: Backpropagation Without Storing Activations](https://arxiv.org/abs/1707.04585) (Gomez et al., 2017); [Reformer: The Efficient Transformer](https://arxiv.org/abs/2001.04451) (Kitaev et al., 2020)

A [reversible stack](reversible.py) needs less memory than a plain one only if autograd keeps none
of what it would keep on its own.  So each layer's coupling is one `torch.autograd.Function` that
saves neither its inputs nor anything computed inside $F$ or $G$; only the top layer keeps its
outputs.  The backward pass goes down the stack one layer at a time: given a layer's outputs
$y_1, y_2$ and their gradients, it runs $G$ and then $F$ again with the graph on, which both
rebuilds the layer's inputs,

$$x_2 = y_2 - G(y_1), \qquad x_1 = y_1 - F(x_2),$$

and gives the vector-Jacobian products of the chain rule (written out above `ReversibleCoupling`
below).  The rebuilt inputs are the outputs of the layer below, whose backward pass comes next.

The recomputation must be the same function as the forward pass, and three things could make it
another: dropout (each half's random state is saved and restored), the inputs that every layer
shares and that carry gradients (the context, a bias computed from a learned table; they are inputs
of every layer's node, and their gradients are summed over the layers), and the parameters (the
tensors that filled them at forward time, which under `torch.func.functional_call` are not the
module's own).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from the papers

* Reconstructing $x_1, x_2$ from $y_1, y_2$ is exact in exact arithmetic only: in float32 the
  recomputed inputs differ from the true ones by rounding, and so do the gradients (the tests
  compare them to plain autograd in float64, exactly, and in float32, closely).
* Parameters passed in by `torch.func.functional_call` (ensembles, meta-learning) get their
  gradients: the backward pass recomputes with the tensors that filled the parameters during the
  forward pass, not with the module's own (see *Parameters passed in from outside* below).

x-transformers has no reversible layers; `reversible` is this library's keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Optional, overload

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..attention.extension_points import SharedAttentionInputs


#
# ## What every block of a forward pass reads
#
# Besides its half of the stream, a block reads the padding mask, the positional inputs shared by
# the stack, and the context.  Some of these carry gradients (the context, the T5 bias computed
# from its learned table), so the custom backward treats them as inputs and accumulates their
# gradients over all layers.
@dataclass
class StackInputs:
    """The per-forward inputs that every coupling reads besides the stream."""

    mask: Optional[Tensor]
    shared: SharedAttentionInputs
    context: Optional[Tensor] = None
    context_mask: Optional[Tensor] = None

    def _named(self) -> dict[str, Optional[Tensor]]:
        s = self.shared
        return {"context": self.context, "attn_bias": s.attn_bias, "rotary": s.rotary, "qk_pos": s.qk_pos}

    def grad_tensors(self) -> tuple[list[str], list[Tensor]]:
        """The names and tensors of the inputs that need a gradient."""
        named = [(k, t) for k, t in self._named().items() if t is not None and t.requires_grad]
        return [k for k, _ in named], [t for _, t in named]

    def with_tensors(self, names: list[str], tensors: Sequence[Tensor]) -> StackInputs:
        """A copy reading `tensors` in place of the named inputs, with masks built afresh."""
        new = dict(zip(names, tensors, strict=True))
        shared = replace(self.shared, masks={}, **{k: v for k, v in new.items() if k != "context"})
        return replace(self, shared=shared, context=new.get("context", self.context))


#
# ## Replaying dropout
#
# The backward pass recomputes $F$ and $G$.  With dropout, a recomputation must drop the same units
# as the forward pass, or the gradient is that of another function.  Before each half runs, the
# states of the CPU generator and of the CUDA generator of the stream's device are saved; the
# recomputation runs with them restored, inside `fork_rng` so that the global random state after
# the backward pass is what it was before it.
class RngState:
    """The random state of the CPU generator and, for CUDA tensors, of the device's generator."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    @contextmanager
    def restored(self):
        devices = [self.device] if self.device is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.device is not None and self.cuda is not None:  # set together, for CUDA tensors
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


#
# ## Handing the reconstructed inputs down
#
# Each layer's coupling is one autograd node whose inputs are the previous layer's outputs; none of
# them is saved.  The last layer saves its outputs; every layer's backward pass rebuilds its inputs
# and leaves them here for the layer below, whose outputs they are.
class Tape:
    """The inputs one layer's backward pass rebuilt, handed to the backward pass of the layer below."""

    def __init__(self):
        self.next: Optional[int] = None
        self.halves: Optional[tuple[Tensor, Tensor]] = None

    def put(self, index: int, x1: Tensor, x2: Tensor) -> None:
        self.next, self.halves = index - 1, (x1, x2)

    def take(self, index: int) -> tuple[Tensor, Tensor]:
        if self.next != index or self.halves is None:
            raise RuntimeError("reversible: the backward pass reached a layer before the layer above it; a "
                               "reversible stack's graph is backpropagated once, from its output")
        halves, self.halves = self.halves, None
        return halves



Half = Callable[[Tensor, StackInputs], Tensor]


class CouplingLayer:
    """One layer of one forward pass: its halves $F$ and $G$, the modules that hold their parameters,
    the shared inputs, and its saved random states."""

    def __init__(self, f: Half, g: Half, modules_f: Sequence[nn.Module], modules_g: Sequence[nn.Module],
                 inputs: StackInputs, names: list[str], tape: Tape, index: int, last: bool):
        self.f, self.g = f, g
        self.inputs, self.names, self.tape, self.index, self.last = inputs, names, tape, index, last
        self.slots_f = _parameter_slots(modules_f)
        self.slots_g = _parameter_slots(modules_g)
        self.params_f = _unique(self.slots_f)
        self.params_g = _unique(self.slots_g)
        self.rng_f: Optional[RngState] = None
        self.rng_g: Optional[RngState] = None


#
# ## Parameters passed in from outside
#
# `torch.func.functional_call(model, params, x)` runs the model with `params` in place of its own
# parameters, only while the call lasts; the backward pass comes after.  A recomputation that read
# the module's parameters then would differentiate the module's own tensors, and the tensors passed
# in would silently get no gradient.  So each layer records, at forward time, which tensor fills
# each parameter slot of its blocks, and the backward pass recomputes with detached copies of those
# same tensors put back into the slots: their gradients go to whatever was passed in.
def _parameter_slots(modules) -> list[tuple[nn.Module, str, Tensor]]:
    """`(module, name, tensor)` for every trainable parameter slot of `modules` and their children."""
    slots = []
    for m in modules:
        for sub in m.modules():
            slots += [(sub, name, p) for name, p in sub._parameters.items() if p is not None and p.requires_grad]
    return slots


def _unique(slots) -> list[Tensor]:
    """The distinct tensors of `slots`, in order (a tied weight fills several slots)."""
    return list({id(p): p for _, _, p in slots}.values())


@contextmanager
def _parameters_as(slots, leaves: dict[int, Tensor]):
    """Fill each slot with the leaf made from the tensor it held at forward time; restore afterwards."""
    held = [(sub, name, sub._parameters[name]) for sub, name, _ in slots]
    try:
        for sub, name, p in slots:
            sub._parameters[name] = leaves[id(p)]
        yield
    finally:
        for sub, name, p in held:
            sub._parameters[name] = p


@overload
def _add(total: Tensor, g: Optional[Tensor]) -> Tensor: ...


@overload
def _add(total: Optional[Tensor], g: Optional[Tensor]) -> Optional[Tensor]: ...


def _add(total: Optional[Tensor], g: Optional[Tensor]) -> Optional[Tensor]:
    return g if total is None else total if g is None else total + g


def _branch_grads(layer: CouplingLayer, branch: Half, rng: RngState, slots, x: Tensor, dy: Tensor,
                  leaves: list[Tensor], branch_leaves: list[Tensor], param_leaves: dict[int, Tensor]):
    r"""Recompute one half on its input `x` and pull `dy` back through it (inside `enable_grad`).

    Returns the half's output (detached) and the vector-Jacobian products $(\partial/\partial x)^\top dy$,
    for the stack's extra tensors `leaves`, and for the half's own parameters `branch_leaves`.
    """
    inputs = layer.inputs.with_tensors(layer.names, leaves)
    with rng.restored(), _parameters_as(slots, param_leaves):
        out = branch(x, inputs)
    grads = torch.autograd.grad(out, [x, *leaves, *branch_leaves], dy, allow_unused=True)
    n = len(leaves)
    return out.detach(), grads[0], grads[1:1 + n], grads[1 + n:]


#
# ## The custom backward
#
# Given the gradients $\bar y_1 = \partial L / \partial y_1$ and $\bar y_2$ of one layer's outputs,
# the chain rule through $y_2 = x_2 + G(y_1)$ and $y_1 = x_1 + F(x_2)$ gives, from the top:
#
# $$\begin{aligned}
# \hat y_1 &= \bar y_1 + \Big(\tfrac{\partial G}{\partial y_1}\Big)^{\!\top} \bar y_2, &
# \bar\theta_G &= \Big(\tfrac{\partial G}{\partial \theta_G}\Big)^{\!\top} \bar y_2, \\
# \bar x_2 &= \bar y_2 + \Big(\tfrac{\partial F}{\partial x_2}\Big)^{\!\top} \hat y_1, &
# \bar\theta_F &= \Big(\tfrac{\partial F}{\partial \theta_F}\Big)^{\!\top} \hat y_1, \\
# \bar x_1 &= \hat y_1.
# \end{aligned}$$
#
# Each vector-Jacobian product needs the graph of one half, rebuilt by recomputing that half on the
# reconstructed input, under the random state it ran with: $G(y_1)$ first, which also yields
# $x_2 = y_2 - G(y_1)$, then $F(x_2)$, which yields $x_1 = y_1 - F(x_2)$.
class ReversibleCoupling(torch.autograd.Function):
    r"""$(x_1, x_2) \mapsto (x_1 + F(x_2),\ x_2 + G(x_1 + F(x_2)))$, keeping no activations for backward."""

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, layer: CouplingLayer, *tensors: Tensor):
        # `tensors` are the inputs that need gradients, then the layer's parameters: autograd
        # sees them as inputs and receives their gradients from `backward`.
        layer.rng_f = RngState(x1.device)
        y1 = x1 + layer.f(x2, layer.inputs)  # (b, n, D)
        layer.rng_g = RngState(x1.device)
        y2 = x2 + layer.g(y1, layer.inputs)  # (b, n, D)
        device = x1.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.layer = layer
        extras = tensors[:len(layer.names)]
        ctx.save_for_backward(*((y1, y2) if layer.last else ()), *extras)
        return y1, y2

    @staticmethod
    @once_differentiable
    def backward(ctx, dy1: Tensor, dy2: Tensor):
        layer: CouplingLayer = ctx.layer
        assert layer.rng_f is not None and layer.rng_g is not None  # saved by `forward`
        saved = ctx.saved_tensors
        if layer.last:
            (y1, y2), extras = saved[:2], saved[2:]
        else:
            (y1, y2), extras = layer.tape.take(layer.index), saved
        leaves = [t.detach().requires_grad_() for t in extras]
        # The parameters as they were at forward time (see above), as leaves of the recomputation.
        param_leaves = {id(p): p.detach().requires_grad_() for p in layer.params_f + layer.params_g}
        leaves_f = [param_leaves[id(p)] for p in layer.params_f]
        leaves_g = [param_leaves[id(p)] for p in layer.params_g]
        device, enabled, dtype = ctx.autocast
        d_extras = [None] * len(leaves)
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            # $G$ on $y_1$: $\hat y_1$, $\bar\theta_G$, and $x_2 = y_2 - G(y_1)$.
            y1 = y1.detach().requires_grad_()
            g, d_y1, d_in, d_g = _branch_grads(layer, layer.g, layer.rng_g, layer.slots_g, y1, dy2, leaves,
                                               leaves_g, param_leaves)
            dy1 = _add(dy1, d_y1)
            d_extras = [_add(a, b) for a, b in zip(d_extras, d_in, strict=True)]
            x2 = (y2.detach() - g).requires_grad_()
            # $F$ on $x_2$: $\bar x_2$, $\bar\theta_F$, and $x_1 = y_1 - F(x_2)$.
            f, d_x2, d_in, d_f = _branch_grads(layer, layer.f, layer.rng_f, layer.slots_f, x2, dy1, leaves,
                                               leaves_f, param_leaves)
            dx2 = _add(dy2, d_x2)
            d_extras = [_add(a, b) for a, b in zip(d_extras, d_in, strict=True)]
            x1 = y1.detach() - f
        if layer.index > 0:
            layer.tape.put(layer.index, x1, x2.detach())
        # Gradients of the parameters, in the order `forward` received them.
        by_param = {}
        for p, d in list(zip(layer.params_f, d_f, strict=True)) + list(zip(layer.params_g, d_g, strict=True)):
            by_param[p] = _add(by_param.get(p), d)
        params = list(dict.fromkeys(layer.params_f + layer.params_g))
        return (dy1, dx2, None, *d_extras, *(by_param[p] for p in params))
