r"""
# Soft-capping the attention logits

*Paper:* [Gemma 2: Improving Open Language Models at a Practical Size](https://arxiv.org/abs/2408.00118)
(Gemma Team, 2024)

Large attention logits saturate the softmax: one key takes all the weight and the gradients of
the others vanish, and in low precision the logits can overflow.  Gemma 2 caps them smoothly with a
scaled $\tanh$,

$$S_{ij} \leftarrow c \tanh\left(\frac{S_{ij}}{c}\right),$$

which is the identity for $|S_{ij}| \ll c$ and never leaves $(-c, c)$.  Gemma 2 uses $c = 50$ in
attention (and $c = 30$ on the final logits); so does x-transformers' default.

The cap acts on the scores after the position bias and before the mask (a hidden key stays hidden:
the mask is applied after the cap).  It is a `score_transform`, so layers with it take the
explicit path of [attention](attention.md): the fused kernel never shows the scores.

A worked example, $c = 50$: scores $(10, 60, 200)$ become $(9.87, 41.68, 49.97)$.

`attn_softclamp_logits=True`, `attn_logit_softclamp_value=50.0`.  Tests:
`tests/attention/test_attn_scoring.py` (parity with x-transformers, the bound).

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..keywords import Keyword, declare, rule
from .extension_points import ScoreTransform

KEYWORDS = declare(__name__, "attn",
    Keyword("softclamp_logits", False, "cap the attention logits smoothly: S <- c tanh(S / c)"),
    Keyword("logit_softclamp_value", 50.0, "the cap c of softclamp_logits", minimum=1e-6, example=30.0))


def softclamp(t: Tensor, value: float) -> Tensor:
    r"""$c \tanh(t / c)$.

    >>> [round(x, 2) for x in softclamp(torch.tensor([10.0, 60.0, 200.0]), 50.0).tolist()]
    [9.87, 41.68, 49.97]
    """
    return (t / value).tanh() * value


class SoftClampLogits(ScoreTransform):
    """Score transform that caps every score at `value` in absolute value, smoothly."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        # $S_{ij} \leftarrow c \tanh(S_{ij} / c)$
        return softclamp(scores, self.value)


@rule("attn")
def _value_needs_the_cap(a, prefix: str, layers) -> None:
    if a.logit_softclamp_value != 50.0 and not a.softclamp_logits:
        raise ValueError(f"{prefix}logit_softclamp_value: only meaningful with {prefix}softclamp_logits=True")
