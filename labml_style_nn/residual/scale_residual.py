r"""
# Scaled residual (NormFormer)

*Paper:* [NormFormer: Improved Transformer Pretraining with Extra Normalization](https://arxiv.org/abs/2110.09456) (Shleifer et al., 2021)

In a pre-norm transformer the residual stream grows with depth, so late branches make relatively
small updates.  NormFormer's residual scaling learns a per-feature factor $\lambda$ on the residual
before the branch is added:

$$x \leftarrow \lambda \odot x + F(\operatorname{Norm}(x)), \qquad \lambda_0 = 1.$$

Starting at one, the block starts as a plain residual.  The x-transformers README reports small gains and occasional
instability, so it is off by default (`scale_residual=True` turns it on).

Tested by `test_scaled_residual_is_lambda_x_plus_branch` in `tests/residual/test_res_residual.py`; the [residual blocks](residual.md) page shows where the scale sits, and [head scale](../attention/head_scale.md) is another of NormFormer's changes.

Shapes: `D` model width; $\lambda \in \mathbb{R}^D$.

## Differences from the paper

NormFormer applies the scaling to feed-forward residuals only; here it applies to every block, as in
x-transformers.  With `sandwich_norm=True` as well (NormFormer's post-attention norm) and
`attn_head_scale=True`, the stack has three of NormFormer's four changes; `ff_post_act_ln=True` is
the fourth.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("scale_residual", False, "a learned per-feature scale on the residual"))


class ScaledResidual(nn.Module):
    r"""$\lambda \odot x + F(x)$ with a learned per-feature $\lambda$.

    >>> ScaledResidual(2)(torch.tensor([1.0, 2.0]), torch.tensor([10.0, 20.0])).tolist()   # lambda = 1
    [11.0, 22.0]
    """

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, branch: Tensor, residual: Tensor) -> Tensor:
        # $\lambda \odot x + F(x)$
        return branch + residual * self.scale.to(residual.dtype)
