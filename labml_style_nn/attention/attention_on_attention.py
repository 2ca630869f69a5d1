r"""
# Attention on attention

*Paper:* [Attention on Attention for Image Captioning](https://arxiv.org/abs/1908.06954) (Huang et al., 2019)

Attention always returns *some* weighted average of the values, even when no key is relevant to the
query: the weights must sum to one.  Attention on attention (AoA) adds a second step that decides
how much of that average to let through.  The paper builds an "information" vector $i$ and a sigmoid
"gate" $g$ from the attended values $\hat v$ concatenated with the query $q$, and multiplies them:

$$i = W_i [\hat v; q] + b_i, \qquad g = \sigma(W_g [\hat v; q] + b_g), \qquad o = i \odot g.$$

When the attended values are irrelevant, the gate can close and the layer adds nothing to the
residual stream.

## The variant used here

The x-transformers README reports that the paper's version trained worse in their experiments, and that a variant
which does **not** concatenate the query trained much better; that variant is what x-transformers'
`attn_on_attn=True` means.  Information and gate are both computed from the attended values alone,
which were themselves computed for this query:

$$o = (W_i \hat v + b_i) \odot \sigma(W_g \hat v + b_g).$$

This is a gated linear unit (GLU) in place of the output projection $W_O$: the module replaces
`to_out` of the attention layer, whose input is the heads' outputs concatenated, $\hat v \in
\mathbb{R}^{h d}$, and whose output has the model width $D$.  The projection produces $2D$ features,
the first half the information and the second half the gate's logits.

Because the step comes after the weighted sum, the scores are untouched and the fused attention
kernel stays in use (a test checks which path runs).

It plugs into the `to_out` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `tests/attention/test_attn_paths.py` (fused equals explicit with the feature on).

Shapes: `b` batch, `n` tokens, `h` heads, `d` head dim, `D` model width.

## Differences from the paper

* No query in the information or the gate (the x-transformers variant, above).  The variant loses only a
  direct path from the query to the gate; the attended values were already chosen by that query.
* The paper applies AoA in the encoder and decoder of a captioning model, once per attention
  block; here it replaces the output projection of every attention layer of the stack, self- and
  cross-attention alike (`cross_attn_on_attn=False` switches it off for cross-attention).
* One fused linear map computes information and gate together, instead of two.

## A worked example

`F.glu` splits the projection's $2D$ outputs into information and gate logits.  An output
channel with information $2$ and gate logit $0$ passes half of it, $2\,\sigma(0) = 1$; with gate
logit $-4$ it passes $2\,\sigma(-4) = 0.036$: the block can silence what attention found when it is
not useful, which a plain output projection cannot do per token.

>>> F.glu(torch.tensor([[2.0, 2.0, 0.0, -4.0]]), dim=-1)   # information (2, 2), gate logits (0, -4)
tensor([[1.0000, 0.0360]])
"""

import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("on_attn", False, "attention on attention: a gated linear unit on the attended values"))


class AttentionOnAttention(nn.Module):
    r"""Output projection replaced by a GLU: $(W_i \hat v + b_i) \odot \sigma(W_g \hat v + b_g)$.

    Args:
        dim_inner: width of the concatenated heads' outputs, $h d$.
        dim: model width $D$.
    """

    def __init__(self, dim_inner: int, dim: int):
        super().__init__()
        # $[W_i; W_g]$ stacked: $h d \to 2D$
        self.proj = nn.Linear(dim_inner, 2 * dim)

    def forward(self, values: Tensor) -> Tensor:
        """`values` `(b, n, h d)`, the heads' outputs concatenated; returns `(b, n, D)`."""
        # $[W_i \hat v + b_i;\ W_g \hat v + b_g]$
        both = self.proj(values)  # (b, n, 2D)
        # `glu` splits the last axis in halves: information $\odot\ \sigma$(gate)
        return F.glu(both, dim=-1)  # (b, n, D)
