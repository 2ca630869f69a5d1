r"""
# Dynamic Tanh (DyT): a transformer without normalisation

*Paper:* [Transformers without Normalization](https://arxiv.org/abs/2503.10622) (Zhu et al., 2025)

Zhu et al. observe that a trained LayerNorm maps its inputs, feature by feature, along S-shaped
curves: nearly linear in the middle, squashing the few extreme values.  They replace the norm by
such a curve, with one learned steepness $\alpha$ per layer and LayerNorm's affine gain and bias:

$$\operatorname{DyT}(x) = \gamma \odot \tanh(\alpha x) + \beta.$$

No statistics are computed across the features: every feature is mapped on its own.  $\alpha$
starts at `dynamic_tanh_init_alpha` (1 by default; the paper lowers it for larger models, and much
lower for language models whose attention branches it sits before).

`use_dynamic_tanh=True` puts DyT everywhere the stack has a norm, the final norm included.  With
`norm_add_unit_offset` (the default) $\alpha$ is stored as $\alpha - \alpha_0$ and $\gamma$ as
$\gamma - 1$, so weight decay pulls both to their initial values
([LayerNorm](layer_norm.md) explains why).

Tests: `tests/norms/test_norm_variants.py` (the closed form, the stack uses it, parity with
x-transformers).

Shapes: `D` model width; any leading axes.

## Differences from the paper

* x-transformers refuses DyT in a post-norm stack ("only tested for pre-norm"); here it is refused
  too, with `pre_norm=False` named: the paper replaces the norms of pre-norm transformers.
* The paper initialises $\alpha$ per norm position differently in large language models (one value
  before attention, another elsewhere); one `dynamic_tanh_init_alpha` is used for every norm here.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("use_dynamic_tanh", False, "Dynamic Tanh gamma * tanh(alpha x) + beta instead of every norm"),
    Keyword("dynamic_tanh_init_alpha", 1.0, "initial steepness alpha of Dynamic Tanh", example=0.5))


class DynamicTanh(nn.Module):
    r"""$\gamma \odot \tanh(\alpha x) + \beta$ with one learned $\alpha$ and a gain and bias per feature.

    >>> y = DynamicTanh(2, init_alpha=0.5)(torch.tensor([0.0, 2.0]))   # tanh(0.5 * 2) = 0.7616
    >>> [round(v, 4) for v in y.tolist()]
    [0.0, 0.7616]
    """

    def __init__(self, dim: int, init_alpha: float = 1.0, *, unit_offset: bool = False):
        super().__init__()
        # Stored values are offsets from the initial values when `unit_offset` is true.
        self.alpha_offset = float(init_alpha) if unit_offset else 0.0
        self.gamma_offset = 1.0 if unit_offset else 0.0
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha) - self.alpha_offset))
        self.gamma = nn.Parameter(torch.full((dim,), 1.0 - self.gamma_offset))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        alpha, gamma = self.alpha + self.alpha_offset, self.gamma + self.gamma_offset
        # $\gamma \odot \tanh(\alpha x) + \beta$, each feature on its own
        return torch.tanh(alpha * x) * gamma + self.beta  # (..., D)


@rule("stack")
def _dynamic_tanh_needs_pre_norm(o) -> None:
    if o.use_dynamic_tanh and not o.pre_norm:
        raise ValueError("use_dynamic_tanh and pre_norm=False: Dynamic Tanh replaces the norms of a pre-norm "
                         "stack (as in the paper and x-transformers); use pre_norm=True")
    if o.dynamic_tanh_init_alpha != 1.0 and not o.use_dynamic_tanh:
        raise ValueError("dynamic_tanh_init_alpha: only meaningful with use_dynamic_tanh=True")
