r"""
# Query-key normalisation

*Paper:* [Query-Key Normalization for Transformers](https://arxiv.org/abs/2010.04245) (Henry et al., 2020)

Dot-product scores grow with the norms of queries and keys, and a few large scores can saturate the
softmax (or overflow in half precision).  QK-norm $\ell_2$-normalises every query and key along the
head dimension, so each score is a cosine similarity, and multiplies by a learned temperature $g$
instead of the fixed $1/\sqrt d$:

$$S_{ij} = g \cdot \frac{q_i^\top k_j}{\lVert q_i \rVert\,\lVert k_j \rVert} \in [-|g|, |g|].$$

The scores are bounded by the temperature (a test checks it).  The paper initialises
$g = \log_2(L^2 - L)$ for training sequences of length $L$, large enough that the softmax can still
be peaked; with the seeds' `qk_norm_attn_seq_len = 1024` that is about 20.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim.

## Differences from the paper

When no sequence length is given we initialise $g$ as for $L = 1024$.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn, Tensor


def initial_temperature(seq_len: int) -> float:
    r"""The paper's initial temperature $\log_2(L^2 - L)$.

    >>> round(initial_temperature(1024), 3)
    19.999
    """
    return math.log2(seq_len ** 2 - seq_len)


class QKNorm(nn.Module):
    """Transform of queries and keys: unit length, with a learned temperature on the queries."""

    def __init__(self, seq_len: int | None = None):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(initial_temperature(seq_len or 1024)))

    def queries(self, q: Tensor) -> Tensor:
        # $g \, q / \lVert q \rVert$; the attention module then uses scale 1
        return F.normalize(q, dim=-1) * self.temperature.to(q.dtype)

    def keys(self, k: Tensor) -> Tensor:
        return F.normalize(k, dim=-1)
