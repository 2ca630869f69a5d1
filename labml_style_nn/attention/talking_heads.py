r"""
# Talking-heads attention

*Paper:* [Talking-Heads Attention](https://arxiv.org/abs/2003.02436) (Shazeer et al., 2020)

In multi-head attention the heads never exchange information until the output projection.
Talking heads adds two learned $h \times h$ mixing matrices: one mixes the heads' scores before the
softmax, one mixes the heads' weights after it:

$$S'_{gij} = \sum_h P^{\text{pre}}_{hg} S_{hij}, \qquad A'_{gij} = \sum_h P^{\text{post}}_{hg}\,\operatorname{softmax}_j(S')_{hij}$$

Each head's pattern can then borrow from the others.  The cost is two extra passes over the
$h \times n \times n$ score tensor, and the fused attention kernel can no longer be used.

Both matrices start as the identity, so at initialisation the layer is exactly plain attention
(a test checks this).

Shapes: `b` batch, `h`/`g` heads, `i` queries, `j` keys.

## Differences from the paper

The paper allows different numbers of heads for the scores, the softmax and the values; we keep
one number $h$ throughout, as the seeds' keyword does.
"""

from typing import Optional

import torch
from torch import nn, Tensor

from .attention import ScoreTransform


class TalkingHeads(ScoreTransform):
    """Learned mixing across heads before and after the softmax."""

    def __init__(self, heads: int):
        super().__init__()
        self.pre = nn.Parameter(torch.eye(heads))
        self.post = nn.Parameter(torch.eye(heads))

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        # $S'_{gij} = \sum_h P^{\text{pre}}_{hg} S_{hij}$
        return torch.einsum("bhij,hg->bgij", scores, self.pre.to(scores.dtype))

    def post_softmax(self, weights: Tensor) -> Tensor:
        # $A'_{gij} = \sum_h P^{\text{post}}_{hg} A_{hij}$
        return torch.einsum("bhij,hg->bgij", weights, self.post.to(weights.dtype))
