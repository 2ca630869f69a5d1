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

## Options of the fused path

These keywords change *how* attention runs, never what it computes; each is tested by checking that
the output is unchanged and that the path taken differs (`tests/attention/test_attn_execution.py`).

* `attn_flash` (default `False`).  In x-transformers, `flash=True` sends every layer to
  `F.scaled_dot_product_attention` and `flash=False` to its explicit path, refusing (with an
  assertion) the features that need the scores.  Here the fused kernel is already taken
  automatically whenever no step needs the scores, so `flash=False` keeps that automatic choice,
  and `flash=True` *forces* the fused kernel: a feature that needs the scores (talking heads,
  top-$k$, entmax, a custom normaliser, residual attention, returning the weights) is a
  `ValueError` naming `flash` and the feature, never a silent fall-back to the explicit path.
  As in x-transformers, the intermediates of a `flash=True` stack (`return_intermediates=True`)
  then hold no attention weights, where the default records them outside training.
  Unlike x-transformers, a T5 bias stays allowed: it is an additive mask the kernel accepts.
* `attn_attend_sdp_kwargs`, a dict of `enable_flash`, `enable_math`, `enable_mem_efficient` (and
  `enable_cudnn`), chooses which of PyTorch's SDPA backends may run, as x-transformers' `flash=True`
  layers do with `torch.nn.attention.sdpa_kernel`.  Only the backends set to `True` are allowed; the
  default (the first three on) leaves PyTorch's own choice untouched, and any other value restricts
  every fused call, whether `flash` is set or chosen automatically.  On a CPU only the math and
  flash backends exist; allowing none that can run is PyTorch's "No available kernel" error.
* `attn_onnxable` (default `False`): the kernel is never told `is_causal=True`, which an ONNX
  export turns into a `Trilu` operator that some runtimes lack; it gets the causal mask built by
  comparing positions instead (x-transformers builds its causal mask the same way with this flag).
* `attn_flash_pack_seq` (default `False`): x-transformers packs variable-length sequences into one
  row and calls the `flash-attn` package's variable-length CUDA kernel.  Neither that package nor a
  GPU is part of this library, and its SDPA path has no packed form, so `True` is refused with a
  `ValueError`; pad the sequences and pass `mask` instead.

Tests: `tests/core/test_attention_core.py` (fused equals explicit for self- and cross-attention,
masked and biased; no heads axis for padding and causality; masks built once per forward, not per
layer), `tests/attention/test_attn_paths.py` (which path each feature takes; fused equals explicit
per feature), `tests/generation/test_cache.py` (the one-token step equals a full pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..keywords import Keyword, declare, rule
from ..positional.rotary import apply_rotary
from .extension_points import SharedAttentionInputs, masked_fill_value
from .grouped_query import fused_attention, group_queries
from .sliding_window import last_keys

# x-transformers' names for PyTorch's SDPA backends, and its default: the first three allowed.
SDP_BACKENDS = {"enable_flash": SDPBackend.FLASH_ATTENTION, "enable_math": SDPBackend.MATH,
                "enable_mem_efficient": SDPBackend.EFFICIENT_ATTENTION, "enable_cudnn": SDPBackend.CUDNN_ATTENTION}
DEFAULT_SDP_KWARGS = dict(enable_flash=True, enable_math=True, enable_mem_efficient=True)


def _check_sdp_kwargs(name: str, value: dict) -> None:
    unknown = [k for k in value if k not in SDP_BACKENDS]
    if unknown or not all(isinstance(v, bool) for v in value.values()):
        raise ValueError(f"{name}: expected a dict of {', '.join(SDP_BACKENDS)} to True or False, got {value!r}")
    if not any(value.values()):
        raise ValueError(f"{name}: expected at least one backend set to True, got {value!r}")


def _refuse_pack_seq(name: str, value: bool) -> None:
    if value:
        raise ValueError(f"{name}: packed variable-length sequences need the flash-attn package's CUDA kernel, "
                         "which this library does not use; pad the sequences and pass mask instead")


KEYWORDS = declare(__name__, "attn",
    Keyword("flash", False, "force the fused SDPA kernel; a feature that needs the scores is refused"),
    Keyword("attend_sdp_kwargs", DEFAULT_SDP_KWARGS, "which SDPA backends the fused kernel may use "
            "(enable_flash, enable_math, enable_mem_efficient, enable_cudnn)", example=dict(enable_math=True),
            check=_check_sdp_kwargs),
    Keyword("onnxable", False, "build the causal mask by comparing positions, never is_causal (ONNX export)"),
    Keyword("flash_pack_seq", False, "packed sequences through flash-attn's CUDA kernel (refused here)",
            check=_refuse_pack_seq))

# Keywords whose technique needs the explicit scores, so `flash=True` refuses them.
NEEDS_SCORES = ("talking_heads", "pre_talking_heads", "post_talking_heads", "pre_scale_post_talking_heads",
                "sparse_topk", "use_entmax15", "custom_attn_fn")


@rule("attn")
def _flash_needs_no_scores(a, prefix: str, o) -> None:
    if not a.flash:
        return
    for name in NEEDS_SCORES:
        if getattr(a, name, None) not in (None, False):
            raise ValueError(f"{prefix}flash and {prefix}{name}: the fused kernel never shows the scores that "
                             f"{name} needs; drop {prefix}flash (the fused kernel is used whenever it can be)")
    for name in ("residual_attn", "cross_residual_attn"):
        if getattr(o, name, False):
            raise ValueError(f"{prefix}flash and {name}: residual attention passes the scores from layer to layer, "
                             "and the fused kernel keeps none")


def keeps_no_weights(layers) -> bool:
    """Whether a stack's self- or cross-attention was built with `flash=True`, so its intermediates
    hold no attention weights (as x-transformers' flash layers give none)."""
    options = getattr(layers, "options", None)
    return options is not None and any(getattr(a, "flash", False) for a in (options.attn, options.cross_attn))


@dataclass(frozen=True)
class FusedKernel:
    """How the fused kernel runs: forced (`flash`), on which SDPA backends, with an exportable mask."""

    # `flash=True`: never fall back to the explicit path.
    force: bool = False
    # The SDPA backends allowed, or `None` for PyTorch's own choice among all of them.
    allowed: Optional[tuple] = None
    # Never pass `is_causal=True` to the kernel (`onnxable`).
    onnxable: bool = False

    @classmethod
    def from_keywords(cls, flash: bool, attend_sdp_kwargs: dict, onnxable: bool) -> FusedKernel:
        """The settings of x-transformers' `flash`, `attend_sdp_kwargs` and `onnxable`."""
        allowed = None if attend_sdp_kwargs == DEFAULT_SDP_KWARGS else \
            tuple(SDP_BACKENDS[k] for k, on in attend_sdp_kwargs.items() if on)
        return cls(force=flash, allowed=allowed, onnxable=onnxable)

    def backends(self):
        """A context in which SDPA may use only the allowed backends (a no-op when all are)."""
        return contextlib.nullcontext() if self.allowed is None else sdpa_kernel(list(self.allowed))


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
    value_dim_head: int
    value_norm: Any
    sublayer_dropout: Any
    fused: FusedKernel

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
        return not self.is_cross and self.to_qkv is not None and self.qk_proj is None and self.memory_kv is None \
            and self.uses_fused_path and self.value_dim_head == self.dim_head

    #
    # ### A cached step of one token
    #
    # During generation every step after the first brings one new token, which may see every cached
    # key: causality holds by construction, so no causal mask is built, only the padding of
    # left-padded prompts masks keys (and the new token itself is always visible, so no row is
    # empty).  $q, k, v$ are views of one matrix multiply, and one rotation turns $q$ and $k$.
    #
    # `to_qkv` and `to_out` may be given as functions (the lean step's plan: `F.linear` on the
    # projections' weights, the inactive dropout after `to_out` left out, `generation/lean_step.py`).
    def _cached_step(self, x: Tensor, key_mask: Optional[Tensor], shared: SharedAttentionInputs, cache,
                     to_qkv: Optional[Callable] = None, to_out: Optional[Callable] = None) -> Tensor:
        b, h, g, d = x.shape[0], self.heads, self.kv_heads, self.dim_head
        assert self.to_qkv is not None  # `_plain_self_attention` holds
        qkv = (to_qkv or self.to_qkv)(x).view(b, h + 2 * g, 1, d)  # (b, h + 2g, 1, d)
        v = qkv[:, h + g:]
        if self.value_norm is not None:
            v = self.value_norm(v)
        if shared.rotary is not None and shared.rotary.shape[0] == 2 and self.qk_transform is None:
            qk = apply_rotary(qkv[:, :h + g], shared.rotary)  # one rotation for both
            q, k = qk[:, :h], qk[:, h:]
        else:
            q, k = qkv[:, :h], qkv[:, h:h + g]
            if self.qk_transform is not None:
                q, k = self.qk_transform.queries(q), self.qk_transform.keys(k)
            if shared.rotary is not None and shared.rotary.shape[0] == 4:
                # xPos: queries and keys have their own rows (`positional/xpos.py`)
                q, k = apply_rotary(q, shared.rotary[:2]), apply_rotary(k, shared.rotary[2:])
            elif shared.rotary is not None:
                q, k = apply_rotary(q, shared.rotary), apply_rotary(k, shared.rotary)
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
        with self.fused.backends():
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout.p if self.training else 0.0, scale=self.scale)
        if self.output_gate is not None:
            out = self.output_gate(out.reshape(b, h, 1, d), x).transpose(1, 2)
        out = out.reshape(b, 1, h * d)  # one token: its heads side by side
        if to_out is not None:
            return to_out(out)  # (b, 1, dim)
        return self.sublayer_dropout(self.to_out(out))  # (b, 1, dim)

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
        with self.fused.backends():
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
                and visible.shape[0] == 1 and q.shape[-2] == k.shape[-2] and not self.fused.onnxable:
            # Plain causal attention: let the kernel build the triangle itself (not with `onnxable`:
            # exported, `is_causal` becomes a `Trilu` operator; the mask made by comparing positions
            # exports to plain comparisons).
            return None, True
        return visible, False
