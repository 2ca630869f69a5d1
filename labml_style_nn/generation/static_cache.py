r"""
# A static decoding step: a fixed key/value buffer and a compiled step

At batch 1 a decoding step of a small model is a few hundred tiny kernels, and most of its time is
spent *between* them: Python walking the layers, the dispatcher, allocating each small result.
A compiler removes that overhead by tracing the whole step into one graph, fusing the element-wise
work and calling the result as a single function.  But a compiler specialises on shapes and on
Python numbers, and the [key/value cache](kv_cache.md) changes both at every step: it returns
`K[:, :, :t + 1]`, one key longer each time, and counts its tokens in a Python `int`.  Every step
would be a new graph to compile.

The static cache keeps everything about the step fixed except the *values* of tensors:

* the keys and values live in buffers of a fixed length $L$ (the whole generation), and step $t$
  **writes** its key at index $t$ (`index_copy_`) instead of growing a slice;
* the position $t$ is a 0-d tensor, advanced in place, so the compiled graph reads it as data;
* attention runs over all $L$ slots, and a mask hides the ones not written yet:

$$K_{:, t} \leftarrow k_t, \qquad o_t = \operatorname{softmax}\!\left(\frac{q_t K^\top}{\sqrt d} + B_t + M_t\right) V,
\qquad M_{t j} = \begin{cases} 0 & j \le t \\ -\infty & j > t \end{cases}$$

Rotary angles, the ALiBi or T5 bias and position-infused sinusoids are gathered at the index $t$
from tables computed once for all $L$ positions.  With these the step compiles with
`torch.compile(fullgraph=True, dynamic=False)` once and runs every later step from the same graph
(`tests/generation/test_static_decoding.py` counts the compilations).  The price is attention over
$L$ keys instead of $t + 1$, a few thousand multiply-adds per head at the lengths where the
overhead matters.

On CUDA the fixed shapes also allow capturing the step as a **CUDA graph**
(`mode="reduce-overhead"`): the buffers are marked as static addresses
(`torch._dynamo.mark_static_address`) so that the graph may write into them.  That path is written
but has not been measured here (the machine had no GPU).

The first call (the prompt) runs eagerly with ordinary Python positions; only the one-token steps
after it are compiled, by the loop of [compiled decoding](compiled_decoding.md), which also puts
the sampling inside the graph and calls the graph without Dynamo after the first step.
`AutoregressiveWrapper.generate(..., compile=True)` uses them; stacks with token shift decode
eagerly (with a warning).  A **sliding-window** stack (`attn_max_attend_past=W`) gets a ring of
$W + 1$ slots instead of $L$ (`StaticWindowCache`, below), so its memory stays flat as with the
[rolling cache](rolling_cache.md).

**Evidence.**  Compiled, eager and static decoding give the same tokens (greedy and sampled with one
seed, also for a window model far past its window), and calls of 19 and 11 steps compile a single
graph (`tests/generation/test_static_decoding.py`).  Speed, on a quiet 2-core CPU, 2 threads,
wall clock, batch 1, `dim=256, depth=4`, 256 tokens, top-$k$ sampling, decoders alternated in one
process ([benchmarks](../../docs/benchmarks.md)): `compile=True` generates 774 and 497 tokens/s in
two runs, against 328 and 289 eager and 170 and 153 for x-transformers' cached `generate`:
**4.54x and 3.25x** x-transformers (on the shared machine, one thread, CPU time: 2.89x to 3.38x in
five runs), 0.16-0.34 of the bound from reading every weight once per token.  A compiled network alone, with sampling
and Dynamo's prologue outside the graph, gave 2.2-2.5x; what remains is mostly the matrix-vector
products themselves.

Shapes: `b` batch, `h` key/value heads, `L` buffer length, `d` head dim, `n` new tokens.

## Differences from common practice

Fast decoders (gpt-fast, Hugging Face's `StaticCache`) pass the position as an argument of the
step; here the cache owns it and the layer stack advances it, so the compiled step is the model's
ordinary forward pass with a different cache object.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..attention.extension_points import SharedAttentionInputs
from .kv_cache import CrossAttentionCache, LayersCache, SelfAttentionCache
from .rolling_cache import RollingAttentionCache, RollingLayersCache, key_angles


class StaticSelfAttentionCache:
    """Keys and values of one self-attention layer in fixed `(b, h, L, d)` buffers."""

    def __init__(self, owner: StaticLayersCache):
        self.owner = owner
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None

    @property
    def offset(self) -> Union[int, Tensor]:
        return self.owner.key_offset

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write `(b, h, n, d)` keys and values at the current positions; return the whole buffers."""
        if self.k is None or self.v is None:  # (set together)
            # Zeros, not garbage: a masked slot still multiplies its zero weight with its value, and
            # $0 \cdot \text{NaN}$ would be NaN.
            self.k = k.new_zeros(*k.shape[:2], self.owner.max_len, k.shape[-1])  # (b, h, L, d)
            self.v = v.new_zeros(*v.shape[:2], self.owner.max_len, v.shape[-1])
            self.owner.mark_static(self.k, self.v)  # for CUDA graphs
        # $K_{:, t} \leftarrow k_t$ for the new positions $t$
        index = self.owner.index
        assert index is not None  # the stack's `shared_inputs` set it before the layers run
        self.k.index_copy_(2, index, k)
        self.v.index_copy_(2, index, v)
        return self.k, self.v  # (b, h, L, d)


class StaticLayersCache(LayersCache):
    """A `LayersCache` whose buffers, masks and positional inputs have the same shape at every step.

    `offset` is the Python int `0` before the first forward pass and a 0-d tensor afterwards, so that
    a compiled step reads the position as data instead of specialising on it.
    """

    _positions: Tensor  # `(L,)`, set at construction (the growing cache makes it at the first step)

    def __init__(self, layers, batch: int, max_len: int):
        self.started = False
        super().__init__(layers, batch, max_len)
        for block in self.blocks:
            if isinstance(block.attn, SelfAttentionCache):
                block.attn = StaticSelfAttentionCache(self)
        device = next(layers.parameters()).device
        self.position = torch.zeros((), dtype=torch.long, device=device)  # the next position $t$
        self._positions = torch.arange(max_len, device=device)  # (L,)
        self.index: Optional[Tensor] = None
        self._tables = False

    @property
    def offset(self) -> Union[int, Tensor]:
        return self.position if self.started else 0

    @property
    def key_offset(self) -> Union[int, Tensor]:
        """Where the new queries sit among the keys the attention gets (here: the position itself)."""
        return self.offset

    @offset.setter
    def offset(self, value: int) -> None:
        # The base class starts its counter at 0; the position tensor takes its place.
        if value != 0:
            raise ValueError("offset: a static cache moves with advance() and rewind()")

    def mark_static(self, *buffers: Tensor) -> None:
        """On CUDA, let a captured graph write into `buffers` and read the position and tables in place.

        A new cache has new addresses, so each `generate` call records its CUDA graph again (a
        recording, not a recompilation).
        """
        if buffers[0].is_cuda:
            for t in (*buffers, self.position, self._positions, self._rotary, self._qk_pos, self.mask):
                if t is not None:
                    torch._dynamo.mark_static_address(t)

    #
    # ## Positional inputs, gathered at the position
    #
    # The tables cover all $L$ positions; the new tokens' rows are picked with `index_select`, and a
    # bias covers every slot of the buffer, $(1, h, n, L)$.
    def shared_inputs(self, layers, n: int, device) -> SharedAttentionInputs:
        if not self._tables:
            self._rotary = layers.rotary(self._positions) if layers.rotary is not None else None  # (2, L, r)
            self._qk_pos = layers.pia(self._positions) if layers.pia is not None else None  # (L, D)
            self._tables = True
        index = self._new_positions(n)
        bias = None
        if layers.rel_pos is not None:
            bias = layers.rel_pos(index, self._positions)  # (1, h, n, L)
        elif layers.alibi is not None:
            bias = layers.alibi(index, self._positions)
        return SharedAttentionInputs(
            rotary=self._rotary.index_select(1, index) if self._rotary is not None else None,  # (2, n, r)
            key_rotary=self._rotary,  # (2, L, r): every slot's position
            attn_bias=bias,
            qk_pos=self._qk_pos.index_select(0, index) if self._qk_pos is not None else None,  # (n, D)
        )

    #
    # ## The key mask: written slots and padding
    #
    # $M_{tj} = 0$ for $j < t + n$, the slots written so far (causality among the new tokens is the
    # attention's own mask); left padding marked at the first call stays marked.
    def extend_mask(self, mask: Optional[Tensor], n: int) -> Tensor:
        index = self._new_positions(n)
        if mask is not None:
            if self.mask is None:
                self.mask = torch.ones(self._batch, self.max_len, dtype=torch.bool, device=mask.device)
            self.mask.index_copy_(1, index, mask)
        written = (self._positions < self.position + n).expand(self._batch, -1)  # (b, L)
        return written if self.mask is None else self.mask & written  # (b, L)

    def _new_positions(self, n: int) -> Tensor:
        r"""The positions $t \dots t + n - 1$ of the new tokens, `(n,)`."""
        if not self.started and n > self.max_len:
            raise ValueError(f"cache: {n} positions exceed the cache's max_len={self.max_len}")
        self.index = self.position + self._positions[:n]
        return self.index

    def advance(self, n: int) -> None:
        r"""$t \leftarrow t + n$, in place: a compiled step mutates the tensor it read."""
        self.position += n
        if not self.started:
            self.started = True

    def rewind(self, offset: int) -> None:
        """Forget everything from position `offset` on (later steps overwrite it)."""
        self.position.fill_(offset)
        self.started = offset > 0


#
# ## What the static step supports, and compiling it
def static_blocker(layers, window: bool = False) -> Optional[str]:
    """Why the stack `layers` cannot decode with a static cache, or `None` when it can.

    A sliding-window stack can with `StaticWindowCache` (`window=True`), not with the full-length one.
    """
    if any(block.shift is not None for block in layers.blocks):
        return "token shift reads the mask of the current tokens, which a static cache does not keep apart"
    if any(getattr(block.fn, "stateful", False) for block in layers.blocks):
        return "a layer carries a running state (a forget gate's sum, a recurrent branch) that a static cache does not"
    if layers.options.attn.max_attend_past is not None and not window:
        return "a sliding window keeps the last keys of a growing cache (the rolling cache does that)"
    return None


#
# ## A sliding window: a ring of $W + 1$ slots
#
# With `attn_max_attend_past=W` the [rolling cache](rolling_cache.md) keeps position $p$ in slot
# $p \bmod C$, $C = W + 1$.  The static version keeps that layout with a tensor position: step $t$
# writes slot $t \bmod C$, the attention gets all $C$ slots with those written so far marked, and
# its query sits at $\min(t, W)$ among them, so that the window mask passes every written slot
# (all of them are within the window).  A bias gets each slot's position
# $p(s) = t - ((t \bmod C - s) \bmod C)$; rotary angles are computed for $t$ itself.  The prompt runs
# eagerly through the rolling cache, whose buffers this cache then takes over.
class StaticWindowCache(StaticLayersCache):
    """The static cache of a sliding-window stack, continuing `rolling` after the prompt."""

    def __init__(self, layers, rolling: RollingLayersCache):
        super().__init__(layers, rolling._batch, rolling.layout.capacity)
        for mine, theirs in zip(self.blocks, rolling.blocks, strict=True):
            attn = theirs.attn
            if isinstance(mine.attn, StaticSelfAttentionCache) and isinstance(attn, RollingAttentionCache):
                mine.attn.k, mine.attn.v = attn.k, attn.v
            elif isinstance(attn, CrossAttentionCache):
                mine.attn = attn  # the context's keys, computed at the prompt
        self.mask = rolling.mask
        self.position.fill_(rolling.layout.seen)
        self.started, self._tables = True, True  # (angles are computed per step)

    @property
    def key_offset(self) -> Tensor:
        return self.position.clamp(max=self.max_len - 1)

    def _new_positions(self, n: int) -> Tensor:
        t = self.position + self._positions[:n]  # (n,)
        self.index = t % self.max_len  # their slots
        return t

    def shared_inputs(self, layers, n: int, device) -> SharedAttentionInputs:
        t = self._new_positions(n)
        scheme = layers.rel_pos if layers.rel_pos is not None else layers.alibi
        # $p(s) = t - ((t \bmod C - s) \bmod C)$ for every slot $s$
        k_pos = t[-1] - (t[-1] % self.max_len - self._positions) % self.max_len  # (C,)
        return SharedAttentionInputs(rotary=layers.rotary(t) if layers.rotary is not None else None,
                                     attn_bias=scheme(t, k_pos) if scheme is not None else None,
                                     key_rotary=key_angles(layers, k_pos))

    def extend_mask(self, mask: Optional[Tensor], n: int) -> Tensor:
        slots = self._new_positions(n) % self.max_len
        written = (self._positions <= self.position).expand(self._batch, -1)  # (b, C): all, once wrapped
        if self.mask is None:
            return written
        self.mask.index_fill_(1, slots, True)  # a generated token is a real one
        return self.mask & written


def round_up(length: int, multiple: int = 64) -> int:
    """Buffer lengths in steps of `multiple`, so that calls of similar lengths share one compiled step.

    >>> round_up(272)
    320
    """
    return -(-length // multiple) * multiple
