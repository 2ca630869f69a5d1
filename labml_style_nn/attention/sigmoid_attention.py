r"""
# Sigmoid attention

*Paper:* [Theory, Analysis, and Best Practices for Sigmoid Self-Attention](https://arxiv.org/abs/2409.04431)
(Ramapuram et al., 2024)

Softmax makes the keys of a row compete: their weights sum to one, so giving weight to one key takes
it from the others.  Sigmoid attention scores every key on its own,

$$A_{ij} = \sigma(S_{ij}) = \frac{1}{1 + e^{-S_{ij}}}, \qquad o_i = \sum_j A_{ij} v_j,$$

so a query may attend strongly to several keys at once, or to none.  The paper proves sigmoid
attention is a universal approximator like softmax attention, and finds it trains as well once
the scores start small: it adds a bias $b = -\log n$ so that the $n$ weights of a row start near
$1/n$ each, the mass softmax would give them.

A hidden key's score is the most negative finite number, $\sigma$ of which is exactly 0, so masks
need nothing special.  Sigmoid has no fused kernel in PyTorch, so a layer with it takes the
explicit path of [attention](attention.md) (it is a `normaliser`).

A worked example: the scores $(2, 0, -2)$ give softmax weights $(0.87, 0.12, 0.02)$, summing to
one, and sigmoid weights $(0.88, 0.5, 0.12)$, summing to 1.5.

`attn_sigmoid=True`.  Tests: `tests/attention/test_attn_scoring.py`.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

* No $-\log n$ bias (x-transformers adds none either); a layer that wants it can learn it through
  its projections or use ALiBi's bias.
* The paper's fast kernel (FlashSigmoid) is not used: the explicit path computes the weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("sigmoid", False, "weights sigma(S_ij), each key scored on its own instead of a softmax"))


class SigmoidNormaliser(nn.Module):
    r"""$A_{ij} = \sigma(S_{ij})$ over `(b, h, i, j)` scores, computed in float32.

    >>> SigmoidNormaliser()(torch.tensor([2.0, 0.0, -2.0])).tolist()
    [0.8807970285415649, 0.5, 0.11920291930437088]
    """

    def forward(self, scores: Tensor) -> Tensor:
        return torch.sigmoid(scores.float()).to(scores.dtype)


# The keywords that each replace the softmax; a layer has one normaliser.
NORMALISERS = ("sigmoid", "gumbel_softmax", "hard", "sparse_topk", "use_entmax15", "inverted_attention")


@rule("attn")
def _one_normaliser(a, prefix: str, layers) -> None:
    chosen = [name for name in NORMALISERS if getattr(a, name)]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(prefix + n for n in chosen)} each replace the softmax; choose one")
