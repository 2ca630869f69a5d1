r"""
# The rolling key/value cache of sliding-window attention

*Papers:* [Mistral 7B](https://arxiv.org/abs/2310.06825) (Jiang et al., 2023),
[Longformer: The Long-Document Transformer](https://arxiv.org/abs/2004.05150) (Beltagy et al., 2020)

With [sliding-window attention](../attention/sliding_window.md) (`attn_max_attend_past=W`,
Longformer's causal window) query $t$ sees only keys $t - W \dots t$.  A key that has left the
window never comes back, so a cache of $C = W + 1$ slots per layer is enough for a sequence of any
length: position $p$ lives in slot

$$s(p) = p \bmod C,$$

and writing token $t$ overwrites token $t - C$, the one that just left the window (Mistral's
"rolling buffer cache").  Memory is flat in the length of the sequence, and so is the cost of a
step.  `generate` uses this cache for every stack with `attn_max_attend_past` (and no memory
tokens).

The slots are not in position order once the buffer has wrapped around, and they need not be:
attention is a weighted sum over keys, $o = \sum_j \operatorname{softmax}_j(S)\, v_j$, which does not
depend on the order of the $(k_j, v_j)$ pairs as long as each key keeps its value and its position.
Positions travel with the keys: a rotary key was rotated by its own position when it was computed
and is stored rotated; a bias scheme (ALiBi, T5) gets the position of every slot,

$$p(s) = t - \big((s(t) - s) \bmod C\big)$$

for the slot $s$ seen from the newest token $t$.  So a rolling generation equals one windowed pass
over the whole sequence, as long as positions are relative (learned absolute positions end at
`max_seq_len`: past it the wrapper refuses them and `generate` decodes without a cache).

A step of $n > 1$ tokens (the prompt) sees the last $W$ cached keys in position order followed by its
own keys; the stack's window mask does the rest, and the last $C$ of them are written to their slots.

The first slots can be **pinned**: the first `pinned` tokens are never evicted and the rolling part
has $C - \text{pinned}$ slots.  That is what [attention sinks](attention_sinks.md) need; this page's
cache has none.

Shapes: `b` batch, `g` key/value heads, `C` slots, `d` head dim, `n` new tokens.

## Differences from the paper

* Mistral's rolling buffer is written at $p \bmod C$ too; its chunked prefill (a long prompt cut
  into window-sized pieces) is not implemented: a prompt is one step, attending within itself.
## Evidence

* `tests/generation/test_rolling_cache.py`: a generation through the rolling cache equals one
  windowed pass over the whole sequence ($W = 5$, 32 tokens, the buffer wrapped five times) for
  rotary, ALiBi, T5, no positions, grouped-query heads and the explicit attention path, for prompts
  of 1, 4 and 13 tokens, for steps of 3 tokens and for left-padded rows; the buffers hold $W + 1$
  slots and are never reallocated; `generate` picks the cache and decodes the same tokens as
  without a cache.
* [`experiments/benchmarks/long_context.py`](../../experiments/benchmarks/long_context.md): the peak
  memory of generating 1, 2, 3 and 4 times `max_seq_len` tokens is 1.24 MiB each time (max / min
  1.002, goal <= 1.10), against 1.27 to 4.37 MiB with the growing cache.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..attention.extension_points import SharedAttentionInputs
from ..attention.latent_attention import needs_key_angles
from ..residual.token_shift import ShiftState
from .kv_cache import CrossAttentionCache


#
# ## Where each position lives
class RollingLayout:
    r"""Slots of `pinned` never-evicted tokens followed by `window` rolling slots; shared by the layers.

    >>> lay = RollingLayout(window=3)
    >>> [lay.slot(p) for p in range(7)]
    [0, 1, 2, 0, 1, 2, 0]
    >>> lay.seen = 6; lay.slot_positions(1).tolist()   # token 6 written at slot 0, tokens 4, 5 in 1, 2
    [6, 4, 5]
    """

    def __init__(self, window: int, pinned: int = 0):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window: expected a positive integer number of rolling slots, got {window!r}")
        if isinstance(pinned, bool) or not isinstance(pinned, int) or pinned < 0:
            raise ValueError(f"pinned: expected an integer >= 0, got {pinned!r}")
        self.window, self.pinned, self.capacity = window, pinned, window + pinned
        # Tokens processed before the current step: the position $t_0$ of its first token.
        self.seen = 0

    def slot(self, p: int) -> int:
        r"""$s(p)$: a pinned token keeps its own slot, the others roll over the last `window`."""
        return p if p < self.pinned else self.pinned + (p - self.pinned) % self.window

    def shift(self) -> int:
        r"""How many tokens the current step's view has evicted, $\max(0, t_0 + 1 - C)$."""
        return max(0, self.seen + 1 - self.capacity)

    def held_before(self) -> int:
        """Cached keys a step sees before its own: all pinned ones and up to `window - 1` rolling ones."""
        return min(self.seen, self.capacity - 1)

    def ordered_positions(self) -> list[int]:
        """Positions of the keys a multi-token step sees before its own, oldest first."""
        t0 = self.seen
        first_rolling = max(self.pinned, t0 - (self.window - 1))
        return list(range(min(t0, self.pinned))) + list(range(first_rolling, t0))

    def kept(self, n: int) -> list[int]:
        """Positions of a step of `n` tokens that stay cached after it: pinned ones and the last `window`."""
        t0 = self.seen
        return [p for p in range(t0, t0 + n) if p < self.pinned or p >= max(self.pinned, t0 + n - self.window)]

    def slot_positions(self, n: int, device=None) -> Tensor:
        r"""Positions of the keys a step of `n` tokens attends to, in the order the cache returns them.

        Pinned keys appear at $\text{shift} + j$: contiguous with the oldest rolling key, as if
        the evicted tokens had never been there.  A one-token step returns the slots in slot
        order, a longer step the held keys in position order and then its own.
        """
        t0, shift = self.seen, self.shift()
        if n > 1:
            held = [p + shift if p < self.pinned else p for p in self.ordered_positions()]
            return torch.tensor(held + list(range(t0, t0 + n)), device=device)
        count = min(t0 + 1, self.capacity)
        s = torch.arange(count, device=device)
        if t0 < self.pinned:
            return s  # nothing rolls yet
        # $p(s) = t - ((s(t) - s) \bmod W)$ for the rolling slots, $s + \text{shift}$ for the pinned ones
        rolling = t0 - (self.slot(t0) - s) % self.window
        return torch.where(s < self.pinned, s + shift, rolling)


def key_angles(layers, k_pos: Tensor) -> Optional[Tensor]:
    """Rotary angles of the keys at `k_pos`, when some layer rotates keys recomputed from cached latents."""
    if layers.rotary is None or not needs_key_angles(layers.options):
        return None
    return layers.rotary(k_pos)  # (2, keys, r)


#
# ## One layer's keys and values
class RollingAttentionCache:
    """Keys and values of one self-attention layer in `layout.capacity` slots, written in place."""

    def __init__(self, layout: RollingLayout):
        self.layout = layout
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None

    @property
    def offset(self) -> int:
        """Cached keys in front of the new ones in what `update` returns (the attention's causal offset)."""
        return self.layout.held_before()

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write `(b, g, n, d)` keys and values into their slots; return those the step attends to."""
        lay, n = self.layout, k.shape[-2]
        if self.k is None or self.v is None:  # (set together)
            # Allocated once; the cache never grows.
            self.k = k.new_zeros(*k.shape[:2], lay.capacity, k.shape[-1])  # (b, g, C, d)
            self.v = v.new_zeros(*v.shape[:2], lay.capacity, v.shape[-1])
        t0 = lay.seen
        if n == 1:
            # Token $t$ overwrites token $t - C$ in place; every filled slot is visible.
            s = lay.slot(t0)
            self.k[:, :, s] = k[:, :, 0]
            self.v[:, :, s] = v[:, :, 0]
            self.written([t0], k)
            self.refresh_pinned()
            count = min(t0 + 1, lay.capacity)
            return self.k[:, :, :count], self.v[:, :, :count]  # (b, g, count, d)
        # Several tokens: the held keys in position order, then the new ones.
        self.refresh_pinned()
        order = torch.tensor([lay.slot(p) for p in lay.ordered_positions()], device=k.device, dtype=torch.long)
        keys = torch.cat((self.k.index_select(2, order), k), dim=2)  # (b, g, held + n, d)
        values = torch.cat((self.v.index_select(2, order), v), dim=2)
        # Only the tokens still cached after this step are written: pinned ones and the last `window`.
        keep = lay.kept(n)
        idx = torch.tensor([p - t0 for p in keep], device=k.device, dtype=torch.long)
        slots = torch.tensor([lay.slot(p) for p in keep], device=k.device, dtype=torch.long)
        self.k.index_copy_(2, slots, k.index_select(2, idx))
        self.v.index_copy_(2, slots, v.index_select(2, idx))
        self.written(keep, k)
        return keys, values

    #
    # Hooks for pinned tokens (attention sinks re-rotate them); nothing to do here.
    def written(self, positions, k: Tensor) -> None:
        """Called after the tokens at `positions` were written."""

    def refresh_pinned(self) -> None:
        """Bring the pinned slots to the current step's positions."""


class RollingBlockCache:
    """What one block carries between steps: a rolling attention cache and/or a token-shift state."""

    def __init__(self, kind: str, layout: RollingLayout, shifts: bool, attention_cache=RollingAttentionCache):
        self.attn = attention_cache(layout) if kind == "a" else CrossAttentionCache() if kind == "c" else None
        self.shift = ShiftState() if shifts else None


#
# ## The cache of a whole stack
class RollingLayersCache:
    r"""The rolling cache of an `AttentionLayers` stack: `window` slots per layer (plus `pinned`).

    For a sliding-window stack (`attn_max_attend_past=W`) use `window = W + 1`, which
    `for_window` does.  The stack calls `shared_inputs`, `extend_mask` and `advance` exactly as for
    the growing [key/value cache](kv_cache.md).
    """

    attention_cache = RollingAttentionCache
    layout_class = RollingLayout

    def __init__(self, layers, batch: int, window: int, pinned: int = 0):
        if getattr(layers, "pia", None) is not None:
            raise ValueError("layers: position infused attention adds absolute positions to the keys; "
                             "a rolling cache needs relative positions")
        self.layout = self.layout_class(window, pinned)
        self._batch = batch
        self.blocks = [RollingBlockCache(b.kind, self.layout, b.shift is not None, self.attention_cache)
                       for b in layers.blocks]
        self.mask: Optional[Tensor] = None

    @classmethod
    def for_window(cls, layers, batch: int) -> RollingLayersCache:
        """The cache of a stack with `attn_max_attend_past=W`: $W + 1$ slots per layer."""
        w = layers.options.attn.max_attend_past
        if w is None:
            raise ValueError("layers: a rolling cache of the window needs attn_max_attend_past=W on the stack")
        return cls(layers, batch, window=w + 1)

    @property
    def offset(self) -> int:
        """Tokens processed so far: the position of the next token."""
        return self.layout.seen

    #
    # ### Positions of the next tokens
    #
    # Rotary angles are computed for the $n$ new positions only (no table over the whole
    # generation, so memory stays flat); a bias gets each returned key's position.
    def shared_inputs(self, layers, n: int, device) -> SharedAttentionInputs:
        """Positional inputs of the next `n` tokens for the stack `layers`."""
        t0 = self.layout.seen
        q_pos = torch.arange(t0, t0 + n, device=device)
        k_pos = self.layout.slot_positions(n, device)
        bias = None
        if layers.rel_pos is not None or layers.alibi is not None:
            scheme = layers.rel_pos if layers.rel_pos is not None else layers.alibi
            bias = scheme(q_pos, k_pos)  # (1, h, n, keys)
        return SharedAttentionInputs(rotary=layers.rotary(q_pos) if layers.rotary is not None else None,
                                     attn_bias=bias, key_rotary=key_angles(layers, k_pos))

    #
    # ### The key mask, rolled like the keys
    def extend_mask(self, mask: Optional[Tensor], n: int) -> Optional[Tensor]:
        """Record the padding mask of `n` new tokens; return the mask of the keys the step sees."""
        lay = self.layout
        if self.mask is None:
            if mask is None:
                return None
            # Every position not marked otherwise is a real token.
            self.mask = torch.ones(self._batch, lay.capacity, dtype=torch.bool, device=mask.device)
        new = mask if mask is not None else self.mask.new_ones(self._batch, n)
        t0 = lay.seen
        if n == 1:
            self.mask[:, lay.slot(t0)] = new[:, 0]
            return self.mask[:, :min(t0 + 1, lay.capacity)]
        order = torch.tensor([lay.slot(p) for p in lay.ordered_positions()], device=new.device, dtype=torch.long)
        out = torch.cat((self.mask.index_select(1, order), new), dim=1)  # (b, held + n)
        for p in lay.kept(n):
            self.mask[:, lay.slot(p)] = new[:, p - t0]
        return out

    def advance(self, n: int) -> None:
        """Called by the stack after a forward pass over `n` new tokens."""
        self.layout.seen += n
