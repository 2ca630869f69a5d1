r"""
# Reversible layers

*Paper:* [The Reversible Residual Network: Backpropagation Without Storing Activations](https://arxiv.org/abs/1707.04585) (Gomez et al., 2017); [Reformer: The Efficient Transformer](https://arxiv.org/abs/2001.04451) (Kitaev et al., 2020)

Backpropagation through a residual stack keeps the input of every sublayer until the backward pass
reaches it, so the memory of a training step grows with depth.  A reversible stack keeps none of
them: every layer's input can be computed from its output, so the backward pass rebuilds the
activations of one layer at a time, from the top down.

The residual stream is split into two halves, $x_1$ and $x_2$.  Each layer adds attention $F$ to
one half and feed-forward $G$ to the other:

$$y_1 = x_1 + F(x_2), \qquad y_2 = x_2 + G(y_1)$$

and undoing it needs only the outputs, in the opposite order:

$$x_2 = y_2 - G(y_1), \qquad x_1 = y_1 - F(x_2).$$

`reversible=True` on `Encoder`, `Decoder`, `CrossAttender` (or `enc_reversible` / `dec_reversible`
on `XTransformer`) runs the stack this way.  The memory of a training step then no longer grows with
depth; see the [measurement](#memory-against-depth) below.

**The two halves.**  As in the Reformer, the stream is duplicated, $x_1 = x_2 = x$, rather than split
by features, so each half has the model width $D$ and every block keeps its weights and shapes.  At
the top the halves are averaged, $\tfrac12 (y_1 + y_2)$, before the final norm, so the output is
$D$ wide, a reversible model has exactly the parameters (and `state_dict` keys) of the plain one,
and the wrappers, the output projection and the cache need nothing new.

**Which block is $F$, which is $G$.**  Each layer of the stack is read as one coupling: the
feed-forward block is $G$, and the attention blocks before it are $F$.  With cross-attention
(`cross_attend=True`, layers `acf`) $F$ is self-attention then cross-attention, one residual
mini-stack on $x_2$ alone,
$$F(x_2) = A(x_2) + C\big(x_2 + A(x_2)\big),$$
which is still a function of $x_2$ only, so the layer stays invertible.  A `CrossAttender` pairs
cross-attention with feed-forward.  Each branch is the whole pre-norm branch of its block: norm,
token shift, sublayer, sandwich norm, ReZero scale.  Everything that only *reads* its half (masks,
rotary, ALiBi, T5 bias, persistent memory, GLU, token shift, the context) composes; what is refused
is listed in `options.validate_reversible`: post-norm, gated or scaled residuals (not a sum),
residual attention (scores carried across layers), macaron and sandwich layouts (no $F/G$ pairs),
and Transformer-XL memories (the inputs of every layer would have to be kept).

Shapes: `b` batch, `n` tokens, `D` model width, `j` context tokens.

## Differences from the papers

* The Reformer concatenates $[y_1; y_2]$ and normalises the $2D$-wide vector; here the halves are
  averaged so that the stack's output is $D$ wide like a plain stack's.
* The Reformer also chunks the feed-forward over positions; that is a separate saving, not here.
* Reconstructing $x_1, x_2$ from $y_1, y_2$ is exact in exact arithmetic only: in float32 the
  recomputed inputs differ from the true ones by rounding, and so do the gradients (the tests
  compare them to plain autograd in float64, exactly, and in float32, closely).
* Decoding with a key/value cache (and `return_attn`) runs the same couplings without the custom
  backward: there is nothing to save in inference, and a cache is state that cannot be rebuilt.
* Parameters passed in by `torch.func.functional_call` (ensembles, meta-learning) get their
  gradients: the backward pass recomputes with the tensors that filled the parameters during the
  forward pass, not with the module's own (see *Parameters passed in from outside* below).

## Memory against depth

The peak memory of one training step (forward and backward, above what the parameters and their
gradients hold) of `Decoder(dim=256, heads=4, rotary_pos_emb=True)` on 4 x 256 tokens, on the CPU,
each point measured in a fresh process (the method is on the
[benchmark's page](../../experiments/benchmarks/reversible_memory.py)):

```
python experiments/benchmarks/reversible_memory.py
```

![peak memory and time of a training step against depth, plain and reversible](../../../results/reversible_memory.png)

| depth | plain (MiB) | reversible (MiB) | plain (s/step) | reversible (s/step) |
|---|---|---|---|---|
| 2 | 43.0 | 20.6 | 2.2 | 3.9 |
| 4 | 81.2 | 20.5 | 5.0 | 4.8 |
| 8 | 157.5 | 20.5 | 11.7 | 14.4 |
| 16 | 309.7 | 20.5 | 14.0 | 18.0 |
| 32 | 614.7 | 20.6 | 30.8 | 42.1 |

The plain stack keeps about 19 MiB per layer (some 19 floats per token and feature); the reversible
one keeps the two halves of the stream and one layer's graph at a time, 20.5 MiB at every depth, a
30th of the plain stack's at depth 32.  What it pays is time: every layer runs forward twice, which
is a third more work in theory.  Timed on its own, the same couplings with the custom backward
against ordinary autograd taking turns in one process (`--speed-depth 8 --rounds 7` and
`--speed-depth 32 --rounds 5`), a reversible step takes 1.28 times as long at depth 8 (3.29 s
against 2.57 s) and 1.30 times at depth 32 (15.0 s against 11.7 s), on one thread of a machine
shared with other jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Optional, overload

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..attention.extension_points import SharedAttentionInputs
from ..keywords import Keyword, declare
from .residual import Block

KEYWORDS = declare(__name__, "stack",
    Keyword("reversible", False, "reversible layers: inputs recomputed from outputs, activation memory "
            "independent of depth", xtransformers=False))


def reversible_pairs(layer_types: Sequence[str]) -> list[tuple[tuple[int, ...], int]]:
    r"""Group a block sequence into couplings: the attention blocks $F$ and the feed-forward block $G$.

    >>> reversible_pairs(('a', 'f', 'a', 'f'))
    [((0,), 1), ((2,), 3)]
    >>> reversible_pairs(('a', 'c', 'f'))
    [((0, 1), 2)]
    """
    pairs, attention = [], []
    for i, kind in enumerate(layer_types):
        if kind == "f":
            if not attention:
                raise ValueError(f"reversible: the layout {''.join(layer_types)!r} has a feed-forward block without "
                                 "attention before it; reversible layers need attention/feed-forward pairs")
            pairs.append((tuple(attention), i))
            attention = []
        else:
            attention.append(i)
    if attention:
        raise ValueError(f"reversible: the layout {''.join(layer_types)!r} ends with attention blocks that have no "
                         "feed-forward block to pair with")
    return pairs


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


def branch(block: Block, x: Tensor, inputs: StackInputs, cache=None, attn_sink=None) -> Tensor:
    """The branch of one block on `x` `(b, n, D)`: what it adds to the stream, without the stream."""
    h = block.branch_input(x, mask=inputs.mask, shift_state=cache.shift if cache is not None else None)
    attn_cache = cache.attn if cache is not None else None
    if block.kind == "f":
        out = block.fn(h)
    elif block.kind == "a":
        out, _ = block.fn(h, mask=inputs.mask, shared=inputs.shared, cache=attn_cache, attn_sink=attn_sink)
    else:
        out, _ = block.fn(h, context=inputs.context, context_mask=inputs.context_mask, cache=attn_cache,
                          attn_sink=attn_sink)
    return block.branch_output(out)


def attention_half(blocks, indices: tuple[int, ...], x2: Tensor, inputs: StackInputs, caches=None,
                   attn_sink=None) -> Tensor:
    r"""$F(x_2)$: the attention blocks of one layer as a residual mini-stack, minus its input.

    With one block this is $A(x_2)$; with self- and cross-attention $A(x_2) + C(x_2 + A(x_2))$.  The
    branches are summed rather than computing $h - x_2$, which would round.
    """
    h, total = x2, None
    for k, i in enumerate(indices):
        d = branch(blocks[i], h, inputs, caches[i] if caches is not None else None, attn_sink)
        total = d if total is None else total + d
        if k + 1 < len(indices):
            h = h + d
    assert total is not None  # `reversible_pairs` gives every layer at least one attention block
    return total


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
class _Tape:
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


class _Coupling:
    """One layer of one forward pass: its blocks, the shared inputs, and its saved random states."""

    def __init__(self, blocks, f: tuple[int, ...], g: int, inputs: StackInputs, names: list[str],
                 tape: _Tape, index: int, last: bool):
        self.blocks, self.f_idx, self.g_idx = blocks, f, g
        self.inputs, self.names, self.tape, self.index, self.last = inputs, names, tape, index, last
        self.slots_f = _parameter_slots([blocks[i] for i in f])
        self.slots_g = _parameter_slots([blocks[g]])
        self.params_f = _unique(self.slots_f)
        self.params_g = _unique(self.slots_g)
        self.rng_f: Optional[RngState] = None
        self.rng_g: Optional[RngState] = None

    def f(self, x2: Tensor, inputs: StackInputs) -> Tensor:
        return attention_half(self.blocks, self.f_idx, x2, inputs)

    def g(self, y1: Tensor, inputs: StackInputs) -> Tensor:
        return branch(self.blocks[self.g_idx], y1, inputs)


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
# \bar\theta_F &= \Big(\tfrac{\partial F}{\partial \theta_F}\Big)^{\!\top} \hat y_1, \qquad
# \bar x_1 = \hat y_1.
# \end{aligned}$$
#
# Each vector-Jacobian product needs the graph of one half, rebuilt by recomputing that half on the
# reconstructed input, under the random state it ran with: $G(y_1)$ first, which also yields
# $x_2 = y_2 - G(y_1)$, then $F(x_2)$, which yields $x_1 = y_1 - F(x_2)$.
class ReversibleCoupling(torch.autograd.Function):
    r"""$(x_1, x_2) \mapsto (x_1 + F(x_2),\ x_2 + G(x_1 + F(x_2)))$, keeping no activations for backward."""

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, layer: _Coupling, *tensors: Tensor):
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
        layer: _Coupling = ctx.layer
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
            inputs = layer.inputs.with_tensors(layer.names, leaves)
            with layer.rng_g.restored(), _parameters_as(layer.slots_g, param_leaves):
                g = layer.g(y1, inputs)
            grads = torch.autograd.grad(g, [y1, *leaves, *leaves_g], dy2, allow_unused=True)
            dy1 = _add(dy1, grads[0])
            d_extras = [_add(a, b) for a, b in zip(d_extras, grads[1:1 + len(leaves)], strict=True)]
            d_g = grads[1 + len(leaves):]
            x2 = (y2.detach() - g.detach()).requires_grad_()
            del g, grads
            # $F$ on $x_2$: $\bar x_2$, $\bar\theta_F$, and $x_1 = y_1 - F(x_2)$.
            inputs = layer.inputs.with_tensors(layer.names, leaves)
            with layer.rng_f.restored(), _parameters_as(layer.slots_f, param_leaves):
                f = layer.f(x2, inputs)
            grads = torch.autograd.grad(f, [x2, *leaves, *leaves_f], dy1, allow_unused=True)
            dx2 = _add(dy2, grads[0])
            d_extras = [_add(a, b) for a, b in zip(d_extras, grads[1:1 + len(leaves)], strict=True)]
            d_f = grads[1 + len(leaves):]
            x1 = y1.detach() - f.detach()
            del f, grads
        if layer.index > 0:
            layer.tape.put(layer.index, x1, x2.detach())
        # Gradients of the parameters, in the order `forward` received them.
        by_param = {}
        for p, d in list(zip(layer.params_f, d_f, strict=True)) + list(zip(layer.params_g, d_g, strict=True)):
            by_param[p] = _add(by_param.get(p), d)
        params = list(dict.fromkeys(layer.params_f + layer.params_g))
        return (dy1, dx2, None, *d_extras, *(by_param[p] for p in params))


#
# ## The stack
def run_reversible(blocks, pairs: list[tuple[tuple[int, ...], int]], x: Tensor, inputs: StackInputs, *,
                   recompute: bool = True, caches=None, attn_sink: Optional[list] = None) -> Tensor:
    r"""Run `blocks` as reversible couplings on `x` `(b, n, D)`; returns $\tfrac12 (y_1 + y_2)$ `(b, n, D)`.

    Args:
        pairs: the couplings, from `reversible_pairs`.
        recompute: use the custom backward when gradients are needed; `False` runs the same function
            with ordinary autograd, keeping every activation (a reference for tests and benchmarks).
        caches: per-block key/value caches (generation); the couplings then run without the custom
            backward.
        attn_sink: receives the attention weights, as in the plain stack.
    """
    # $x_1 = x_2 = x$
    x1 = x2 = x
    if recompute and caches is None and attn_sink is None and torch.is_grad_enabled():
        tape, (names, extras) = _Tape(), inputs.grad_tensors()
        for k, (f, g) in enumerate(pairs):
            layer = _Coupling(blocks, f, g, inputs, names, tape, k, last=k == len(pairs) - 1)
            params = list(dict.fromkeys(layer.params_f + layer.params_g))
            x1, x2 = ReversibleCoupling.apply(x1, x2, layer, *extras, *params)
    else:
        for f, g in pairs:
            # $y_1 = x_1 + F(x_2)$, $y_2 = x_2 + G(y_1)$
            x1 = x1 + attention_half(blocks, f, x2, inputs, caches, attn_sink)
            x2 = x2 + branch(blocks[g], x1, inputs, caches[g] if caches is not None else None, attn_sink)
    # $\tfrac12 (y_1 + y_2)$
    return (x1 + x2) / 2
