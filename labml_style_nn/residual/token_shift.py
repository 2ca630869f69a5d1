r"""
# Token shift

*Paper:* [RWKV-LM](https://doi.org/10.5281/zenodo.5196578) (Peng, 2021)

Token shift ("time-mixing") lets every token see a little of its predecessors *before* the sublayer
runs.  It splits the features of the branch input into $s + 1$ chunks and shifts chunk $c$ by $c$
positions along the sequence:

$$\tilde x_{t} = \big[\, x^{(0)}_{t};\ x^{(1)}_{t-1};\ \dots;\ x^{(s)}_{t-s} \,\big],$$

with zeros shifted in before the first token.  It has no parameters and costs a copy; for
character-level language models it speeds up convergence markedly, with BPE tokens and rotary
positions the x-transformers README reports no gain, and a shift of 2 or more narrows each chunk to $D/(s+1)$ features.

`shift_tokens = s` shifts every block's input the same way; a tuple gives one amount per block, in
the order of the stack's `layer_types` (attention and feed-forward alternate by default), e.g.
`(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0)` for depth 6.  A block with amount 0 is not shifted.

Three properties matter and are tested:

* **Causal**: chunks only move forward in time, so position $t$ sees only positions $\le t$.
* **Padding**: a padded position passes on zeros, never its features, so changing padded tokens
  (in front, between or after real ones) changes nothing at real positions.
* **Continuation**: during cached generation the last $s$ inputs of each block live in a small
  state (`ShiftState`), so generating step by step gives exactly what one pass gives.

Tests: `tests/residual/test_res_token_shift.py` (a hand-made example with a shift of 2, causality, padding, cached generation equals one pass).

Shapes: `b` batch, `n` tokens, `D` model width, `s` the shift; chunk width $w = \lfloor D / (s + 1) \rfloor$,
the last $D - (s + 1) w$ features are not shifted.

## Differences from the source

* RWKV mixes each token with its predecessor through learned interpolation weights; x-transformers'
  variant, implemented here, shifts fixed feature chunks by fixed amounts.
* A Transformer-XL memory does not carry the shift state: each segment starts from zeros, as at the
  start of a sequence, so a segmented pass differs from one long pass in the first $s$ positions of
  each segment's shifted chunks.

## Evidence

* Measured: `shift_tokens=1` is the largest single gain of
  [`compare_variants.py`](../../experiments/compare_variants.py): 2.012 ± 0.041 bpc against 2.387 ± 0.025
  for the rotary baseline over three seeds, at no extra parameters (250 steps;
  [results](../../docs/results.md#comparing-techniques)).
* Invariant: the shift never lets a position see the future, `test_causal` in
  `tests/residual/test_res_token_shift.py`, and cached generation equals one pass
  (`test_cached_generation_equals_one_pass`).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("shift_tokens", 0, "shift feature chunks by 1..s tokens (int s, or one amount per chunk)",
            type=(int, tuple, list), example=1))


class ShiftState:
    """The last `amount` (masked) branch inputs of one block, carried between cached steps."""

    def __init__(self):
        self.prev: Optional[Tensor] = None  # (b, s, D)


def shift_tokens(x: Tensor, amount: int, mask: Optional[Tensor] = None,
                 state: Optional[ShiftState] = None) -> Tensor:
    r"""Shift chunk $c$ of the features of `x` `(b, n, D)` by $c$ positions, $c = 0 \dots s$.

    `mask` `(b, n)` (or `(b, m + n)` covering earlier tokens) is true for real tokens; `state`
    carries the last $s$ inputs from one call to the next.

    >>> x = torch.arange(1., 5.)[None, :, None].repeat(1, 1, 2)   # features [t, t] at t = 1..4
    >>> shift_tokens(x, 1)[0].tolist()
    [[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]]
    >>> shift_tokens(x, 1, mask=torch.tensor([[True, False, True, True]]))[0].tolist()
    [[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [4.0, 3.0]]
    """
    b, n, d = x.shape
    if amount == 0:
        return x
    if amount >= d:
        raise ValueError(f"shift_tokens: shifting by up to {amount} needs at least {amount + 1} features "
                         f"(one chunk per shift), the model width is {d}")
    if mask is not None:
        # Padded positions pass zeros to their successors, never their features.
        x = x.masked_fill(~mask[:, -n:, None], 0.0)
    width = d // (amount + 1)
    if state is None:
        # Chunk $c$ of position $t$ comes from position $t - c$: drop its last $c$ rows and pad $c$
        # zero rows in front.  Chunk 0 and the features beyond the last chunk stay in place.
        chunks = [x[..., :width]]
        for c in range(1, amount + 1):
            chunk = x[:, :max(n - c, 0), c * width:(c + 1) * width]
            chunks.append(F.pad(chunk, (0, 0, min(c, n), 0)))  # (b, n, w)
        return torch.cat(chunks + [x[..., (amount + 1) * width:]], dim=-1)  # (b, n, D)
    # With a state the $s$ earlier inputs come first, then these tokens.
    prefix = state.prev if state.prev is not None else x.new_zeros(b, amount, d)
    full = torch.cat((prefix, x), dim=1)  # (b, s + n, D)
    state.prev = full[:, -amount:]
    # Chunk $c$ of position $t$: rows $s - c \dots s - c + n - 1$ of `full`.
    chunks = [full[:, amount - c: amount - c + n, c * width:(c + 1) * width] for c in range(amount + 1)]
    rest = full[:, amount:, (amount + 1) * width:]  # (b, n, D - (s + 1) w), unshifted
    return torch.cat(chunks + [rest], dim=-1)  # (b, n, D)


class ShiftTokens(nn.Module):
    """Applies `shift_tokens` with a fixed amount to a block's (normalised) input."""

    def __init__(self, amount: int):
        super().__init__()
        self.amount = amount

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, state: Optional[ShiftState] = None) -> Tensor:
        return shift_tokens(x, self.amount, mask, state)

    def extra_repr(self) -> str:
        return f"amount={self.amount}"
