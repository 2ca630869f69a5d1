r"""
# Talking-heads attention

*Paper:* [Talking-Heads Attention](https://arxiv.org/abs/2003.02436) (Shazeer et al., 2020)

In multi-head attention the heads never exchange information until the output projection: each
head computes its pattern from its own query and key alone.  Talking heads adds two learned
$h \times h$ mixing matrices, one across the heads' scores before the softmax and one across the
heads' weights after it:

$$S'_{gij} = \sum_h P^{\text{pre}}_{hg} S_{hij}, \qquad A_{gij} = \operatorname{softmax}_j(S')_{gij},
\qquad A'_{gij} = \sum_h P^{\text{post}}_{hg} A_{hij}, \qquad o_{gi} = \sum_j A'_{gij} v_{gj}.$$

Each head's pattern can then borrow from the others', so one head can, for example, combine a
positional and a content-based pattern.  The mixing is across heads only, never across positions:
a key that is masked for every head stays masked, and causality holds.  After the post-softmax
mixing the rows of $A'$ need not sum to one (the weights of $P^{\text{post}}$ are free).

The cost is two mixes of the $h \times n \times n$ score tensor, each $h^2 n^2$ multiply-adds per
sequence ($h$ for each of its $h n^2$ entries), against $h n^2 d$ for the scores $q^\top k$
themselves: with 8 heads of 64 dimensions the two mixes add a quarter of that arithmetic
($2 \cdot 8 / 64$), and more as heads get narrower.  The fused attention kernel can no longer be
used either: layers with `attn_talking_heads=True` take the explicit path.

Both matrices start as the identity, so at initialisation the layer is exactly plain attention (a
test checks this, and another compares a random mixing against a reference written in the test).

It plugs into the `score_transform` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_talking_heads_identity_equals_plain_attention` and `test_talking_heads_matches_reference` in `tests/attention/test_attn_properties.py`.

Shapes: `b` batch, `h`/`g` heads before/after mixing, `i` queries, `j` keys.

## Differences from the paper

* The paper allows different numbers of heads for the scores, the softmax and the values
  ($h_k$, $h$, $h_v$); we keep one number $h$ throughout, as x-transformers' keyword does.
* Both matrices start from the identity (a choice of this library), so that turning the feature on
  does not change an initialised model; training moves them away from it.
* Attention dropout is applied to the mixed weights $A'$.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare
from .extension_points import ScoreTransform

KEYWORDS = declare(__name__, "attn",
    Keyword("talking_heads", False, "mix the heads' scores before and after the softmax", xtransformers=False))


def mix_heads(t: Tensor, mixing: Tensor) -> Tensor:
    r"""$T'_{gij} = \sum_h P_{hg} T_{hij}$ for `t` `(b, h, i, j)` and `mixing` $P$ `(h, g)`.

    A mix across heads at every $(i, j)$ is a $1 \times 1$ convolution with heads as channels;
    `conv2d` runs it without the permute and copy that an `einsum` needs here (3x faster on the CPU).

    Two heads whose score at some $(i, j)$ is 1 and 10: with $P = \begin{pmatrix} 1 & 0.5 \\ 0 & 0.5 \end{pmatrix}$
    the new head 1 keeps head 1's score, the new head 2 averages both, $0.5 \cdot 1 + 0.5 \cdot 10$.

    >>> mix_heads(torch.tensor([[[[1.0]], [[10.0]]]]), torch.tensor([[1.0, 0.5], [0.0, 0.5]])).flatten().tolist()
    [1.0, 5.5]
    """
    return F.conv2d(t, mixing.t().to(t.dtype)[:, :, None, None])  # (b, g, i, j)


class TalkingHeads(ScoreTransform):
    """Learned mixing across heads before and after the softmax.

    Args:
        heads: number of heads $h$.
    """

    def __init__(self, heads: int):
        super().__init__()
        self.pre = nn.Parameter(torch.eye(heads))  # $P^{\text{pre}}$, (h, g)
        self.post = nn.Parameter(torch.eye(heads))  # $P^{\text{post}}$, (h, g)

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        """Mix the scores `(b, h, i, j)` across heads; masking comes after, in the attention module."""
        # $S'_{gij} = \sum_h P^{\text{pre}}_{hg} S_{hij}$
        return mix_heads(scores, self.pre)  # (b, g, i, j)

    def post_softmax(self, weights: Tensor) -> Tensor:
        """Mix the weights `(b, h, i, j)` across heads."""
        # $A'_{gij} = \sum_h P^{\text{post}}_{hg} A_{hij}$
        return mix_heads(weights, self.post)  # (b, g, i, j)
