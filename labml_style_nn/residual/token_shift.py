r"""
# Token shift

*Paper:* [RWKV-LM](https://doi.org/10.5281/zenodo.5196578) (Peng, 2021)

Token shift ("time-mixing") lets every token see a little of its predecessors *before* attention:
split the features of the branch input into $s + 1$ chunks and shift chunk $c$ by $c$ positions
along the sequence,

$$\tilde x_{t} = \big[\, x^{(0)}_{t};\ x^{(1)}_{t-1};\ \dots;\ x^{(s)}_{t-s} \,\big],$$

with zeros shifted in at the start.  It costs nothing and, for character-level language models,
speeds up convergence markedly; with BPE tokens and rotary positions the seeds saw no gain.

`shift_tokens = s` shifts every block the same way; a tuple gives one amount per block (attention
and feed-forward blocks alternate), e.g. `(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0)` for depth 6.

Two properties matter and are tested:

* **Causal**: chunks only move forward in time, so position $t$ sees only positions $\le t$.
* **Padding**: a padded position contributes zeros, never its features, so changing padded tokens
  changes nothing at real positions.

During cached generation and across Transformer-XL segments the previous tokens live in a small
state (the last $s$ inputs of the block), so a step sees exactly what a full pass would.

Shapes: `b` batch, `n` tokens, `D` model width; chunk width $\lfloor D / (s + 1) \rfloor$, the
remaining features are not shifted.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn, Tensor


class ShiftState:
    """The last `amount` branch inputs of one block, carried between cached steps."""

    def __init__(self):
        self.prev: Optional[Tensor] = None


def shift_tokens(x: Tensor, amount: int, mask: Optional[Tensor] = None,
                 state: Optional[ShiftState] = None) -> Tensor:
    r"""Shift chunk $c$ of the features of `x` `(b, n, D)` by $c$ positions, $c = 0 \dots$ `amount`.

    >>> x = torch.arange(1., 5.)[None, :, None].repeat(1, 1, 2)   # features [t, t] at t = 1..4
    >>> shift_tokens(x, 1)[0].tolist()
    [[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]]
    """
    b, n, d = x.shape
    if mask is not None:
        # Padded positions pass zeros to their successors, never their features.
        x = x.masked_fill(~mask[:, -n:, None], 0.0)
    if state is not None:
        prefix = state.prev if state.prev is not None else x.new_zeros(b, amount, d)
        full = torch.cat((prefix, x), dim=1)  # (b, amount + n, D)
        state.prev = full[:, -amount:]
    else:
        full = F.pad(x, (0, 0, amount, 0))  # zeros before the first token
    width = d // (amount + 1)
    # Chunk $c$ of position $t$ comes from position $t - c$.
    chunks = [full[:, amount - c: amount - c + n, c * width:(c + 1) * width] for c in range(amount + 1)]
    rest = full[:, amount:, (amount + 1) * width:]
    return torch.cat(chunks + [rest], dim=-1)


class ShiftTokens(nn.Module):
    """Applies `shift_tokens` with a fixed amount to a block's input."""

    def __init__(self, amount: int):
        super().__init__()
        self.amount = amount

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, state: Optional[ShiftState] = None) -> Tensor:
        return shift_tokens(x, self.amount, mask, state)
