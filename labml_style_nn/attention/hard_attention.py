r"""
# Hard attention with a straight-through gradient

*Paper:* [Estimating or Propagating Gradients Through Stochastic Neurons for Conditional
Computation](https://arxiv.org/abs/1308.3432) (Bengio, Léonard and Courville, 2013): the
straight-through estimator

Hard attention lets each query read exactly one value, the one of its highest-scoring key.  Its
weights are

$$A^{\text{hard}}_{ij} = [\, j = \arg\max_{j'} S_{ij'} \,].$$

The argmax has no useful gradient (zero almost everywhere), so the backward pass pretends the
forward pass computed the softmax instead: the straight-through estimator,

$$A_{ij} = A^{\text{hard}}_{ij} + \operatorname{softmax}_j(S_{ij}) - \operatorname{sg}\big[\operatorname{softmax}_j(S_{ij})\big],$$

whose value is $A^{\text{hard}}$ ($\operatorname{sg}$ stops the gradient, the two softmax terms
cancel in value) and whose gradient is the softmax's.  Unlike the
[Gumbel-softmax](gumbel_softmax.md) nothing is sampled: the choice is deterministic.

A hidden key's score is the most negative finite number, so it is never the argmax unless the
whole row is hidden (and such rows give zeros).  The technique is a `normaliser`: layers with it
take the explicit path of [attention](attention.md).

`attn_hard=True`.  Tests: `tests/attention/test_attn_scoring.py` (one-hot forward, the softmax's
gradient backward, parity with x-transformers).

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("hard", False, "one-hot attention on the highest score, with the softmax's gradient"))


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    r"""The value of `hard` with the gradient of `soft`: $h + s - \operatorname{sg}[s]$."""
    return hard + soft - soft.detach()


class HardAttention(nn.Module):
    r"""One-hot weights on each row's highest score; the gradient is the softmax's.

    >>> HardAttention()(torch.tensor([[1.0, 3.0, 2.0]])).tolist()
    [[0.0, 1.0, 0.0]]
    """

    def forward(self, scores: Tensor) -> Tensor:
        # $A^{\text{hard}}_{ij} = [j = \arg\max_{j'} S_{ij'}]$
        one_hot = torch.zeros_like(scores).scatter(-1, scores.argmax(dim=-1, keepdim=True), 1.0)
        return straight_through(one_hot, scores.softmax(dim=-1))
