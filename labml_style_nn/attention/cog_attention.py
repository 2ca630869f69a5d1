r"""
# Cog attention: attention with negative weights

*Paper:* [More Expressive Attention with Negative Weights](https://arxiv.org/abs/2411.07176)
(Lv et al., 2024)

Softmax weights are positive, so a head can only *add* values: to remove a token's information it
must put its weight elsewhere.  Cog attention lets weights be negative.  It normalises the
magnitudes of the scores and gives each weight the sign of its score:

$$A_{ij} = \operatorname{sign}(S_{ij})\, \operatorname{softmax}_j\big(|S_{ij}|\big).$$

A strongly negative score now gives a strongly *negative* weight (the head subtracts that value)
instead of a weight near zero; the weights' absolute values still sum to one, so the output stays
bounded.  The paper finds that a head can then both copy and delete, which reduces
"over-squashing", and keeps softmax in the first and last layers (here every layer gets it).

The sign is taken before the mask and the absolute value is what the softmax sees; a hidden key
gets the most negative finite value after that, so its weight is zero.  With a
[learned sink](learned_sink.md) the sink's logit enters as its absolute value too.

The technique is a `score_transform` (`pre_softmax` takes the sign, `post_softmax` puts it back):
layers with it take the explicit path of [attention](attention.md).

A worked example: scores $(2, -2, 0)$ give $|S| = (2, 2, 0)$, softmax $(0.47, 0.47, 0.06)$ and
weights $(0.47, -0.47, 0)$ (the sign of 0 is 0).

`attn_cog_signed=True`.  Tests: `tests/attention/test_attn_scoring.py`.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

* Every layer uses it; the paper keeps softmax attention in the first and last layers.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..keywords import Keyword, declare
from .extension_points import ScoreTransform

KEYWORDS = declare(__name__, "attn",
    Keyword("cog_signed", False, "negative weights: A = sign(S) softmax(|S|)"))


class CogSigned(ScoreTransform):
    r"""Score transform: the softmax of $|S|$, then the sign of $S$ on each weight.

    >>> import torch
    >>> cog = CogSigned()
    >>> w = cog.post_softmax(cog.pre_softmax(torch.tensor([2.0, -2.0, 0.0]), None).softmax(-1))
    >>> [round(x, 2) for x in w.tolist()]
    [0.47, -0.47, 0.0]
    """

    def __init__(self):
        super().__init__()
        self._sign: Optional[Tensor] = None

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        # Kept for `post_softmax` of the same forward pass.
        self._sign = scores.sign()
        # $|S_{ij}|$
        return scores.abs()

    def post_softmax(self, weights: Tensor) -> Tensor:
        sign, self._sign = self._sign, None
        # $A_{ij} = \operatorname{sign}(S_{ij})\, \operatorname{softmax}_j(|S_{ij}|)$
        return weights if sign is None else weights * sign
