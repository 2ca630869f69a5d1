r"""
# LASER: attention with exponentiated values

*Paper:* [LASER: Attention with Exponential Transformation](https://arxiv.org/abs/2411.03493)
(Duvvuri and Dhillon, 2024)

The gradient that reaches a score through softmax attention is scaled by its weight, and most
weights are tiny: the paper measures that most of the attention layer's parameters receive small
gradients because of it.  LASER attends over *exponentiated* values and takes the logarithm of the
result,

$$o_i = \log \sum_j A_{ij}\, e^{v_j},$$

a log-sum-exp of the values weighted by attention.  Its Jacobian with respect to the weights is
$e^{v_j} / \sum_{j'} A_{ij'} e^{v_{j'}}$ instead of $v_j$, which the paper shows lets larger
gradients through, and it reports lower loss in language, vision and speech models.  Like
log-sum-exp, $o_i$ lies between $\sum_j A_{ij} v_j$ and $\max_j v_j$.

The paper subtracts each value column's maximum before the exponential for stability;
x-transformers soft-caps the values instead, $v \leftarrow c \tanh(v / c)$ with $c = 15$ (so
$e^{v} \le e^{15}$), and clamps the sum at $10^{-20}$ before the logarithm (a query that sees no key
gets $\log 10^{-20} = -46.05$).  This library does the same.

It changes the values before aggregation and the output after it, so it is a `value_transform` of
[attention](attention.md); the scores are untouched and the fused path keeps running.  The cache
keeps the raw values.

A worked example: weights $(0.5, 0.5)$ on values $0$ and $2$ give $0.5 \cdot 0 + 0.5 \cdot 2 = 1$
in plain attention and $\log(0.5 e^0 + 0.5 e^2) = 1.43$ with LASER, closer to the larger value.

`attn_laser=True`, `attn_laser_softclamp_value=15.0`.  Tests: `tests/attention/test_attn_scoring.py`.

Shapes: `b` batch, `h` heads, `j` keys, `d` head dim.

## Differences from the paper

* Values are soft-capped at $c$ instead of shifted by their maximum (x-transformers' choice): for
  values well inside $(-c, c)$ the two compute the same output.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from .softclamp import softclamp

KEYWORDS = declare(__name__, "attn",
    Keyword("laser", False, "attend over exp(v) and take the log of the output (LASER)"),
    Keyword("laser_softclamp_value", 15.0, "laser: values are capped at c tanh(v / c) before exp",
            minimum=1e-6, example=10.0))


class Laser(nn.Module):
    r"""`value_transform`: $v \leftarrow e^{c \tanh(v / c)}$ before aggregation, $o \leftarrow \log o$ after.

    >>> laser = Laser(1000.0)  # a cap far above the values: the plain formula
    >>> v = torch.tensor([[0.0], [2.0]])
    >>> round(float(laser.output(torch.tensor([0.5, 0.5]) @ laser.values(v))), 2)
    1.43
    """

    def __init__(self, softclamp_value: float = 15.0):
        super().__init__()
        self.softclamp_value = softclamp_value

    def values(self, v: Tensor) -> Tensor:
        # $e^{c \tanh(v / c)}$
        return softclamp(v, self.softclamp_value).exp()

    def output(self, out: Tensor) -> Tensor:
        # $o_i = \log \sum_j A_{ij} e^{v_j}$, clamped away from $\log 0$
        return out.clamp(min=1e-20).log()


@rule("attn")
def _value_needs_laser(a, prefix: str, layers) -> None:
    if a.laser_softclamp_value != 15.0 and not a.laser:
        raise ValueError(f"{prefix}laser_softclamp_value: only meaningful with {prefix}laser=True")
