r"""
# ScaleNorm

*Paper:* [Transformers without Tears: Improving the Normalization of Self-Attention](https://arxiv.org/abs/1910.05895) (Nguyen & Salazar, 2019)

LayerNorm centres and rescales every feature with $2D$ learned parameters.  ScaleNorm keeps only
what seems to matter: project each vector onto a sphere and give it one learned length $g$,

$$\operatorname{ScaleNorm}(x) = g \frac{x}{\max(\lVert x \rVert, \epsilon)}.$$

The paper reports faster convergence, in particular for low-resource translation.  $g$ starts at
$\sqrt D$, the typical length of a vector whose features have unit scale.

Shapes: `D` model width; any leading axes.
"""

import torch
from torch import nn, Tensor


class ScaleNorm(nn.Module):
    """One learned scale $g$ for the whole vector, applied after projecting to the unit sphere."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.tensor(dim ** 0.5))

    def forward(self, x: Tensor) -> Tensor:
        # Norms are computed in float32 so that half precision inputs cannot overflow.
        xf = x.float()
        norm = xf.norm(dim=-1, keepdim=True).clamp(min=self.eps)
        return (xf / norm * self.g).to(x.dtype)
