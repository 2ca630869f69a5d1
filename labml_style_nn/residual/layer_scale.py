r"""
# LayerScale: a learned per-feature scale on every branch

*Paper:* [Going deeper with Image Transformers](https://arxiv.org/abs/2103.17239) (Touvron et al., 2021; CaiT)

Deep pre-norm transformers add many branch outputs to one residual stream; early in training each
of them can move the stream a lot.  CaiT multiplies every branch output by a diagonal matrix
$\operatorname{diag}(\lambda)$, learned, initialised to a small value $\epsilon$:

$$x \leftarrow x + \operatorname{diag}(\lambda)\, F(\operatorname{Norm}(x)), \qquad \lambda_k^{(0)} = \epsilon.$$

So every block starts close to the identity (as with [ReZero](rezero.md)'s one scalar), yet each
feature of each branch can grow at its own rate.  CaiT uses $\epsilon = 0.1$ up to depth 18,
$10^{-5}$ up to 24 and $10^{-6}$ beyond.

`use_layerscale=True` scales every attention and feed-forward branch; `layerscale_init_value` is
$\epsilon$ (0 by default, as in x-transformers: every block starts as the identity, like ReZero).
With `norm_add_unit_offset` (the default) the stored value is $\lambda - 1$, as x-transformers
stores it, so weight decay pulls $\lambda$ towards one ([LayerNorm](../norms/layer_norm.md)).  The
scale sits on the sublayer output itself, before a sandwich norm's branch norm, as in x-transformers.

Tests: `tests/residual/test_layer_scale_and_norm_placement.py` (the identity at $\epsilon = 0$, the
stored offset, parity with x-transformers).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from the paper

* CaiT's default $\epsilon$ depends on depth; x-transformers' (and this) default is 0.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("use_layerscale", False, "CaiT LayerScale: scale each branch output by learned per-feature gains"),
    Keyword("layerscale_init_value", 0.0, "initial LayerScale gain epsilon", example=1e-5))


class LayerScale(nn.Module):
    r"""$\operatorname{diag}(\lambda)\, F$: a learned scale per feature, starting at $\epsilon$.

    >>> LayerScale(3, init_value=0.5)(torch.ones(1, 3)).tolist()
    [[0.5, 0.5, 0.5]]
    """

    def __init__(self, dim: int, init_value: float = 0.0, *, unit_offset: bool = False):
        super().__init__()
        self.unit_offset = float(unit_offset)
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value) - self.unit_offset))

    def forward(self, branch: Tensor) -> Tensor:
        # $\operatorname{diag}(\lambda)\, F$ with $\lambda = 1 + \lambda'$ under the unit offset
        gamma = self.gamma + self.unit_offset if self.unit_offset else self.gamma
        return branch * gamma.to(branch.dtype)  # (b, n, D)


@rule("stack")
def _layerscale_needs_use_layerscale(o) -> None:
    if o.layerscale_init_value != 0.0 and not o.use_layerscale:
        raise ValueError("layerscale_init_value: only meaningful with use_layerscale=True")
    if o.use_layerscale and o.use_adaptive_layerscale:
        raise ValueError("use_layerscale and use_adaptive_layerscale both scale the branches; choose one")
