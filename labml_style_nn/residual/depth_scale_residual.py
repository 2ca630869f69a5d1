r"""
# Depth-scaled residual branches

*Papers:* [OLMo: Accelerating the Science of Language Models](https://arxiv.org/abs/2402.00838) (Groeneveld et al., 2024);
[Tensor Programs VI: Feature Learning in Infinite-Depth Neural Networks](https://arxiv.org/abs/2310.02244) (Yang et al., 2023)

A pre-norm stack adds one branch output per block to its residual stream, so with random
initial weights the stream's variance grows with every block: after $L$ blocks of unit-variance
updates it is about $L$ times what it started as, and the late blocks' updates are small next to
it.  Two remedies scale the branches with depth, and `depth_scale_residual` takes either.

**At initialisation (`depth_scale_residual=True`).**  OLMo's "mitchell" initialisation draws the
output projection of the branch in block $l$ ($l = 1, 2, \dots$) with

$$W \sim \mathcal N\!\left(0,\ \frac{1}{2\, d_{\text{in}}\, l}\right),$$

so deeper blocks start with smaller updates (GPT-2's initialisation scales every output projection
by $1/\sqrt{2L}$ instead).  Only the initial weights change; the forward pass is the usual one.

**At run time (`depth_scale_residual=s`, a number).**  Depth-$\mu$P multiplies every branch by a
constant that shrinks with depth, $x \leftarrow x + s\, F(x)$ with $s = 1/\sqrt L$, so that the
stream's variance stays bounded as $L$ grows and hyperparameters tuned on a shallow model transfer
to a deep one.  The number is the user's: `depth_scale_residual=depth ** -0.5` is the paper's.

A worked example: in a 4-block stack with $d_{\text{in}} = 512$ the output projections start with
standard deviations $1/\sqrt{1024 l}$: $0.031, 0.022, 0.018, 0.016$ for $l = 1 \dots 4$.

Tests: `tests/residual/test_res_stream.py` (the standard deviations per block, the run-time scale,
parity with x-transformers).

Shapes: `D` model width.

## Differences from the papers

* Depth-$\mu$P also scales the learning rate with depth; that belongs to the optimiser and is not
  done here.

## Differences from x-transformers

* The block index $l$ counts blocks of the default layout (attention and feed-forward, with
  cross-attention and macaron's extra feed-forward when present); with `custom_layers`, `par_ratio`
  or `sandwich_coef` every sublayer is its own block, as in x-transformers.
* With `sandwich_norm=True` the run-time scale would be normalised away (x-transformers scales
  before the branch norm); that combination is refused.
"""

from __future__ import annotations

import math

import torch

from ..keywords import Keyword, declare, rule
from .zero_init_branch import output_projection

KEYWORDS = declare(__name__, "stack",
    Keyword("depth_scale_residual", False,
            "True: initialise each branch output projection with std 1/sqrt(2 fan_in l) in block l; "
            "a number: multiply every branch by it", type=(bool, float), example=True))


def branch_multiplier(o) -> float:
    r"""The run-time scale $s$ of every branch: the number given, else 1.

    >>> from labml_style_nn.options import LayerOptions
    >>> branch_multiplier(LayerOptions(dim=8, depth=4, depth_scale_residual=0.5))
    0.5
    """
    s = o.depth_scale_residual
    return 1.0 if isinstance(s, bool) else float(s)


def block_numbers(o, kinds: tuple[str, ...]) -> list[int]:
    r"""The block number $l = 1, 2, \dots$ of each sublayer, counting default blocks as x-transformers does.

    >>> from labml_style_nn.options import LayerOptions
    >>> block_numbers(LayerOptions(dim=8, depth=2), ('a', 'f', 'a', 'f'))
    [1, 1, 2, 2]
    """
    custom = o.custom_layers is not None or o.par_ratio is not None or o.sandwich_coef is not None
    per_block = 1 if custom else 2 + int(o.cross_attend) + int(o.macaron)
    return [i // per_block + 1 for i in range(len(kinds))]


@torch.no_grad()
def depth_scaled_init(o, kinds: tuple[str, ...], blocks: list) -> None:
    r"""$W \sim \mathcal N(0, 1 / (2\, d_{\text{in}}\, l))$ for the output projection of each branch."""
    for block, layer in zip(blocks, block_numbers(o, kinds), strict=True):
        proj = output_projection(block)
        proj.weight.normal_(0.0, (2 * proj.in_features * layer) ** -0.5)


@rule("stack")
def _depth_scale_keywords(o) -> None:
    s = o.depth_scale_residual
    if isinstance(s, bool):
        if s and o.zero_init_branch_output:
            raise ValueError("depth_scale_residual=True and zero_init_branch_output both initialise the branch "
                             "output projections; choose one")
        return
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"depth_scale_residual: expected True, False or a positive number, got {s!r}")
    if o.sandwich_norm:
        raise ValueError("depth_scale_residual (a number) and sandwich_norm cannot be combined: the norm on the "
                         "branch output would undo the scale")
