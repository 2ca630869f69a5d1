r"""
# Reversible layers

*Paper:* [The Reversible Residual Network: Backpropagation Without Storing Activations](https://arxiv.org/abs/1707.04585) (Gomez et al., 2017); [Reformer: The Efficient Transformer](https://arxiv.org/abs/2001.04451) (Kitaev et al., 2020)

Backpropagation through a residual stack keeps every layer's activations until the backward pass
reaches it, so the memory of a training step grows with depth.  These are not only the input of each
sublayer but everything autograd saves inside it (the normalised inputs, the queries, keys and
values, the attention weights, the feed-forward's hidden units): about 19 floats per token and
feature per layer in the [measurement](#memory-against-depth) below.  A reversible stack keeps none of
them: every layer's input can be computed from its output, so the backward pass rebuilds the
activations of one layer at a time, from the top down.

The residual stream is split into two halves, $x_1$ and $x_2$.  Each layer adds attention $F$ to
one half and feed-forward $G$ to the other:

$$y_1 = x_1 + F(x_2), \qquad y_2 = x_2 + G(y_1)$$

and undoing it needs only the outputs, in the opposite order:

$$x_2 = y_2 - G(y_1), \qquad x_1 = y_1 - F(x_2).$$

`reversible=True` on `Encoder`, `Decoder`, `CrossAttender` (or `enc_reversible` / `dec_reversible`
on `XTransformer`) runs the stack this way.  The memory of a training step then no longer grows with
depth; see the [measurement](#memory-against-depth) below.  This page builds the couplings from the
blocks and runs them; [the backward pass](reversible_backward.py) that rebuilds each layer's inputs
(one autograd function per layer, with dropout replayed and `torch.func.functional_call`'s
parameters honoured) has a page of its own.

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
is listed in `option_validation.validate_reversible`: post-norm, gated or scaled residuals (not a sum),
residual attention (scores carried across layers), macaron and sandwich layouts (no $F/G$ pairs),
and Transformer-XL memories (the inputs of every layer would have to be kept).

Shapes: `b` batch, `n` tokens, `D` model width, `j` context tokens.

## Differences from the papers

* The Reformer concatenates $[y_1; y_2]$ and normalises the $2D$-wide vector; here the halves are
  averaged so that the stack's output is $D$ wide like a plain stack's.
* The Reformer also chunks the feed-forward over positions; that is a separate saving, not here.
* Reconstructing $x_1, x_2$ from $y_1, y_2$ is exact in exact arithmetic only, so in float32 the
  gradients differ from plain autograd's by rounding ([the backward pass](reversible_backward.py)).
* Decoding with a key/value cache (and `return_attn`) runs the same couplings without the custom
  backward: there is nothing to save in inference, and a cache is state that cannot be rebuilt.

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
from functools import partial
from typing import Optional

import torch
from torch import Tensor

from ..keywords import Keyword, declare
from .residual import Block
from .reversible_backward import CouplingLayer, ReversibleCoupling, StackInputs, Tape

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
# ## The two halves of one layer
#
# $G$ is one block's branch, read off without the stream (norm, sublayer, output scale), so that the
# coupling can add it to the other half; $F$ strings a layer's attention blocks together as a
# residual mini-stack on $x_2$ alone.  Besides its half, every block reads the `StackInputs` of the
# forward pass: the mask, the positional inputs shared by the stack, and the context (defined with
# [the backward pass](reversible_backward.py), which treats those that carry gradients as inputs).
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
# ## The stack
#
# With gradients each layer is one node of [the custom backward](reversible_backward.py), which keeps
# no activations; without them (inference, a cache, recorded attention, or `recompute=False`) the
# same couplings run as ordinary code.
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
        tape, (names, extras) = Tape(), inputs.grad_tensors()
        for k, (f, g) in enumerate(pairs):
            # $F$ and $G$ of this layer, and the blocks whose parameters each reads
            layer = CouplingLayer(partial(attention_half, blocks, f), partial(branch, blocks[g]),
                                  [blocks[i] for i in f], [blocks[g]], inputs, names, tape, k,
                                  last=k == len(pairs) - 1)
            params = list(dict.fromkeys(layer.params_f + layer.params_g))
            x1, x2 = ReversibleCoupling.apply(x1, x2, layer, *extras, *params)
    else:
        for f, g in pairs:
            # $y_1 = x_1 + F(x_2)$, $y_2 = x_2 + G(y_1)$
            x1 = x1 + attention_half(blocks, f, x2, inputs, caches, attn_sink)
            x2 = x2 + branch(blocks[g], x1, inputs, caches[g] if caches is not None else None, attn_sink)
    # $\tfrac12 (y_1 + y_2)$
    return (x1 + x2) / 2
