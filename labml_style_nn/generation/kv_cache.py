r"""
# The key/value cache

Generating token by token with a causal transformer recomputes the same keys and values at every
step: the keys of the prompt and of every token generated so far never change.  A key/value cache
keeps them.  Each step then only embeds the **new** token, computes its query, key and value,
appends the key and value to the cache and attends over everything cached:

$$\text{step } t: \quad q_t, k_t, v_t = x_t W_{Q,K,V}, \qquad K_{\le t} = [K_{<t}; k_t], \qquad
o_t = \operatorname{softmax}\!\left(\frac{q_t K_{\le t}^\top}{\sqrt d} + B_t\right) V_{\le t}$$

The cost of a step drops from $O(t)$ projections to one.  The buffers are allocated once, at the
first step, for the whole generation (`max_len` positions): appending writes into them, there is no
concatenation per step.

What else must be carried so that a cached step equals a full pass over the same prefix:

* positions continue from the number of cached tokens (rotary, ALiBi, T5, absolute);
* cross-attention keys and values of the context are computed once, at the first step;
* token shift needs the last few inputs of each block (`residual/token_shift.py`);
* the padding mask of the keys grows with the sequence.

Shapes: `b` batch, `h` heads, `L` positions cached, `d` head dim.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..residual.token_shift import ShiftState


class SelfAttentionCache:
    """Preallocated keys and values of one self-attention layer."""

    def __init__(self, max_len: int):
        self.max_len, self.offset = max_len, 0
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append `(b, h, n, d)` keys and values; return all of them so far."""
        n = k.shape[-2]
        if self.k is None:
            # Allocate once for the whole generation.
            self.k = k.new_empty(*k.shape[:2], self.max_len, k.shape[-1])
            self.v = v.new_empty(*v.shape[:2], self.max_len, v.shape[-1])
        if self.offset + n > self.max_len:
            raise ValueError(f"cache: {self.offset + n} positions exceed the cache's max_len={self.max_len}")
        self.k[:, :, self.offset:self.offset + n] = k
        self.v[:, :, self.offset:self.offset + n] = v
        self.offset += n
        return self.k[:, :, :self.offset], self.v[:, :, :self.offset]  # (b, h, L, d)


class CrossAttentionCache:
    """Keys and values of the cross-attention context, computed at the first step."""

    def __init__(self):
        self.kv: Optional[tuple[Tensor, Tensor]] = None

    def has_kv(self) -> bool:
        return self.kv is not None

    def set_kv(self, k: Tensor, v: Tensor) -> None:
        self.kv = (k, v)

    def get_kv(self) -> tuple[Tensor, Tensor]:
        return self.kv


class BlockCache:
    """What one block carries between steps: an attention cache and/or a token-shift state."""

    def __init__(self, kind: str, max_len: int, shifts: bool):
        self.attn = SelfAttentionCache(max_len) if kind == "a" else CrossAttentionCache() if kind == "c" else None
        self.shift = ShiftState() if shifts else None


class LayersCache:
    """The cache of a whole `AttentionLayers` stack, for `batch` sequences of up to `max_len` tokens."""

    def __init__(self, layers, batch: int, max_len: int):
        self.max_len, self.offset = max_len, 0
        self.blocks = [BlockCache(b.kind, max_len, b.shift is not None) for b in layers.blocks]
        self.mask: Optional[Tensor] = None
        self._batch = batch

    def extend_mask(self, mask: Optional[Tensor], n: int) -> Optional[Tensor]:
        """Record the padding mask of `n` new tokens; return the mask of every cached key."""
        if mask is None and self.mask is None:
            return None
        if self.mask is None:
            device = mask.device
            self.mask = torch.ones(self._batch, self.max_len, dtype=torch.bool, device=device)
        if mask is not None:
            self.mask[:, self.offset:self.offset + n] = mask
        return self.mask[:, :self.offset + n]

    def advance(self, n: int) -> None:
        """Called by the stack after a forward pass over `n` new tokens."""
        self.offset += n
