r"""
# Memory tokens

*Paper:* [Memory Transformer](https://arxiv.org/abs/2006.11527) (Burtsev & Sapunov, 2020)

Memory tokens are learned vectors, like a `[CLS]` token but several of them, prepended to the
input sequence and passed through every layer with it:

$$H^{(0)} = [\,M;\ E(x)\,]$$

They give the model scratch space: a place to gather and redistribute global information that no
real token has to hold.  At the output they are stripped, so the caller sees exactly one vector
per input token.

Visibility:

* In an **encoder** memory tokens see and are seen by every real token; padding masks still hold
  for the real tokens (memory tokens are never padding).
* In a **decoder** they sit before the first token, so the causal mask lets every token read them
  while they only see each other: they cannot leak the future.

Memory tokens are placed after the absolute position embedding is added to the real tokens, so they
have no position of their own; relative schemes count them as the first positions.

Shapes: `b` batch, `n` tokens, `M` memory tokens, `D` model width.

## Differences from the paper

The paper also studies a memory *bottleneck* (tokens attend only to memory); here memory tokens are
simply part of the sequence, the paper's "MemTransformer" variant.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn, Tensor


class MemoryTokens(nn.Module):
    """`num` learned tokens prepended to every sequence, and stripped again at the output."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.num = num
        self.tokens = nn.Parameter(torch.randn(num, dim) * 0.02)

    def prepend(self, x: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        # $[M; E(x)]$, and the mask marks memory tokens as real
        mem = self.tokens[None].expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat((mem, x), dim=1)  # (b, M + n, D)
        if mask is not None:
            mask = F.pad(mask, (self.num, 0), value=True)
        return x, mask

    def strip(self, x: Tensor) -> Tensor:
        return x[:, self.num:]  # (b, n, D)
