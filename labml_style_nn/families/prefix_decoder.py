r"""
# Prefix decoder (prefix language model)

*Papers:* [Unified Language Model Pre-training](https://arxiv.org/abs/1905.03197) (UniLM, Dong et al.,
2019) and [Exploring the Limits of Transfer Learning](https://arxiv.org/abs/1910.10683) (T5, Raffel et
al., 2020, §3.2.1, the "prefix LM").

A decoder-only model that reads a prompt (the *prefix*) bidirectionally, as an encoder would, and
writes the rest causally.  One stack, one mask: query $i$ sees key $j$ when $j$ comes before it or
lies in the prefix of length $P$,

$$\text{visible}_{ij} = [\, j \le i \,] \lor [\, j < P \,]$$

so the prefix's tokens see each other both ways, and no token sees the continuation's future.
$P$ may differ per row (`prefix_attn_len` a `(b,)` tensor).

```python
dec = PrefixDecoder(dim=512, depth=6, heads=8)
out = dec(x, prefix_attn_len=16)
```

The mask reaches attention as an additive bias (`attn_mask` of `AttentionLayers.forward`), so the
fused kernel still runs.

**Differences from x-transformers.**  None in meaning.  As there, the stack itself is built without
causality, so it cannot use a key/value cache.

Shapes: `b` batch, `i` queries, `j` keys, `n` tokens.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..models.layers import AttentionLayers


def prefix_mask(n: int, prefix_attn_len: Union[int, Tensor], batch: int, device=None) -> Tensor:
    r"""`(b, i, j)`: key `j` visible from query `i` when $j \le i$ or $j < P_b$.

    >>> prefix_mask(3, 2, 1)[0].int().tolist()
    [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    """
    if isinstance(prefix_attn_len, int):
        prefix_attn_len = torch.full((batch,), prefix_attn_len, device=device)
    i = torch.arange(n, device=device)
    causal = i[None, :] <= i[:, None]  # (i, j): $j \le i$
    in_prefix = i[None, None, :] < prefix_attn_len.to(device)[:, None, None]  # (b, 1, j): $j < P_b$
    return causal[None] | in_prefix  # (b, i, j)


class PrefixDecoder(AttentionLayers):
    """A stack that attends bidirectionally within a prefix and causally after it."""

    def __init__(self, **kwargs):
        if "causal" in kwargs:
            raise TypeError("PrefixDecoder() sets its own causality and takes no 'causal'")
        super().__init__(causal=False, **kwargs)

    def forward(self, x: Tensor, *args, attn_mask: Optional[Tensor] = None,
                prefix_attn_len: Union[int, Tensor, None] = None, **kwargs):
        """Run the stack on `x` `(b, n, D)` with the prefix mask (combined with `attn_mask` if given)."""
        b, n = x.shape[:2]
        # Without a prefix, a plain causal decoder.
        visible = prefix_mask(n, 0 if prefix_attn_len is None else prefix_attn_len, b, x.device)  # (b, n, n)
        if attn_mask is not None:
            if not torch.is_tensor(attn_mask) or attn_mask.dtype != torch.bool or tuple(attn_mask.shape[-2:]) != (n, n):
                raise ValueError(f"attn_mask: expected a bool tensor of shape ({n}, {n}) or ({b}, {n}, {n})")
            visible = visible & attn_mask
        return super().forward(x, *args, attn_mask=visible, **kwargs)
