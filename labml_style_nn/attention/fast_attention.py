r"""
# Making attention fast

The [attention page](attention.md) is the lesson: project, transform, score, bias, mask,
normalise, aggregate, gate, written out step by step on the explicit path.  This page holds what
makes the same function fast.  It is a mixin that `Attention` inherits, so the lesson reads
without it; nothing here changes what attention computes, and the tests check that each shortcut
gives what the explicit path gives.

## The tricks, and what each one buys

**The fused kernel.**  When no step needs the score matrix itself (no score transform, the softmax
normaliser), `F.scaled_dot_product_attention` computes $\operatorname{softmax}(QK^\top/\sqrt d + B)V$
in one call, without keeping the $h \times n \times n$ weights for the backward pass.  Any bias and
the visibility are folded into its `attn_mask`.  Measured: an encoder forward over 1024 tokens with
padding (1024 x 1024 scores per head), 1.26x faster than the same module forced onto the explicit
path: 79 ms against 100 ms (2 layers of width 256, one thread, CPU time, measured when this page
was written; the [benchmarks](../../docs/benchmarks.md) page keeps the maintained figures).

**Masks without a heads axis.**  Padding and causality are a boolean `(b, 1, i, j)` mask, and
plain causal attention passes `is_causal=True` so the kernel builds the triangle itself; a bias with
a heads axis is the only reason to build `(b, h, i, j)`.  Measured against x-transformers 2.31,
whose flash path expands the padding mask to every head: an encoder forward over 4096 tokens with
padding takes 0.52 of its time and 0.30 of its peak memory (108.6 MiB against 363.8 MiB).

**Masks once per forward pass.**  Which keys each query sees, and the bias padded for persistent
memory slots, depend only on the positions and the padding, so every self-attention layer of a
stack would build the same ones.  `_masks` keeps them on the inputs the stack shares with its
layers, keyed by everything they depend on (the key mask by its `id`, kept alive alongside so the
`id` cannot be reused), and the fused kernel's mask is built on first use.  Measured on a training step of
a depth-8 ALiBi decoder with padding (batch 8 x 256): 1354 ms against 1375 ms when every layer
builds its own (1.02x, CPU time, one thread).  Building a mask is cheap next to the matrix
multiplies; the sharing also keeps one mask and one padded bias alive instead of one per layer.

**The one-token step.**  In generation every step after the first brings one token, which may see
every cached key: causality holds by construction, so no mask is built (only left padding masks
keys), $q, k, v$ are views of one matrix multiply, one rotation turns $q$ and $k$ together, and
grouped query heads become queries of their key/value head instead of copies of the cache.
Measured on a 4-layer, width-256 rotary decoder generating 128 tokens: 4.03 ms per token against
4.19 ms through the general path (1.04x, CPU time, one thread): at these sizes a step is mostly
the matrix multiplies both paths share.

The explicit path has its own economies, on the lesson's page: one batched `matmul` instead of an
`einsum`, the scale applied to $q$ ($n d$ values) instead of the scores ($n^2$), the mask applied in
place to the biased scores.

Tests: `tests/core/test_attention_core.py` (fused equals explicit for self- and cross-attention,
masked and biased; no heads axis for padding and causality; masks built once per forward, not per
layer), `tests/attention/test_attn_paths.py` (which path each feature takes; fused equals explicit
per feature), `tests/generation/test_cache.py` (the one-token step equals a full pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..positional.rotary import apply_rotary
from .extension_points import SharedAttentionInputs, masked_fill_value
from .grouped_query import fused_attention, group_queries
from .sliding_window import last_keys


class FastPaths:
    """The fast paths of `Attention`: cached steps, shared masks, the fused kernel.

    A mixin: it reads what `Attention.__init__` sets and calls its `_visibility`; the annotations
    below only declare those attributes for type checkers.
    """

    training: bool
    heads: int
    kv_heads: int
    dim_head: int
    causal: bool
    max_attend_past: Optional[int]
    is_cross: bool
    scale: float
    uses_fused_path: bool
    # The extension points and projections (modules, or `None` where unused).
    to_q: Any
    to_qkv: Any
    to_out: Any
    qk_proj: Any
    qk_transform: Any
    memory_kv: Any
    output_gate: Any
    dropout: Any
    _visibility: Callable[..., Any]

    #
    # ### A cached cross-attention step: queries only
    #
    # The context's keys and values are computed at the first step of generation and cached; every
    # later step only projects its queries.

    def _queries(self, x: Tensor) -> Tensor:
        """Queries alone, for cross-attention steps whose keys and values are cached."""
        if self.qk_proj is not None:
            return self.qk_proj.queries(x)
        assert self.to_q is not None  # cross-attention without `qk_proj`
        return rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)

    @property
    def _plain_self_attention(self) -> bool:
        """Self-attention whose only extension points are rotary, `qk_transform`, bias and gates."""
        return not self.is_cross and self.qk_proj is None and self.memory_kv is None and self.uses_fused_path

    #
    # ### A cached step of one token
    #
    # During generation every step after the first brings one new token, which may see every cached
    # key: causality holds by construction, so no causal mask is built, only the padding of
    # left-padded prompts masks keys (and the new token itself is always visible, so no row is
    # empty).  $q, k, v$ are views of one matrix multiply, and one rotation turns $q$ and $k$.
    def _cached_step(self, x: Tensor, key_mask: Optional[Tensor], shared: SharedAttentionInputs, cache) -> Tensor:
        b, h, g, d = x.shape[0], self.heads, self.kv_heads, self.dim_head
        assert self.to_qkv is not None  # `_plain_self_attention` holds
        qkv = self.to_qkv(x).view(b, h + 2 * g, 1, d)  # (b, h + 2g, 1, d)
        q, k, v = qkv[:, :h], qkv[:, h:h + g], qkv[:, h + g:]
        if shared.rotary is not None and shared.rotary.shape[0] == 2:
            q, k = apply_rotary(qkv[:, :h + g], shared.rotary).split((h, g), dim=1)  # one rotation for both
        elif shared.rotary is not None:
            # xPos: queries and keys have their own rows (`positional/xpos.py`)
            q, k = apply_rotary(q, shared.rotary[:2]), apply_rotary(k, shared.rotary[2:])
        if self.qk_transform is not None:
            q, k = self.qk_transform.queries(q), self.qk_transform.keys(k)
        k, v = cache.update(k, v)  # (b, g, m + 1, d)
        bias = shared.attn_bias
        if self.max_attend_past is not None:
            # Sliding window: only the last $W + 1$ keys are visible.
            k, v, key_mask = last_keys(k, v, key_mask, self.max_attend_past)
            bias = None if bias is None else bias[..., -k.shape[-2]:]
        # Grouped heads: the $h/g$ query heads that share a key/value head are $h/g$ queries of it.
        q = group_queries(q, g)  # (b, g, h/g, d)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # (b, 1, 1, m + 1)
        if bias is not None:
            bias = bias.to(q.dtype).reshape(1, g, h // g, -1)  # (1, h, 1, m + 1) grouped as q
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, masked_fill_value(q.dtype))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout.p if self.training else 0.0, scale=self.scale)
        out = out.reshape(b, h, 1, d)
        if self.output_gate is not None:
            out = self.output_gate(out, x)
        return self.to_out(out.transpose(1, 2).reshape(b, 1, h * d))  # (b, 1, dim)

    #
    # ### Masks, once per forward pass
    #
    # Which keys each query sees and the bias padded for persistent slots depend only on the
    # positions and the padding, so every self-attention layer of a stack would build the same
    # ones: they are kept on the shared inputs (keyed by everything they depend on) and reused.
    def _masks(self, q, k, key_mask, offset, num_mem, shared: SharedAttentionInputs) -> dict:
        key = None if self.is_cross else (self.causal, self.max_attend_past, q.shape[-2], k.shape[-2], offset,
                                          num_mem, q.dtype, id(key_mask))
        if key in shared.masks:
            return shared.masks[key]
        visible, has_key = self._visibility(q, k, key_mask, offset, num_mem)
        bias = None if self.is_cross else shared.attn_bias
        if bias is not None and num_mem:
            bias = F.pad(bias, (num_mem, 0))
        # `key_mask` is kept so that its `id` in the key cannot be reused by another tensor.
        m = dict(visible=visible, has_key=has_key, bias=bias, key_mask=key_mask)
        if key is not None:
            shared.masks[key] = m
        return m

    #
    # ### The fused path
    #
    # Biases and masks are folded into one additive `attn_mask` only when a bias is present.
    def _fused(self, q, k, v, m: dict):
        if "fused" not in m:
            m["fused"] = self._fused_mask(q, k, m["visible"], m["bias"], m["has_key"])
        attn_mask, is_causal = m["fused"]
        has_key = m["has_key"]
        out = fused_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                              dropout_p=self.dropout.p if self.training else 0.0, scale=self.scale)
        return out if has_key is None else out * has_key

    def _fused_mask(self, q, k, visible, bias, has_key):
        """The kernel's `(attn_mask, is_causal)`: built once per forward, on first use."""
        if bias is not None:
            attn_mask = bias.to(q.dtype)
            if visible is not None:
                attn_mask = attn_mask.masked_fill(~visible, masked_fill_value(q.dtype))
            return attn_mask, False
        if visible is not None and self.causal and self.max_attend_past is None and has_key is None \
                and visible.shape[0] == 1 and q.shape[-2] == k.shape[-2]:
            # Plain causal attention: let the kernel build the triangle itself.
            return None, True
        return visible, False
