r"""
# Gating the aggregated values

*Paper:* [Highly accurate protein structure prediction with AlphaFold](https://doi.org/10.1038/s41586-021-03819-2) (Jumper et al., 2021)

AlphaFold2's attention multiplies the aggregated values of every head by a sigmoid gate computed
from the layer's input, before the output projection:

$$o_{hi} = \sigma\big(x_i W^g_h + b^g_h\big) \odot \sum_j A_{hij} v_{hj}$$

The gate lets a token switch off heads (or single features) whose answer it does not need, giving
the block more control over its update.  It leaves the scores untouched, so the fused attention
kernel is still used.

Shapes: `b` batch, `n` tokens, `h` heads, `d` head dim.

## Differences from the paper

AlphaFold initialises the gate to weights $0$ and bias $1$ ($\sigma(1) \approx 0.73$).  We
initialise the bias to $10$ so that the gate starts as (almost exactly, $\sigma(10) > 0.99995$) a
pass-through, and the layer starts as plain attention.
"""

import torch
from einops import rearrange
from torch import nn, Tensor


class ValueGate(nn.Module):
    """Per-head, per-feature sigmoid gate on the aggregated values, computed from the input."""

    def __init__(self, dim: int, heads: int, dim_head: int, init_bias: float = 10.0):
        super().__init__()
        self.heads = heads
        self.to_gate = nn.Linear(dim, heads * dim_head)
        nn.init.zeros_(self.to_gate.weight)
        nn.init.constant_(self.to_gate.bias, init_bias)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        gate = rearrange(self.to_gate(x), "b n (h d) -> b h n d", h=self.heads)
        return out * gate.sigmoid()  # (b, h, n, d)
