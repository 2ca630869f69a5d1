r"""
# T5 relative position bias

*Paper:* [Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer](https://arxiv.org/abs/1910.10683) (Raffel et al., 2020)

T5 gives attention its sense of order with one learned scalar per head for each *bucket* of relative
distances, added to the scores before the softmax:

$$S_{hij} = \frac{q_i^\top k_j}{\sqrt{d}} + b_{h,\,\beta(i - j)}$$

Whether a key is 1 or 2 tokens away matters a lot; whether it is 100 or 101 tokens away hardly
matters.  So nearby distances get a bucket each and far distances share logarithmically wider
buckets, and from about `max_distance` on everything falls into the last bucket.  The bias
depends only on $i - j$, so it is defined for any sequence length, and it has just
`num_buckets` $\times h$ parameters.  One table is shared by all layers; the stack computes the
`(1, h, i, j)` bias once per forward pass and hands it to every self-attention layer through the
attention module's `attn_bias` [extension point](../attention/extension_points.md), the point
[ALiBi](alibi.md) uses with a fixed bias instead of a learned one.  In the terms of
[relative attention](../transformer_xl/relative_mha.md), the bias is a learned term (d) with no
content-position term (b).  The [feedback transformer](../feedback/feedback_transformer.md) uses it
too.  Tests: `tests/positional/test_pos_t5_bias.py` (exact and logarithmic ranges, monotone
buckets, a table lookup per head), and a comparison with Hugging Face `transformers` over every
distance up to 600.

Shapes: `h` heads, `i` query positions, `j` key positions.

## The bucket function

Write $\delta = i - j$, positive for keys behind the query.  A causal model only looks back, so all
$B$ buckets describe $\delta \ge 0$ (keys ahead are masked anyway; they share bucket 0).  A
bidirectional model spends half of them on keys behind and half, offset by $B/2$, on keys ahead.
Within a direction with $B'$ buckets, the first $B'/2$ distances are exact and the rest are spread
logarithmically between $B'/2$ and the maximum distance $D$:

$$\beta(\delta) = \begin{cases} \delta & \delta < B'/2 \\
\min\left(B' - 1,\ \frac{B'}{2} + \left\lfloor \frac{\log(2\delta / B')}{\log(2 D / B')} \cdot \frac{B'}{2} \right\rfloor \right) & \text{otherwise} \end{cases}$$

With $B = 32$, $D = 128$ (the defaults), the function gives, exactly:

| model | exact buckets | logarithmic buckets | the last bucket |
|---|---|---|---|
| decoder, keys behind | 0..15 for $\delta$ = 0..15 | 16..30 for 16..112 (16-18, 19-20, 21-23, ..., 99-112) | 31 for every $\delta \ge 113$ |
| encoder, keys behind | 0..7 for $\delta$ = 0..7 | 8..14 for 8..90 (8-11, 12-15, 16-22, ..., 64-90) | 15 for $\delta \ge 91$ |
| encoder, keys ahead | 17..23 for $-\delta$ = 1..7 | 24..30 for 8..90 | 31 for $-\delta \ge 91$ |

The last bucket starts before $D$: the floor reaches $B' - 1$ once
$\log(2\delta/B') / \log(2D/B') \ge 1 - 2/B'$, at $\delta = 113$ for $B' = 32$; $D$ is where the
unclipped formula would reach $B'$.  In the encoder, distance 0 falls in bucket 0 (the "behind"
half), so bucket 16 is never used.

![T5 buckets for distances 0-200](../../docs/figures/t5_buckets.png)

*Drawn by `python docs/figures/make_figures.py` from `relative_position_bucket`.*

## Conventions, and T5 exactly

T5 keeps one table per stack (in its first layer) and every self-attention layer of the stack adds
the same bias; cross-attention gets none.  The keyword API does the same: one table per stack
(`rel_pos_bias=True`), so an encoder-decoder (`XTransformer`) has one in its encoder, with
bidirectional buckets, and one in its decoder, with causal buckets.  The bucket function above is
T5's (a test compares it with Hugging Face `transformers` over every distance up to 600).

T5 does not scale the scores by $1/\sqrt d$ (it folds the scale into the initialisation of $W_Q$)
and adds the bias to the unscaled logits, $S_{hij} = q_i^\top k_j + b_{h,\beta(i - j)}$.  The bias is
always added after the scale, so `attn_scale=1.0` gives exactly T5's scores (see
[the converted T5](../pretrained/t5.md)).

## Differences from the paper

* By default the scores keep the usual $1/\sqrt d$ scaling and the bias is added after it;
  `attn_scale=1.0` is T5's unscaled version.
* Settings with no logarithmic range ($D \le B'/2$) divide by $\log 1 = 0$ in the formula; we refuse
  them instead of producing garbage buckets.

## Evidence

* Measured: trained like x-transformers 2.31 under one recipe, with its initial weights copied in, the
  T5-biased decoder ends where x-transformers' does (2.798 against 2.800 bpc); from their own
  initialisations the two libraries differ by less than the spread between seeds (3.137 ± 0.068 against
  2.994 ± 0.238 over three seeds) ([results](../../docs/results.md#training-parity-with-x-transformers)).
  As the positions of a Transformer-XL, the bias is *hurt* by a memory at 1,500 steps: 3.340 bpc
  with a memory of 64 against 2.965 without, 0.38 worse, where the paper's relative attention gains
  0.23 from the same memory ([results](../../docs/results.md#transformer-xl-recurrence)).
* Invariant: the bias is one learned scalar per head and bucket, looked up by distance,
  `test_bias_is_a_table_lookup_per_head` in `tests/positional/test_pos_t5_bias.py`; the buckets are
  monotone in distance (`test_buckets_are_monotone_in_distance`).
"""

import math

import torch
from torch import Tensor, nn

from ..checks import check_positions
from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("rel_pos_bias", False, "T5's learned relative position bias on the scores"),
    Keyword("rel_pos_num_buckets", 32, "T5 bias: number of distance buckets", example=16),
    Keyword("rel_pos_max_distance", 128, "T5 bias: distance beyond which buckets stop growing", example=64))


def relative_position_bucket(relative_position: Tensor, causal: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    r"""Bucket $\beta(\delta)$ of each relative position, given as $j - i = -\delta$ (same shape, integer).

    The argument is $j - i$, as in T5's code; the function negates it first, so the buckets are those
    of $\delta = i - j$ in the formula above.

    >>> rp = torch.tensor([0, -1, -7, -8, -20, -1000, 3])
    >>> relative_position_bucket(rp, causal=True, num_buckets=16, max_distance=64).tolist()
    [0, 1, 7, 8, 11, 15, 0]
    >>> relative_position_bucket(torch.tensor([-1, 1, -500, 500]), causal=False, num_buckets=16).tolist()
    [1, 9, 7, 15]
    """
    distance = -relative_position  # $\delta = i - j$: positive for keys behind
    if causal:
        offset = torch.zeros_like(distance)
        distance = distance.clamp(min=0)
    else:
        # Half the buckets for keys behind, the other half (offset by $B/2$) for keys ahead.
        num_buckets //= 2
        offset = (distance < 0).long() * num_buckets
        distance = distance.abs()
    exact = num_buckets // 2
    # $\frac{B'}{2} + \lfloor \log(\delta / \tfrac{B'}{2}) / \log(D / \tfrac{B'}{2}) \cdot \tfrac{B'}{2} \rfloor$,
    # capped at the last bucket; the clamp keeps $\log$ finite where the exact branch is taken.
    log_ratio = torch.log(distance.float().clamp(min=exact) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return offset + torch.where(distance < exact, distance, large)


class T5RelativePositionBias(nn.Module):
    r"""A learned `(num_buckets, heads)` table turned into a `(1, heads, i, j)` score bias.

    Args:
        heads: number of attention heads $h$.
        causal: one-directional buckets (decoders) or two-directional (encoders).
        num_buckets: $B$, `rel_pos_num_buckets`.
        max_distance: $D$, `rel_pos_max_distance`; farther keys share the last bucket.
    """

    def __init__(self, heads: int, causal: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        per_direction = num_buckets if causal else num_buckets // 2
        if per_direction < 2:
            raise ValueError(f"rel_pos_num_buckets: expected at least {2 if causal else 4} "
                             f"({'causal' if causal else 'bidirectional'} buckets), got {num_buckets}")
        if max_distance <= per_direction // 2:
            raise ValueError(f"rel_pos_max_distance: expected more than {per_direction // 2}, the distances "
                             f"that {num_buckets} buckets already cover exactly, got {max_distance}")
        self.causal, self.num_buckets, self.max_distance = causal, num_buckets, max_distance
        self.bias = nn.Embedding(num_buckets, heads)

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """The bias between query positions `(i,)` and key positions `(j,)`."""
        check_positions("q_pos", q_pos)
        check_positions("k_pos", k_pos)
        rel = k_pos[None, :] - q_pos[:, None]  # $j - i = -\delta$, (i, j)
        buckets = relative_position_bucket(rel, self.causal, self.num_buckets, self.max_distance)
        # $b_{h, \beta(\delta)}$ with $\delta = i - j$
        return self.bias(buckets).permute(2, 0, 1)[None]  # (1, h, i, j)
