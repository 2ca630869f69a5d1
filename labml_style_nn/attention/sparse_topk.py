r"""
# Explicit sparse attention: keep the top-$k$ scores

*Paper:* [Explicit Sparse Transformer: Concentrated Attention Through Explicit Selection](https://arxiv.org/abs/1912.11637) (Zhao et al., 2019)

Softmax gives every key some weight, so a long sequence spreads attention thinly over many
irrelevant tokens.  Explicit sparse attention keeps, for each query, only the $k$ largest scores
and gives every other key no weight at all:

$$A_{ij} = \operatorname{softmax}_j\big(\mathcal{M}(S)_{ij}\big), \qquad
\mathcal{M}(S)_{ij} = \begin{cases} S_{ij} & S_{ij} \ge t_i \\ -\infty & \text{otherwise}\end{cases}$$

where $t_i$ is the $k$-th largest score of row $i$.  The paper recommends $k = 8$.

The selection happens **after** masking: a key that is masked (padding, the future) never takes one
of the $k$ places.  When fewer than $k$ keys are visible, all visible keys keep their scores.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

Ties with the $k$-th score are all kept (with random real-valued scores they do not occur).
"""

from typing import Optional

import torch
from torch import Tensor

from .attention import ScoreTransform, masked_fill_value


class SparseTopK(ScoreTransform):
    """Score transform that keeps the `k` largest visible scores of every query."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        fill = masked_fill_value(scores.dtype)
        if visible is not None:
            scores = scores.masked_fill(~visible, fill)
        if self.k >= scores.shape[-1]:
            return scores
        # $t_i$: the $k$-th largest score of each row
        threshold = scores.topk(self.k, dim=-1).values[..., -1:]  # (b, h, i, 1)
        return scores.masked_fill(scores < threshold, fill)
