r"""
# Zero-initialised branch outputs

*Paper:* [Fixup Initialization: Residual Learning Without Normalization](https://arxiv.org/abs/1901.09321) (Zhang et al., 2019)

A residual block computes $x + F(x)$.  If the last layer of each branch $F$ starts at zero, every
block is the identity at initialisation and so is the whole stack: the signal and its gradient pass
through any depth unchanged, and each branch grows from nothing as it learns.  Fixup initialises
the last layer of every residual branch at zero for exactly this reason (and the same trick, a zero
last scale, makes large-batch ResNet training stable in
[Goyal et al., 2017](https://arxiv.org/abs/1706.02677)).

`zero_init_branch_output=True` sets the output projection of every attention layer ($W^O$) and the
second linear layer of every feed-forward layer to zero:

$$W^O_0 = 0,\quad W_{2,0} = 0 \quad\Longrightarrow\quad x + F(x) = x \text{ at initialisation}.$$

Only the weights of the last layer are zero; the layers before it are initialised as usual, so the
gradient of the zero layer, $\partial L / \partial W^O = o^\top \delta$, is not zero and the branch
starts learning at the first step.  Unlike [ReZero](rezero.md) the model keeps its norms and adds no
parameter.

Tests: `tests/residual/test_res_stream.py` (a pre-norm stack returns its final norm of the input at
initialisation; parity with x-transformers, which initialises the same projections at zero).

Shapes: `D` model width.

## Differences from the paper

* Fixup also rescales the other layers of each branch and removes normalisation; here only the
  last layer is zeroed, as in x-transformers.

## Differences from x-transformers

* With `attn_on_attn=True` x-transformers fails (its output projection is a sequence of modules);
  here the linear layer inside it is zeroed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("zero_init_branch_output", False,
            "initialise the output projection of every attention and feed-forward branch at zero"))


def output_projection(block) -> nn.Linear:
    """The last linear layer of a block's branch: $W^O$ of attention, $W_2$ of a feed-forward layer."""
    last = block.fn.proj_out if block.kind == "f" else block.fn.to_out
    linears = [m for m in last.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"zero_init_branch_output: the {type(last).__name__} output of a branch has no linear layer")
    return linears[-1]


@torch.no_grad()
def zero_init_branches(blocks: list) -> None:
    """Set the output projection (weight and bias) of every branch to zero."""
    for block in blocks:
        proj = output_projection(block)
        proj.weight.zero_()
        if proj.bias is not None:
            proj.bias.zero_()
