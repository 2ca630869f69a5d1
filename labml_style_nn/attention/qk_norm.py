r"""
# Query-key normalisation

*Paper:* [Query-Key Normalization for Transformers](https://arxiv.org/abs/2010.04245) (Henry et al., 2020)

Dot-product scores grow with the norms of the queries and keys.  A few large scores saturate the
softmax: its gradient vanishes for every other key, and in half precision the scores can overflow.
QK-norm $\ell_2$-normalises every query and key along the head dimension, so that each score is a
cosine similarity, and multiplies by a learned temperature $g$ in place of the fixed $1/\sqrt d$:

$$S_{ij} = g \cdot \frac{q_i^\top k_j}{\lVert q_i \rVert\,\lVert k_j \rVert} \in [-|g|, |g|].$$

The scores are bounded by the temperature, whatever the inputs (a test checks it).  A cosine
similarity alone lies in $[-1, 1]$, far too flat for a softmax over hundreds of keys, hence the
temperature.  The paper initialises it from the training sequence length $L$,

$$g_0 = \log_2(L^2 - L),$$

large enough that a softmax over $L$ keys can still put most of its weight on one; with the x-transformers README's
`qk_norm_attn_seq_len = 1024` that is about 20.  The x-transformers README reports that this initialisation is what
makes the method work as well as dot-product attention for autoregressive models.

The technique plugs into the `qk_transform` extension point: the attention module calls
`queries(q)` and `keys(k)` after the projections (and after rotary embeddings), with its own scale
set to 1 by `models/build.py`.  The temperature multiplies the *queries*, which is the same as
multiplying the scores and keeps the fused kernel in use.  Persistent memory keys are normalised
too, so the bound holds for them; keys stored in a cache were normalised when they were computed.

It plugs into the `qk_transform` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_qk_norm_scores_bounded_by_temperature` and `test_qk_norm_is_cosine_similarity_times_temperature` in `tests/attention/test_attn_properties.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim.

## Differences from the paper

* When no sequence length is given (`use_qk_norm_attn=True` alone) we initialise $g$ as for
  $L = 1024$, the x-transformers README's `max_seq_len`.
* One temperature per layer, shared by its heads, as in the paper.  The bound is on the scores
  $QK^\top$ themselves: a position bias (ALiBi, T5) is added to them, and residual attention sums
  them across layers, so the softmax's input can exceed $|g|$ with those features on.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("qk_norm", False, "l2-normalise queries and keys; a learned temperature replaces 1/sqrt(d)"),
    Keyword("qk_norm_seq_len", None, "qk-norm: the sequence length its temperature is initialised for", type=int,
            example=64, xtransformers=False))


def initial_temperature(seq_len: int) -> float:
    r"""The paper's initial temperature $\log_2(L^2 - L)$, for sequences of length $L \ge 2$.

    >>> round(initial_temperature(1024), 3)
    19.999
    >>> initial_temperature(2)
    1.0
    """
    return math.log2(seq_len ** 2 - seq_len)


class QKNorm(nn.Module):
    """Transform of queries and keys: unit length, with a learned temperature on the queries.

    Args:
        seq_len: the training sequence length $L$ that sets $g_0$ (`None`: 1024).
    """

    def __init__(self, seq_len: int | None = None):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(initial_temperature(seq_len or 1024)))  # $g$

    def queries(self, q: Tensor) -> Tensor:
        r"""`(b, h, n, d)` queries to $g\, q / \lVert q \rVert$."""
        # $g \, q_i / \lVert q_i \rVert$; the attention module then uses scale 1
        return F.normalize(q, dim=-1) * self.temperature.to(q.dtype)  # (b, h, n, d)

    def keys(self, k: Tensor) -> Tensor:
        """`(b, h, j, d)` keys to unit length."""
        # $k_j / \lVert k_j \rVert$
        return F.normalize(k, dim=-1)  # (b, h, j, d)
