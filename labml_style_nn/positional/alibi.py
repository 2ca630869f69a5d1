r"""
# ALiBi: attention with linear biases

*Paper:* [Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation](https://arxiv.org/abs/2108.12409) (Press et al., 2021)

ALiBi adds no position embedding at all.  Instead, each head penalises a score in proportion to the
distance between query and key:

$$S_{hij} = \frac{q_i^\top k_j}{\sqrt{d}} - m_h\,|i - j|$$

The slopes $m_h$ are fixed, a geometric sequence: with 8 heads, $m = \tfrac{1}{2}, \tfrac{1}{4},
\dots, \tfrac{1}{256}$.  Heads with steep slopes look locally, heads with gentle slopes look far.

A model trained on short sequences keeps working on longer ones, the paper's main result.  Being
*defined* at any distance is not what buys this: rotary angles are defined at any distance too, and
a rotary model degrades past its training length.  The reason is the shape of the penalty: it
grows monotonically with distance, so every key farther away than those seen in training gets a
*lower bias* than all of them.  Its weight still depends on $q_i^\top k_j$ too, and how much the bias
holds it down depends on the head: at slope $\tfrac12$ a key 64 tokens further back loses 32 in
score, while at slope $\tfrac{1}{256}$ a key 256 tokens back loses only 1, less than content scores
commonly differ.  The steep heads thus see nothing new in a longer context, and only the gentle
ones can be changed by it: the likely reason a longer context changes the model's output little.  Our
[measurement](../../docs/results.md#alibi-extrapolation) (two layers, trained on 64-byte windows):
ALiBi scores 3.043, 3.032 and 3.045 bits per byte on windows of 64, 128 and 256 bytes; rotary,
better at the training length, 2.835, 2.933 and 3.363 (`experiments/alibi_extrapolation.py`).

## A worked example: four tokens, slope 1/2

For a decoder, head 1 of 8 ($m = \tfrac12$) adds $-\tfrac12 (i - j)$ to the score of query $i$ and
key $j \le i$.  With all content scores equal, the softmax of the bias alone is the head's prior:
query 3 gives its four keys $e^{-1.5}, e^{-1}, e^{-0.5}, e^{0}$, normalised,
$0.10, 0.17, 0.28, 0.46$: recency, without a single learned parameter.

$$B = -\frac12 \begin{bmatrix} 0 & & & \\ 1 & 0 & & \\ 2 & 1 & 0 & \\ 3 & 2 & 1 & 0 \end{bmatrix}
= \begin{bmatrix} 0 & & & \\ -0.5 & 0 & & \\ -1 & -0.5 & 0 & \\ -1.5 & -1 & -0.5 & 0 \end{bmatrix}$$

![ALiBi's bias for four tokens at slope 1/2, and the attention it alone gives](../../docs/figures/alibi_bias.png)

*Drawn by `python docs/figures/make_figures.py` from `AlibiPositionalBias`; the empty cells are the
causal mask.  The [attention notebook](../../notebooks/attention_patterns.ipynb) shows the prior of
every head at 64 tokens and what a trained model does against it.*

The stack computes the `(1, h, i, j)` bias once per forward pass and every self-attention layer
adds it to its scores through the `attn_bias` extension point of
[attention](../attention/extension_points.md); attention itself is unchanged.  The other biases on
that point are [T5's learned buckets](t5_bias.md) and, in Transformer-XL,
[relative attention](../transformer_xl/relative_mha.md)'s terms (b) and (d); [rotary](rotary.md) uses
the other point, a transform of queries and keys.  Tests: `tests/positional/test_pos_alibi.py`
(the paper's slopes for any head count, the bias formula, cache offsets).

Shapes: `h` heads, `i` query positions, `j` key positions.

## Slopes for any number of heads

For $n$ heads, a power of two, the slopes are $m_h = 2^{-8h/n}$ for $h = 1 \dots n$.  Otherwise the
paper takes the $2^{\lfloor \log_2 n \rfloor}$ slopes of the closest smaller power of two and fills
up with every other slope of the next power of two.

## Differences from the paper

* The paper's model has no absolute positions.  As in x-transformers, `TransformerWrapper` keeps its
  learned absolute positions beside ALiBi unless told otherwise, so a model built with x-transformers'
  keywords is the same function (tested with copied weights); `disable_abs_pos_emb=True` (or the
  wrapper's `use_abs_pos_emb=False`) gives the paper's model, and is what the extrapolation experiment
  uses: a learned table is defined only up to `max_seq_len`.

* The paper is about causal language models, where $j \le i$ and the distance is $i - j$.  For
  encoders we use the symmetric distance $|i - j|$, so a key ahead is penalised as much as a key
  behind.
* `rel_pos_kwargs=dict(slopes=[...])` replaces the paper's slopes by your own, one per ALiBi head (as
  x-transformers' keyword does; for the T5 and dynamic biases it takes no options, since every
  option x-transformers would forward there is already a keyword of its own).
* `alibi_num_heads = k` gives the bias only to the first $k$ heads (with the slopes of a $k$-head
  model); the other heads carry no positional bias and can attend to any distance.

## Evidence

* Measured: trained on 64-byte windows, ALiBi's bits per byte stay flat at 2 and 4 times that length
  (3.043 at 64, 3.032 at 128, 3.045 at 256) while rotary's rise by 0.53
  ([results](../../docs/results.md#alibi-extrapolation), `experiments/alibi_extrapolation.py`, one seed).
* Invariant: the bias is $-m_h (i - j)$ on the first $k$ heads only,
  `test_bias_is_minus_slope_times_distance_and_only_on_the_first_k_heads` in
  `tests/positional/test_pos_alibi.py`; the slopes are the paper's for any head count
  (`test_slopes_match_the_paper_for_any_head_count`).
"""

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_positions
from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("alibi_pos_emb", False, "ALiBi: a linear distance penalty per head on the scores", xtransformers=False),
    Keyword("alibi_num_heads", None, "ALiBi on the first k heads only (the others have no position bias)", type=int,
            example=2),
    Keyword("rel_pos_kwargs", {}, "options of the position bias: for ALiBi, slopes=[m_1, ...] (one per ALiBi "
            "head); the T5 and dynamic biases take none", example={"slopes": [0.5, 0.25, 0.125, 0.0625]}))


def alibi_slopes(heads: int) -> list[float]:
    r"""The paper's slopes $m_h$.

    >>> alibi_slopes(8)
    [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]
    >>> alibi_slopes(6)   # 4 slopes of a 4-head model, then slopes 1 and 3 of an 8-head model
    [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]
    """
    def power_of_two(n):
        # $m_h = \left(2^{-8/n}\right)^h$
        start = 2 ** (-8 / n)
        return [start ** h for h in range(1, n + 1)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]


class AlibiPositionalBias(nn.Module):
    """Builds the `(1, heads, i, j)` ALiBi bias for given query and key positions."""

    slopes: Tensor  # buffer `(h, 1, 1)`

    def __init__(self, heads: int, alibi_heads: int | None = None, slopes: Optional[Sequence[float]] = None):
        super().__init__()
        alibi_heads = heads if alibi_heads is None else alibi_heads
        self.alibi_heads = alibi_heads
        if slopes is not None and len(slopes) != alibi_heads:
            raise ValueError(f"rel_pos_kwargs: slopes must give one slope per ALiBi head ({alibi_heads}), "
                             f"got {len(slopes)}")
        # Slopes for the first `alibi_heads` heads (the paper's, or the given ones), zero for the rest.
        given = alibi_slopes(alibi_heads) if slopes is None else [float(m) for m in slopes]
        table = torch.tensor(given + [0.0] * (heads - alibi_heads))
        self.register_buffer("slopes", table[:, None, None], persistent=False)  # (h, 1, 1)

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """The bias between query positions `(i,)` and key positions `(j,)`, e.g. a cache's: `(1, h, i, j)`.

        Per-row positions `(b, i)` and `(b, j)` give `(b, h, i, j)`; positions per row and ALiBi head
        `(b, k, i)` and `(b, k, j)` too, the heads past the first $k$ without bias
        ([custom positions](custom_positions.md)).
        """
        if q_pos.dim() == 1:
            check_positions("q_pos", q_pos)
            check_positions("k_pos", k_pos)
        # $-m_h |i - j|$; for a decoder's visible keys $|i - j| = i - j$, the paper's distance.
        # The paper's code adds $m_h\, j$ instead: it differs from $-m_h (i - j)$ by $m_h\, i$, the
        # same for every key of row $i$, and softmax ignores a per-row constant, so the weights agree.
        dist = (q_pos[..., :, None] - k_pos[..., None, :]).abs().float()  # (i, j), (b, i, j) or (b, k, i, j)
        if dist.dim() < 4:
            return (-self.slopes * dist)[None] if dist.dim() == 2 else -self.slopes * dist[:, None]  # (1|b, h, i, j)
        # $-m_h |p_{bhi} - p_{bhj}|$ on the first $k$ heads, no bias on the others
        k = dist.shape[1]
        return F.pad(-self.slopes[:k] * dist, (0, 0, 0, 0, 0, self.slopes.shape[0] - k))  # (b, h, i, j)


@rule("stack")
def _rel_pos_kwargs(o) -> None:
    kw = o.rel_pos_kwargs
    if not isinstance(kw, dict) or not kw:
        return
    accepted = ("slopes",) if o.alibi_pos_emb else ()
    scheme = "alibi_pos_emb" if o.alibi_pos_emb else "rel_pos_bias" if o.rel_pos_bias \
        else "dynamic_pos_bias" if o.dynamic_pos_bias else None
    if scheme is None:
        raise ValueError("rel_pos_kwargs: options of a position bias, but this stack has none (set alibi_pos_emb, "
                         "rel_pos_bias or dynamic_pos_bias)")
    extra = sorted(set(kw) - set(accepted))
    if extra:
        raise ValueError(f"rel_pos_kwargs: {scheme} takes {', '.join(accepted) or 'no options'} here, got "
                         f"{', '.join(map(repr, extra))}")
    slopes = kw.get("slopes")
    if slopes is not None and (not isinstance(slopes, (list, tuple))
                               or any(isinstance(m, bool) or not isinstance(m, (int, float)) for m in slopes)):
        raise ValueError(f"rel_pos_kwargs: slopes must be a list of numbers, got {slopes!r}")
