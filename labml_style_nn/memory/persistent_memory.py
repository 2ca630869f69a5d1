r"""
# Persistent memory: learned key/value slots

*Paper:* [Augmenting Self-attention with Persistent Memory](https://arxiv.org/abs/1907.01470) (Sukhbaatar et al., 2019)

The feed-forward layer can be read as attention over a fixed set of learned keys and values.
Persistent memory makes that explicit: every attention layer gets $N$ learned key/value pairs per
head that are prepended to the keys and values computed from the tokens,

$$K' = [M_K; K], \qquad V' = [M_V; V].$$

They carry knowledge that does not depend on the input.  The paper could then remove the
feed-forward layers altogether; the seeds keep them and report that memory key/values still help.

The memory slots are always visible: no padding mask and no causal mask applies to them.  A query
whose every real key is masked still attends to the memory (a test checks this).  The scores are
untouched, so the fused kernel is still used.

Shapes: `b` batch, `h` heads, `N` slots, `d` head dim.

## Differences from the paper

The paper scales the memory vectors and uses its own position embeddings; the slots here are plain
learned vectors, drawn from a standard normal.
"""

import torch
from torch import nn, Tensor


class PersistentMemory(nn.Module):
    """`num_mem` learned key/value pairs per head, shared by every sequence of the batch."""

    def __init__(self, heads: int, dim_key: int, dim_value: int, num_mem: int):
        super().__init__()
        self.keys = nn.Parameter(torch.randn(heads, num_mem, dim_key))  # $M_K$
        self.values = nn.Parameter(torch.randn(heads, num_mem, dim_value))  # $M_V$

    def forward(self, batch: int) -> tuple[Tensor, Tensor]:
        expand = lambda t: t[None].expand(batch, -1, -1, -1)
        return expand(self.keys), expand(self.values)  # (b, h, N, d)
