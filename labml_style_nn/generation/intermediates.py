r"""
# Intermediates: x-transformers' spelling of the key/value cache

x-transformers hands its cache around as the *intermediates* of a forward pass:

```python
logits, cache = model(x, return_intermediates=True)            # the prompt
logits, cache = model(torch.cat((x, token), 1), cache=cache,   # the whole sequence again,
                      return_intermediates=True)               # only the new token is run
```

The same object carries what else the pass computed: every self-attention layer's input
(`hiddens`, the Transformer-XL memories), the final hidden states, the attention weights of every
layer (`attn_intermediates[l].post_softmax_attn`, `(b, h, i, j)`), PaLM's attention z-loss, the
pooled tokens of an attention pool.

Here there is **one cache underneath**, the preallocated [`LayersCache`](kv_cache.md), and two
spellings at the surface: `cache=LayersCache(...)` (written into in place, as this library's
generation does) and `cache=intermediates` (x-transformers').  An intermediates object is a
*snapshot*: it records how many tokens it covers, $L$, and the `LayersCache` it shares with the
calls made from it.  Passing it again resumes from position $L$:

$$\text{cache}_L \xrightarrow{\;x_{L+1..L+n}\;} \text{cache}_{L+n}, \qquad
\text{keys } 1..L \text{ read, keys } L+1..L+n \text{ written}$$

so a call from an older snapshot first moves the cache's offset back to $L$ (as speculative
decoding rewinds rejected guesses).  A snapshot whose positions a later call has overwritten
(two branches from one prefix) is refused with a `ValueError`, instead of silently reading the
other branch's keys; `copy.deepcopy` gives a branch its own buffers.  The buffers grow (doubling)
when a call runs past them, so a cache that started at the prompt's length serves any length the
positions allow.

**Differences from x-transformers.**  Its intermediates hold the keys and values themselves,
concatenated afresh at each step, so every snapshot stays valid; here they are views of one
preallocated cache (no copies per step), and only the snapshots on the current branch remain usable.
Its `cache=` call feeds the whole sequence and runs the *last* token; here it runs every token
after the $L$ cached ones (the same when one token is added).  Attention weights are recorded only
when no cache is passed in (the first call), since a cached step takes a fused kernel.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys, `L` cached tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from .kv_cache import CrossAttentionCache, LayersCache, SelfAttentionCache


@dataclass
class AttentionIntermediate:
    """What one attention layer computed: its weights, and its masked scores before the softmax."""

    post_softmax_attn: Optional[Tensor] = None  # (b, h, i, j)
    pre_softmax_attn: Optional[Tensor] = None  # (b, h, i, j), masked entries at the most negative number
    layer_type: Optional[str] = None  # "a" self-attention, "c" cross-attention


class AttentionRecord(list):
    """The list a stack's attention layers append their weights to (`attn_sink`), which also keeps
    each layer's pre-softmax scores in `pre_softmax` when those are asked for (the z-loss)."""

    def __init__(self, pre_softmax: bool = False):
        super().__init__()
        self.pre_softmax: Optional[list[Tensor]] = [] if pre_softmax else None

    def intermediates(self, layer_types: list[str]) -> list[AttentionIntermediate]:
        kinds = [t for t in layer_types if t in ("a", "c")]
        pre = self.pre_softmax or [None] * len(self)
        return [AttentionIntermediate(w, s, kind) for w, s, kind in zip(self, pre, kinds, strict=True)]


class _SharedCache:
    """A `LayersCache` shared by the snapshots taken from it, and where each call started writing."""

    def __init__(self, cache: LayersCache, num_memory_tokens: int):
        self.cache, self.num_memory_tokens = cache, num_memory_tokens
        self.write_starts: list[int] = []


@dataclass
class LayerIntermediates:
    """x-transformers' intermediates of one forward pass; also a cache to continue from (`cache=`)."""

    hiddens: Optional[list[Tensor]] = None  # the stream each self-attention layer reads, before its pre-norm, (b, n, D)
    last_hidden: Optional[Tensor] = None  # the stack's output, after its final norm
    # What each self-attention layer's keys read from the stream before the pre-norm: `hiddens` plus the
    # reinjected input, or the aggregated mix; the Transformer-XL memories (x-transformers keeps `hiddens`).
    memory_inputs: Optional[list[Tensor]] = field(default=None, repr=False)
    attn_intermediates: list[AttentionIntermediate] = field(default_factory=list)
    attn_z_loss: Optional[Tensor] = None
    mems: Optional[list[Tensor]] = None
    last_layer_hiddens: Optional[Tensor] = None
    block_hiddens: Optional[list[Tensor]] = None  # each block's output, the last after the final norm
    initial_embeds: Optional[Tensor] = None
    attn_pooled_tokens: Optional[Tensor] = None
    memory_tokens: Optional[Tensor] = None
    logits: Any = None
    # Named scalar losses computed during the pass, already weighted (the attention z-loss, ...);
    # `AutoregressiveWrapper` adds their sum to its loss (generation/auxiliary_losses.py).
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    cache_length: int = 0  # tokens this snapshot covers (memory tokens not counted)
    shared_cache: Optional[_SharedCache] = field(default=None, repr=False)
    version: int = field(default=0, repr=False)  # how many calls had written when it was taken

    def __deepcopy__(self, memo):
        # A branch of its own: the cache's buffers are copied with it.
        out = copy.copy(self)
        out.shared_cache = copy.deepcopy(self.shared_cache, memo)
        return out


def new_shared_cache(layers, batch: int, length: int, num_memory_tokens: int = 0) -> _SharedCache:
    """A cache for a stack whose intermediates will be passed back (`return_intermediates=True`)."""
    return _SharedCache(LayersCache(layers, batch, max(length, 1)), num_memory_tokens)


def resume(intermediates: LayerIntermediates, n: int) -> tuple[_SharedCache, LayersCache]:
    """The cache of a snapshot, moved back to its position and with room for `n` more tokens."""
    shared = intermediates.shared_cache
    if shared is None:
        raise ValueError("cache: these intermediates hold no keys and values (the stack is not causal, or the "
                         "forward ran in training mode with gradients); call model.eval() or torch.no_grad()")
    end = intermediates.cache_length + shared.num_memory_tokens
    if any(start < end for start in shared.write_starts[intermediates.version:]):
        raise ValueError("cache: a later call from an earlier snapshot overwrote these intermediates' keys "
                         "and values; pass copy.deepcopy(intermediates) to branch from one prefix twice")
    cache = shared.cache
    if cache.offset != end:
        cache.rewind(end)
    if end + n > cache.max_len:
        grow(cache, max(2 * cache.max_len, end + n))
    shared.write_starts.append(end)
    return shared, cache


def snapshot(shared: Optional[_SharedCache], **fields) -> LayerIntermediates:
    """Intermediates covering what `shared`'s cache holds now."""
    length = shared.cache.offset - shared.num_memory_tokens if shared is not None else 0
    return LayerIntermediates(cache_length=length, shared_cache=shared,
                              version=len(shared.write_starts) if shared is not None else 0, **fields)


def grow(cache: LayersCache, max_len: int) -> None:
    """Move a cache's buffers into ones of `max_len` positions (the positional tables are recomputed)."""
    for block in cache.blocks:
        attn = block.attn
        if isinstance(attn, SelfAttentionCache) and attn.k is not None and attn.v is not None:
            for name in ("k", "v"):
                old = getattr(attn, name)
                new = old.new_empty(*old.shape[:2], max_len, old.shape[-1])  # (b, h, L', d)
                new[:, :, :attn.offset] = old[:, :, :attn.offset]
                setattr(attn, name, new)
        if isinstance(attn, SelfAttentionCache):
            attn.max_len = max_len
    if cache.mask is not None:
        mask = torch.ones(cache.mask.shape[0], max_len, dtype=torch.bool, device=cache.mask.device)
        mask[:, :cache.max_len] = cache.mask
        cache.mask = mask
    cache.max_len = max_len
    cache._positions = cache._rotary = cache._qk_pos = None  # recomputed for the new length


def select_rows(cache: LayersCache, rows: Tensor) -> None:
    """Keep (or repeat) batch rows `rows` of every buffer in the cache: beam search's reordering."""
    for block in cache.blocks:
        attn = block.attn
        if isinstance(attn, SelfAttentionCache) and attn.k is not None and attn.v is not None:
            attn.k, attn.v = attn.k[rows], attn.v[rows]
        elif isinstance(attn, CrossAttentionCache) and attn.kv is not None:
            attn.kv = (attn.kv[0][rows], attn.kv[1][rows])
        if block.shift is not None and block.shift.prev is not None:
            block.shift.prev = block.shift.prev[rows]
    if cache.mask is not None:
        cache.mask = cache.mask[rows]
    cache._batch = rows.shape[0]


def drop_cached(x: Tensor, mask: Optional[Tensor], cache_length: int) -> tuple[Tensor, Optional[Tensor]]:
    """x-transformers' `cache=` call feeds the whole sequence: keep the tokens after the `L` cached ones."""
    if x.shape[1] <= cache_length:
        raise ValueError(f"x: with cache= intermediates covering {cache_length} tokens, x holds the whole "
                         f"sequence and must be longer than that, got {x.shape[1]} tokens (or pass "
                         "input_not_include_cache=True and only the new tokens)")
    if mask is not None and mask.shape[-1] == x.shape[1]:
        mask = mask[:, cache_length:]
    return x[:, cache_length:], mask


def left_pad_mask(x: Tensor, mask: Optional[Tensor], seq_start_pos: Tensor, offset) -> Tensor:
    r"""The padding mask of a left-padded batch: position $t$ of row $b$ is real when $t \ge s_b$."""
    if not torch.is_tensor(seq_start_pos) or tuple(seq_start_pos.shape) != (x.shape[0],):
        raise ValueError(f"seq_start_pos: expected a tensor of shape ({x.shape[0]},), one start per row")
    positions = offset + torch.arange(x.shape[1], device=x.device)  # (n,)
    real = positions[None, :] >= seq_start_pos[:, None].to(x.device)  # (b, n)
    return real if mask is None else mask & real


def cached_kvs(intermediates: LayerIntermediates) -> list[tuple[Tensor, Tensor]]:
    """The keys and values a snapshot covers, one `(k, v)` `(b, h, L, d)` per self-attention layer."""
    shared = intermediates.shared_cache
    if shared is None:
        raise ValueError("self_attn_additional_kv: these intermediates hold no keys and values")
    end = intermediates.cache_length + shared.num_memory_tokens
    return [(b.attn.k[:, :, :end], b.attn.v[:, :, :end]) for b in shared.cache.blocks
            if isinstance(b.attn, SelfAttentionCache) and b.attn.k is not None and b.attn.v is not None]
