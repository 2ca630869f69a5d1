r"""
# Per-head scaling (NormFormer)

*Paper:* [NormFormer: Improved Transformer Pretraining with Extra Normalization](https://arxiv.org/abs/2110.09456) (Shleifer et al., 2021)

NormFormer observes that in pre-norm transformers the gradients of early layers are much larger than
those of later ones.  One of its remedies is a learned scalar $\gamma_h$ per head that scales the
head's output before the heads are concatenated and projected:

$$o_{hi} = \gamma_h \sum_j A_{hij} v_{hj}$$

$\gamma$ starts at one, so the layer starts as plain attention.  The scores are untouched and the
fused kernel is still used.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim.
"""

import torch
from torch import nn, Tensor


class HeadScale(nn.Module):
    """A learned scale per head on the aggregated values."""

    def __init__(self, heads: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, heads, 1, 1))  # $\gamma_h$

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        return out * self.scale.to(out.dtype)  # (b, h, n, d)


class OutputGates(nn.Module):
    """Applies several output gates in order (e.g. value gating, then head scale)."""

    def __init__(self, gates: list[nn.Module]):
        super().__init__()
        self.gates = nn.ModuleList(gates)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        for gate in self.gates:
            out = gate(out, x)
        return out
