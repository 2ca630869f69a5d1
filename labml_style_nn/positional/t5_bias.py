r"""
# T5 relative position bias

*Paper:* [Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer](https://arxiv.org/abs/1910.10683) (Raffel et al., 2020)

T5 learns one scalar per head for each *bucket* of relative distances and adds it to the scores:

$$S_{hij} = \frac{q_i^\top k_j}{\sqrt{d}} + b_{h,\,\beta(j - i)}$$

Nearby distances get a bucket each; far distances share logarithmically wider buckets, up to a
maximum distance after which everything falls in the last bucket.  The same table is shared by all
layers and computed once per forward pass.

Shapes: `h` heads, `i` query positions, `j` key positions.

## The bucket function

With $B$ buckets: a causal model only looks back, so all $B$ buckets describe distances
$\delta = i - j \ge 0$.  A bidirectional model spends half of them on keys ahead and half on keys
behind.  Within a direction, with $B'$ buckets, the first $B'/2$ distances are exact and the rest
are spread logarithmically up to `max_distance`:

$$\beta(\delta) = \begin{cases} \delta & \delta < B'/2 \\
\min\left(B' - 1,\ \frac{B'}{2} + \left\lfloor \frac{\log(2\delta / B')}{\log(2 D / B')} \cdot \frac{B'}{2} \right\rfloor \right) & \text{otherwise} \end{cases}$$

## Differences from the paper

None in the bias itself.  T5 scales no scores by $1/\sqrt d$; we keep the usual scaling and add
the bias after it.
"""

import math

import torch
from torch import nn, Tensor


def relative_position_bucket(relative_position: Tensor, causal: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    r"""Bucket of each relative position $j - i$.

    >>> rp = torch.tensor([0, -1, -7, -8, -20, -1000])
    >>> relative_position_bucket(rp, causal=True, num_buckets=16, max_distance=64).tolist()
    [0, 1, 7, 8, 11, 15]
    >>> relative_position_bucket(torch.tensor([-1, 1]), causal=False, num_buckets=16).tolist()
    [1, 9]
    """
    distance = -relative_position  # $\delta = i - j$: positive for keys behind
    offset = torch.zeros_like(distance)
    if causal:
        distance = distance.clamp(min=0)
    else:
        # Half the buckets for keys ahead ($\delta < 0$), half for keys behind.
        num_buckets //= 2
        offset = (distance < 0).long() * num_buckets
        distance = distance.abs()
    exact = num_buckets // 2
    # Logarithmic buckets beyond the exact range, capped at the last bucket.
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return offset + torch.where(distance < exact, distance, large)


class T5RelativePositionBias(nn.Module):
    """A learned `(num_buckets, heads)` table turned into a `(1, heads, i, j)` score bias."""

    def __init__(self, heads: int, causal: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.causal, self.num_buckets, self.max_distance = causal, num_buckets, max_distance
        self.bias = nn.Embedding(num_buckets, heads)

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        rel = k_pos[None, :] - q_pos[:, None]  # $j - i$, (i, j)
        buckets = relative_position_bucket(rel, self.causal, self.num_buckets, self.max_distance)
        return self.bias(buckets).permute(2, 0, 1)[None]  # (1, h, i, j)
