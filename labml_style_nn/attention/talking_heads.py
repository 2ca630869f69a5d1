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

## x-transformers' three keywords

x-transformers 2.31 spells talking heads as three separate switches, each a $1 \times 1$ convolution
across heads that starts as the identity, and `TalkingHeadsXT` below computes exactly what they do:

* `attn_pre_talking_heads=True` mixes the scaled scores *residually*, before the position bias:
  $S' = S + P^{\text{pre}} S$, then $S' + B$.  Starting from $P^{\text{pre}} = I$, the layer begins
  with doubled scores, a softmax at half the temperature of plain attention.
* `attn_post_talking_heads=True` mixes the weights after the softmax (and after attention dropout),
  $A' = P^{\text{post}} A$, as the paper does.
* `attn_pre_scale_post_talking_heads=True`, an x-transformers improvisation with no paper: a mix of
  the scaled scores, taken before the pre-softmax mixing and the bias, multiplies the weights,
  $A'' = A' \odot (P^{\text{scale}} S)$.  From the identity, each weight starts multiplied by its own
  score, so a row's weights no longer sum to one and can be negative.

Each keyword can be used alone or with the others; `attn_talking_heads=True` (this library's
keyword, above) is kept as it was: the paper's form, mixing after the bias.  A test copies
x-transformers' convolutions into these matrices and gets its logits
(`tests/attention/test_attn_talking_heads_xt.py`).  The one difference: x-transformers applies
attention dropout before its post-softmax mixing, we after.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare
from .extension_points import ScoreTransform

KEYWORDS = declare(__name__, "attn",
    Keyword("talking_heads", False, "mix the heads' scores before and after the softmax", xtransformers=False),
    Keyword("pre_talking_heads", False, "add a mix across heads of the scores to the scores, before the bias"),
    Keyword("post_talking_heads", False, "mix the attention weights across heads after the softmax"),
    Keyword("pre_scale_post_talking_heads", False, "multiply the weights by a mix across heads of the scores"))


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


class TalkingHeadsXT(ScoreTransform):
    r"""x-transformers' talking heads: any of a residual pre-bias mix, a post-softmax mix, a score-made scale.

    Args:
        heads: number of heads $h$.
        pre: $S' = S + P^{\text{pre}} S$ before the bias (`attn_pre_talking_heads`).
        post: $A' = P^{\text{post}} A$ after the softmax (`attn_post_talking_heads`).
        pre_scale_post: $A'' = A' \odot P^{\text{scale}} S$ (`attn_pre_scale_post_talking_heads`).
    """

    def __init__(self, heads: int, *, pre: bool = False, post: bool = False, pre_scale_post: bool = False):
        super().__init__()
        eye = torch.eye(heads)
        self.pre = nn.Parameter(eye.clone()) if pre else None  # $P^{\text{pre}}$, (h, g)
        self.post = nn.Parameter(eye.clone()) if post else None  # $P^{\text{post}}$, (h, g)
        self.scale = nn.Parameter(eye.clone()) if pre_scale_post else None  # $P^{\text{scale}}$, (h, g)
        # The weights' multiplier, made from this forward's scores and used on its weights.
        self._post_scale: Optional[Tensor] = None

    def pre_bias(self, scores: Tensor) -> Tensor:
        """The scaled scores `(b, h, i, j)`, before the position bias."""
        if self.scale is not None:
            # $P^{\text{scale}} S$, kept for the weights of this same forward pass
            self._post_scale = mix_heads(scores, self.scale)  # (b, g, i, j)
        if self.pre is not None:
            # $S' = S + P^{\text{pre}} S$
            scores = scores + mix_heads(scores, self.pre)  # (b, g, i, j)
        return scores

    def post_softmax(self, weights: Tensor) -> Tensor:
        """The weights `(b, h, i, j)` after the softmax."""
        if self.post is not None:
            # $A' = P^{\text{post}} A$
            weights = mix_heads(weights, self.post)  # (b, g, i, j)
        if self.scale is not None:
            post_scale, self._post_scale = self._post_scale, None
            assert post_scale is not None  # set by `pre_bias` of the same forward pass
            # $A'' = A' \odot P^{\text{scale}} S$
            weights = weights * post_scale
        return weights
