r"""
# Residuals on the keys' and values' input

*Source:* x-transformers' `self_attn_kv_residuals` argument of the stack's forward.

A self-attention layer projects one normed input $\bar h$ into queries, keys and values.  A caller
can add a tensor $r$ to the input of the keys and values only,

$$q = W_q \bar h, \qquad k = W_k (\bar h + r), \qquad v = W_v (\bar h + r),$$

so that every query reads the tokens as changed by $r$ while the tokens' own stream is untouched.
The [Free Transformer](../families/free_transformer.md) injects its latent variable this way, in the
first self-attention layer of its second half.  A `(b, n, D)` tensor (or `(b, 1, D)`, the same
for every token) goes to the first self-attention layer; `(L', b, n, D)` gives one to each of the
first $L'$ layers.

Shapes: `b` batch, `n` tokens, `D` width, `L'` layers that receive one.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def kv_residuals_per_layer(residuals: Optional[Tensor], num_layers: int, batch: int, n: int, dim: int) -> list:
    """One residual `(b, n|1, D)` or `None` for each self-attention layer, first layers first."""
    if residuals is None:
        return [None] * num_layers
    ok = torch.is_tensor(residuals) and residuals.dim() in (3, 4) and residuals.shape[-1] == dim \
        and residuals.shape[-2] in (1, n) and residuals.shape[-3] in (1, batch)
    if ok and residuals.dim() == 3:
        residuals = residuals[None]
    if not ok or residuals.shape[0] > num_layers:
        got = tuple(residuals.shape) if torch.is_tensor(residuals) else type(residuals).__name__
        raise ValueError(f"self_attn_kv_residuals: expected ({batch}, {n} or 1, {dim}) or (L, {batch}, {n} or 1, "
                         f"{dim}) with L <= {num_layers} self-attention layers, got {got}")
    given = list(residuals.unbind(0))
    return given + [None] * (num_layers - len(given))
