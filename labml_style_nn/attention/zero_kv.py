r"""
# A key and value of zeros: attention is off by one

*Sources:* [Attention Is Off By One](https://www.evanmiller.org/attention-is-off-by-one.html)
(Miller, 2023); PyTorch's `nn.MultiheadAttention(add_zero_attn=True)`

A softmax head must spend all of its weight: even when no key is relevant, the weights sum to one.
Evan Miller proposed adding one to the softmax's denominator,

$$A_{ij} = \frac{e^{S_{ij}}}{1 + \sum_{j'} e^{S_{ij'}}},$$

so that a head whose scores are all very negative puts (almost) no weight anywhere, and argued this
removes the outlier activations that heads produce to emulate "attending to nothing".  Adding a key
$k_0 = 0$ with value $v_0 = 0$ does exactly that: its score is $q^\top 0 = 0$, so it adds $e^0 = 1$ to
the denominator, and its value adds nothing to the output.

The zero slot is prepended to the keys and values of every row, is always visible, and goes
through the same steps as a key (no position bias, the same key transform: qk-norm of zero is zero).
It is a `memory_kv` of [attention](attention.md), so the fused path keeps running; with
[persistent memory](../memory/persistent_memory.md) the zero slot comes first.

A worked example: scores $(0, 0)$ give softmax weights $(1/2, 1/2)$ and, with the zero slot,
$(1/3, 1/3)$; scores $(-5, -5)$ give $(0.0066, 0.0066)$: the head reads almost nothing.

`attn_add_zero_kv=True`.  Tests: `tests/attention/test_attn_scoring.py` (parity with x-transformers,
fused equals explicit).

Shapes: `b` batch, `g` key/value heads, `N` slots, `d` head dim.

## Differences from x-transformers

* With `attn_laser`, x-transformers adds the zero value after LASER's $\exp$ (it contributes 0 to
  the sum); here it is a key like the others and contributes $e^0 = 1$.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("add_zero_kv", False, "a key and value of zeros in every row: weights may sum to less than one"))


class ZeroKeyValue(nn.Module):
    """`memory_kv`: one zero key and value slot, before the slots of `memory` (persistent memory) if given.

    >>> k, v = ZeroKeyValue(2, 4, 3)(batch=1)
    >>> tuple(k.shape), float(k.abs().sum() + v.abs().sum())
    ((1, 2, 1, 4), 0.0)
    """

    zero: Tensor

    def __init__(self, kv_heads: int, dim_key: int, dim_value: int, memory: Optional[nn.Module] = None):
        super().__init__()
        self.kv_heads, self.dim_key, self.dim_value = kv_heads, dim_key, dim_value
        self.memory = memory
        # Follows the module to its device; not saved.
        self.register_buffer("zero", torch.zeros(()), persistent=False)

    def forward(self, batch: int) -> tuple[Tensor, Tensor]:
        # $k_0 = 0$, $v_0 = 0$: the score $q^\top k_0 = 0$ adds $e^0 = 1$ to the softmax's denominator
        k = self.zero.new_zeros(batch, self.kv_heads, 1, self.dim_key)
        v = self.zero.new_zeros(batch, self.kv_heads, 1, self.dim_value)
        if self.memory is not None:
            mk, mv = self.memory(batch)
            k, v = torch.cat((k.to(mk), mk), dim=-2), torch.cat((v.to(mv), mv), dim=-2)
        return k, v
