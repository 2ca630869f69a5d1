r"""
# Derf: a stronger point-wise replacement for normalisation

*Paper:* [Stronger Normalization-Free Transformers](https://arxiv.org/abs/2512.10938) (Chen et al., 2025)

[Dynamic Tanh](dynamic_tanh.md) showed that a learned S-curve can stand in for LayerNorm.  Chen et
al. ask which properties of the curve matter (centred at zero, bounded, sensitive near the centre,
monotone), search a large family of such functions, and find the error function best, with a
learned steepness $\alpha$ and shift $s$ inside and LayerNorm's gain and bias outside:

$$\operatorname{Derf}(x) = \gamma \odot \operatorname{erf}(\alpha x + s) + \beta,
\qquad \operatorname{erf}(z) = \tfrac{2}{\sqrt\pi} \textstyle\int_0^z e^{-t^2} dt.$$

They report it above LayerNorm, RMSNorm and DyT in vision, generation, speech and DNA models, and
trace the gain to better generalisation rather than a better fit of the training data.

`use_derf=True` puts Derf everywhere the stack has a norm.  $\alpha$ starts at $\tfrac12$ and $s$
at 0; with `norm_add_unit_offset` (the default) $\alpha$ is stored as $\alpha - \tfrac12$ and
$\gamma$ as $\gamma - 1$ ([LayerNorm](layer_norm.md) explains why).

Tests: `tests/norms/test_norm_variants.py`.

Shapes: `D` model width; any leading axes.

## Differences from x-transformers

* x-transformers stores $\alpha - 1$ with its unit offset (an initial stored value of $-\tfrac12$);
  here the offset is the initial value, so the stored $\alpha'$ starts at 0.  The function is the
  same; the weight-copied parity test converts the stored values.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("use_derf", False, "Derf gamma * erf(alpha x + s) + beta instead of every norm"))


class Derf(nn.Module):
    r"""$\gamma \odot \operatorname{erf}(\alpha x + s) + \beta$, learned scalars $\alpha, s$.

    >>> y = Derf(2)(torch.tensor([0.0, 2.0]))   # erf(0.5 * 2) = 0.8427
    >>> [round(v, 4) for v in y.tolist()]
    [0.0, 0.8427]
    """

    def __init__(self, dim: int, init_alpha: float = 0.5, init_shift: float = 0.0, *, unit_offset: bool = False):
        super().__init__()
        self.alpha_offset = float(init_alpha) if unit_offset else 0.0
        self.gamma_offset = 1.0 if unit_offset else 0.0
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha) - self.alpha_offset))
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))
        self.gamma = nn.Parameter(torch.full((dim,), 1.0 - self.gamma_offset))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        alpha, gamma = self.alpha + self.alpha_offset, self.gamma + self.gamma_offset
        # $\gamma \odot \operatorname{erf}(\alpha x + s) + \beta$
        return torch.erf(alpha * x + self.shift) * gamma + self.beta  # (..., D)
