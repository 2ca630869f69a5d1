r"""
# Memory tokens interspersed through a decoder's sequence

*Related papers:* [Memory Transformer](https://arxiv.org/abs/2006.11527) (Burtsev & Sapunov, 2020) for
the memory tokens themselves, [Landmark Attention](https://arxiv.org/abs/2305.16300) (Mohtashami &
Jaggi, 2023) and the [Recurrent Memory Transformer](https://arxiv.org/abs/2207.06881) (Bulatov et
al., 2022) for tokens that summarise each block of a long sequence.

In a decoder, [memory tokens](memory_tokens.md) placed before the first token see only each
other: causality keeps them from reading any real token, so they are learned constants.
`memory_tokens_interspersed_every=k` (x-transformers' `TransformerWrapper` keyword) instead puts a
copy of the $M$ memory tokens in front of every block of $k$ tokens,

$$H^{(0)} = [\,M;\ x_{1..k};\ M;\ x_{k+1..2k};\ \dots\,]$$

so the copy before block $c$ has read every earlier block and can carry a summary of it forward,
while no token still sees its future.  The output is stripped back to one vector per token.

The sequence is padded to a multiple of $k$ at its end (causality keeps the padding from
touching any real token).  Positions of a relative scheme count the memory copies too.  A decoder
only, and no key/value cache (the copies move with the block boundaries).

Shapes: `b` batch, `n` tokens, `c` blocks, `k` tokens per block, `M` memory tokens, `D` width.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def intersperse(x: Tensor, mask: Optional[Tensor], tokens: Tensor, every: int) -> tuple[Tensor, Optional[Tensor]]:
    """`(b, n, D)` to `(b, c (M + k), D)`: the memory `tokens` `(M, D)` before each block of `every` tokens.

    >>> h, m = intersperse(torch.ones(1, 3, 1), None, torch.zeros(1, 1), every=2)
    >>> h[0, :, 0].tolist()
    [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    """
    b, n, _ = x.shape
    blocks = math.ceil(n / every)
    x = F.pad(x, (0, 0, 0, blocks * every - n))  # (b, c k, D)
    x = rearrange(x, "b (c k) d -> b c k d", k=every)
    mem = tokens.to(x.dtype)[None, None].expand(b, blocks, -1, -1)  # (b, c, M, D)
    # $[M; x_{1..k}; M; x_{k+1..2k}; \dots]$
    x = rearrange(torch.cat((mem, x), dim=2), "b c k d -> b (c k) d")
    if mask is not None:
        mask = rearrange(F.pad(mask, (0, blocks * every - n), value=False), "b (c k) -> b c k", k=every)
        mask = rearrange(F.pad(mask, (tokens.shape[0], 0), value=True), "b c k -> b (c k)")
    return x, mask


def strip_interspersed(h: Tensor, n: int, every: int, num_memory: int) -> Tensor:
    """Undo `intersperse`: keep the `n` token positions of `h` `(b, c (M + k), D)`."""
    h = rearrange(h, "b (c k) d -> b c k d", k=every + num_memory)[:, :, num_memory:]  # (b, c, k, D)
    return rearrange(h, "b c k d -> b (c k) d")[:, :n]
