r"""
# RMSNorm

*Paper:* [Root Mean Square Layer Normalization](https://arxiv.org/abs/1910.07467) (Zhang & Sennrich, 2019)

RMSNorm drops LayerNorm's mean subtraction: it only rescales each vector by its root mean square
and applies a learned gain per feature,

$$\operatorname{RMSNorm}(x) = \frac{x}{\sqrt{\frac{1}{D} \sum_k x_k^2 + \epsilon}} \odot \gamma.$$

The paper finds re-scaling invariance is what LayerNorm contributes; re-centring can go, saving
7-64% of the normalisation time.

Shapes: `D` model width; any leading axes.
"""

import torch
from torch import nn, Tensor


class RMSNorm(nn.Module):
    """Divide by the root mean square of the features, then scale each feature by $\\gamma_k$."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        # $x / \mathrm{RMS}(x)$, in float32
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.gamma.to(x.dtype)
