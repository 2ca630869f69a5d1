r"""
# Custom positions: one row of positions per sequence (`pos=`)

By default token $t$ of a sequence sits at position $t$ (or $m + t$ after $m$ cached or remembered
tokens).  `pos=` overrides that: the positions are given, and every position scheme of the stack reads
them instead.  x-transformers takes three shapes, and so does this library:

| `pos` | meaning | schemes that read it |
|---|---|---|
| `(n,)` | the same positions for every sequence of the batch | all: rotary, xPos, ALiBi, T5, dynamic bias, position-infused, absolute |
| `(b, n)` | one row per sequence (packed documents, gaps, left padding) | rotary, xPos, ALiBi, absolute |
| `(b, h, n)` | one row per sequence *and* ALiBi head | ALiBi alone |

Per-row positions are what a packed batch needs: two documents in one row restart at 0, or a
sequence with a skipped span keeps its true distances.  Rotary embeddings turn the queries and keys
of row $b$ by their own positions, so the score of query $i$ and key $j$ in that row depends on
$p_{bj} - p_{bi}$; ALiBi's penalty is $-m_h\,|p_{bi} - p_{bj}|$, and with positions per head,
$-m_h\,|p_{bhi} - p_{bhj}|$: each head measures distance on its own ruler, e.g. a head that counts
only sentences.

$$S_{bhij} = \frac{(R_{p_{bi}} q_{bhi})^\top R_{p_{bj}} k_{bhj}}{\sqrt d} - m_h\,|p_{b(h)i} - p_{b(h)j}|$$

Shapes: `b` batch, `h` heads (the ALiBi heads, `alibi_num_heads`, for `(b, h, n)`), `n` tokens,
`r` rotated features.  The angles of per-row positions are `(2, b, 1, n, r)` (xPos: `(4, b, 1, n, r)`),
broadcast over the heads; the ALiBi bias is `(b, h, i, j)`.  Both reach attention through the same
extension points as the shared positions (the transform of queries and keys, the additive bias), and the
fused kernel still runs: a per-row bias is just a bias with a batch axis.

## Differences from x-transformers

* `pos=` together with a key/value cache or a Transformer-XL memory is a `ValueError` naming `pos` and
  the other argument: the positions of a continued sequence follow from what came before it.
* x-transformers asserts when `pos` meets T5's bias or the dynamic bias.  Here a shared row `(n,)` drives
  them too (and position-infused attention and PoPE); per-row positions with those are a `ValueError`
  naming `pos` and the scheme.  x-transformers' PoPE accepts per-row positions but lines their phases
  `(b, n, d)` up with the heads axis of `(b, h, n, d)`: it fails unless $b$ is 1 or the number of heads,
  and with $b = h$ head $k$ of every row takes row $k$'s phases.
* For xPos, x-transformers centres its decay at half the largest position of the batch; the decay enters a
  score as $\zeta^{(p_i - p_j)/B}$, in which the centre cancels, so the scores agree (tested).
"""

from typing import Optional

from torch import Tensor

from ..checks import check_tensor


def check_custom_positions(pos, n: int, batch: int, *, per_row: tuple[str, ...], per_head: Optional[int],
                           shared_only: tuple[str, ...]) -> None:
    """`ValueError` naming `pos` unless it is `(n,)`, `(batch, n)` or, for ALiBi alone, `(batch, h, n)` integers.

    `per_row` names the stack's schemes that take per-row positions, `shared_only` those that take only
    `(n,)`; `per_head` is the number of ALiBi heads when ALiBi is the stack's only position scheme.
    """
    shapes = f"({n},), ({batch}, {n})" + (f" or ({batch}, {per_head}, {n})" if per_head is not None else "")
    check_tensor("pos", pos, f"{shapes} of integer positions", kind="int")
    expected = {1: (n,), 2: (batch, n), 3: (batch, per_head, n) if per_head is not None else None}
    if pos.dim() not in expected or tuple(pos.shape) != expected[pos.dim()]:
        raise ValueError(f"pos: expected an integer tensor of shape {shapes}, got {tuple(pos.shape)}")
    if pos.dim() > 1 and shared_only:
        raise ValueError(f"pos: per-row positions {tuple(pos.shape)} work with {', '.join(per_row) or 'none'}; "
                         f"{', '.join(shared_only)} take only ({n},), the same positions for every row")


def per_row_angles(angles: Tensor) -> Tensor:
    """Rotary angles of per-row positions `(k, b, n, r)` -> `(k, b, 1, n, r)`, broadcast over the heads."""
    return angles[:, :, None] if angles.dim() == 4 else angles
