r"""
# L2-distance attention (Lipschitz self-attention)

*Paper:* [The Lipschitz Constant of Self-Attention](https://arxiv.org/abs/2006.04710)
(Kim, Papamakarios and Mnih, 2021)

Dot-product self-attention is not Lipschitz: with $q = k = x W$, the score $x_i^\top W W^\top x_j$
grows quadratically with the inputs, and the paper shows no bound on how fast the output can change
with the input.  Scoring keys by their negative squared distance to the query instead,

$$S_{ij} = -\frac{\lVert q_i - k_j \rVert^2}{\sqrt d},$$

makes self-attention Lipschitz (with tied query and key projections, which this library does not
impose), and gives a bound on the constant.  Such attention layers can be inverted or used in
normalising flows, where a Lipschitz bound is what makes the layer invertible.

Expanding the square shows the difference from dot-product scores:
$-\lVert q - k\rVert^2 = 2 q^\top k - \lVert q\rVert^2 - \lVert k\rVert^2$.  The query's own norm is
the same along a row and a softmax ignores it; the key's norm penalises keys that are far from the
origin.  The expansion also lets the fused kernel compute it: with two extra features,

$$q' = \big(2q,\ -\lVert q\rVert^2,\ -1\big), \qquad k' = \big(k,\ 1,\ \lVert k\rVert^2\big), \qquad
q'^\top k' = -\lVert q - k\rVert^2,$$

a plain dot product of the widened queries and keys is the distance score.  So this technique is a
`qk_transform` of [attention](attention.md) (applied after rotary positions, before the cache), and
layers with it keep the fused path; the cache holds the widened keys ($d + 2$ features).

A worked example: $q = (1, 0)$ and keys $k_1 = (1, 0)$, $k_2 = (0, 0)$, $k_3 = (3, 0)$, $d = 2$:
dot-product scores are $(0.71, 0, 2.12)$ and favour the distant $k_3$; distance scores are
$(0, -0.71, -2.83)$ and favour the key equal to the query.

`attn_l2_distance=True`.  Tests: `tests/attention/test_attn_scoring.py` (the widened dot product
equals the distance, parity with x-transformers, fused equals explicit).

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim.

## Differences from the paper

* The query and key projections are separate (the paper ties them, $W^Q = W^K$, for the Lipschitz
  bound), as in x-transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("l2_distance", False, "scores -|q - k|^2 / sqrt(d) instead of q.k / sqrt(d)"))


class L2DistanceQK(nn.Module):
    r"""`qk_transform`: widen $q$ and $k$ by two features so that $q'^\top k' = -\lVert q - k\rVert^2$.

    >>> t = L2DistanceQK()
    >>> q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    >>> (t.queries(q) @ t.keys(k).T).tolist()
    [[0.0, -1.0, -4.0]]
    """

    def queries(self, q: Tensor) -> Tensor:
        # $q' = (2q, -\lVert q\rVert^2, -1)$
        norm_sq = q.square().sum(dim=-1, keepdim=True)
        return F.pad(torch.cat((2 * q, -norm_sq), dim=-1), (0, 1), value=-1.0)  # (..., d + 2)

    def keys(self, k: Tensor) -> Tensor:
        # $k' = (k, 1, \lVert k\rVert^2)$
        norm_sq = k.square().sum(dim=-1, keepdim=True)
        return torch.cat((F.pad(k, (0, 1), value=1.0), norm_sq), dim=-1)  # (..., d + 2)


@rule("attn")
def _not_with_qk_norm(a, prefix: str, layers) -> None:
    if a.l2_distance and a.qk_norm:
        raise ValueError(f"{prefix}l2_distance and {prefix}qk_norm both transform the queries and keys; choose one")
