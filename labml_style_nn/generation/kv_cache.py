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

* **positions** continue from the number of cached tokens $m$.  Rotary angles and position-infused
  sinusoids depend on the position alone, so they are computed once for all `max_len` positions
  and each step slices its row; the ALiBi and T5 biases of the new query against every cached key
  are computed per step (one row, $1 \times (m + n)$);
* **cross-attention** keys and values of the context are computed once, at the first step;
* **token shift** needs the last few inputs of each block (`residual/token_shift.py`);
* **padding**: the key mask grows with the sequence; left-padded prompts mark their padding once,
  at the first step, and every later key is real;
* **memory tokens** are cached like the first tokens of the sequence; persistent memory slots are
  parameters, prepended at every step.

What each layer holds is independent of the others, so the cache is a list of per-block entries.

Worked numbers, for a GPT-2-small-sized decoder (12 layers, 12 heads of 64) generating 1024
tokens: without a cache the steps project $1 + 2 + \dots + 1024 = 524{,}800$ token rows per layer,
with it 1024; the price is the cache itself, $2 \times 12 \times 12 \times 64 \times 1024 = 18.9$
million numbers (75 MB in float32) per sequence, which is what
[grouped-query attention](../attention/grouped_query.md) shrinks.  Measured speed-ups are on the
[benchmarks page](../../docs/benchmarks.md); the test that a cached generation equals an uncached
one is in `tests/generation/test_cache.py`.

Shapes: `b` batch, `h` heads, `L` positions cached, `d` head dim, `r` rotated dims.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..attention.extension_points import SharedAttentionInputs
from ..residual.token_shift import ShiftState


class SelfAttentionCache:
    """Preallocated keys and values of one self-attention layer."""

    def __init__(self, max_len: int):
        self.max_len, self.offset = max_len, 0
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None
        # What a technique carries from step to step besides keys and values (a recurrent state).
        self.state: dict = {}

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append `(b, h, n, d)` keys and values; return all of them so far."""
        n = k.shape[-2]
        if self.k is None or self.v is None:  # (set together)
            # Allocate once for the whole generation.
            self.k = k.new_empty(*k.shape[:2], self.max_len, k.shape[-1])  # (b, h, L, d)
            self.v = v.new_empty(*v.shape[:2], self.max_len, v.shape[-1])
        end = self.offset + n
        if end > self.max_len:
            raise ValueError(f"cache: {end} positions exceed the cache's max_len={self.max_len}")
        self.k[:, :, self.offset:end] = k
        self.v[:, :, self.offset:end] = v
        self.offset = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (b, h, m + n, d)


class CrossAttentionCache:
    """Keys and values of the cross-attention context, computed at the first step."""

    def __init__(self):
        self.kv: Optional[tuple[Tensor, Tensor]] = None

    def has_kv(self) -> bool:
        return self.kv is not None

    def set_kv(self, k: Tensor, v: Tensor) -> None:
        self.kv = (k, v)

    def get_kv(self) -> tuple[Tensor, Tensor]:
        if self.kv is None:
            raise RuntimeError("cache: the context's keys and values are read before the first step set them")
        return self.kv


class BlockCache:
    """What one block carries between steps: an attention cache and/or a token-shift state."""

    def __init__(self, kind: str, max_len: int, shifts: bool):
        # `StaticLayersCache` (generation/static_cache.py, which builds on this file) swaps in its
        # fixed-buffer self-attention caches: any object with `offset` and `update(k, v)` serves.
        self.attn: Any = (
            SelfAttentionCache(max_len) if kind == "a" else CrossAttentionCache() if kind == "c" else None)
        self.shift = ShiftState() if shifts else None


class LayersCache:
    """The cache of a whole `AttentionLayers` stack, for `batch` sequences of up to `max_len` tokens."""

    def __init__(self, layers, batch: int, max_len: int):
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len: expected a positive integer, got {max_len!r}")
        self.max_len, self.offset, self._batch = max_len, 0, batch
        self.blocks = [BlockCache(b.kind, max_len, b.shift is not None) for b in layers.blocks]
        self.mask: Optional[Tensor] = None
        self._positions: Optional[Tensor] = None
        self._rotary: Optional[Tensor] = None
        self._qk_pos: Optional[Tensor] = None
        self._polar: Optional[Tensor] = None

    #
    # ## Positions of the next tokens
    #
    # Queries are at positions $m \dots m + n - 1$ and see keys $0 \dots m + n - 1$; only the new
    # keys get rotated, so rotary angles and sinusoids are sliced to the new positions.
    def shared_inputs(self, layers, n: int, device) -> SharedAttentionInputs:
        """Positional inputs of the next `n` tokens for the stack `layers`."""
        if self._positions is None:
            # Tables over every position the cache will ever hold, computed once.
            self._positions = torch.arange(self.max_len, device=device)
            self._rotary = layers.rotary(self._positions) if layers.rotary is not None else None  # (2, L, r)
            self._qk_pos = layers.pia(self._positions) if layers.pia is not None else None  # (L, D)
            polar = getattr(layers, "polar", None)
            self._polar = polar(self._positions) if polar is not None else None  # PoPE's phases (L, d)
        start, end = self.offset, self.offset + n
        if end > self.max_len:
            raise ValueError(f"cache: {end} positions exceed the cache's max_len={self.max_len}")
        q_pos, k_pos = self._positions[start:end], self._positions[:end]
        bias = None
        if layers.rel_pos is not None:
            bias = layers.rel_pos(q_pos, k_pos)  # (1, h, n, m + n)
        elif layers.alibi is not None:
            bias = layers.alibi(q_pos, k_pos)
        return SharedAttentionInputs(
            rotary=self._rotary[:, start:end] if self._rotary is not None else None,  # (2, n, r)
            key_rotary=self._rotary[:, :end] if self._rotary is not None else None,  # (2, m + n, r)
            attn_bias=bias,
            qk_pos=self._qk_pos[start:end] if self._qk_pos is not None else None,  # (n, D)
            polar=(self._polar[start:end], layers.polar.key_phase()) if self._polar is not None else None,
        )

    #
    # ## The growing key mask
    def extend_mask(self, mask: Optional[Tensor], n: int) -> Optional[Tensor]:
        """Record the padding mask of `n` new tokens; return the mask of every cached key."""
        if self.mask is None:
            if mask is None:
                return None
            # Every position not marked otherwise is a real token.
            self.mask = torch.ones(self._batch, self.max_len, dtype=torch.bool, device=mask.device)
        if mask is not None:
            self.mask[:, self.offset:self.offset + n] = mask
        return self.mask[:, :self.offset + n]  # (b, m + n)

    def advance(self, n: int) -> None:
        """Called by the stack after a forward pass over `n` new tokens."""
        self.offset += n

    #
    # ## Forgetting the last tokens
    #
    # Speculative decoding ([speculative](speculative.md)) feeds guesses that may be rejected.
    # Moving the offsets back forgets them: their keys stay in the buffers until later tokens
    # overwrite them, and no query sees past the offset.  Token shift keeps the last inputs
    # themselves, which cannot be taken back.
    def rewind(self, offset: int) -> None:
        """Keep only the first `offset` cached positions."""
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= self.offset:
            raise ValueError(f"offset: expected an integer in [0, {self.offset}], got {offset!r}")
        if any(block.shift is not None for block in self.blocks):
            raise ValueError("rewind: token shift keeps the last inputs of each block, which cannot be rewound")
        if any(getattr(block.attn, "state", None) for block in self.blocks):
            raise ValueError("rewind: a layer carries a running state (a forget gate's sum, a recurrent branch), "
                             "which cannot be rewound")
        self.offset = offset
        for block in self.blocks:
            if isinstance(block.attn, SelfAttentionCache):
                block.attn.offset = offset
