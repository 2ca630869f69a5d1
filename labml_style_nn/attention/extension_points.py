r"""
# The extension points of attention

The [attention module](attention.md) is a fixed sequence of steps; techniques change one step each
by plugging a small object into it.  This page defines the protocols those objects follow, and the
per-forward inputs that the layer stack shares with every attention layer.

| extension point | protocol | implemented by |
|---|---|---|
| `qk_proj` | `forward(x, kv_input) -> (q, k)` and `queries(x) -> q`, each `(b, h, n, e)` | [collaborative heads](collaborative.md) |
| `qk_transform` | `queries(q) -> q` and `keys(k) -> k`, before rotary | [qk-norm](qk_norm.md), [qk RMSNorm](qk_rmsnorm.md) |
| `value_norm` | `forward(v) -> v`, `(b, g, j, d_v)`, on new values before they are cached | [value RMSNorm](qk_rmsnorm.md) |
| `memory_kv` | `forward(batch) -> (k, v)`, each `(b, h, N, d)` | [persistent memory](../memory/persistent_memory.md) |
| `score_transform` | a `ScoreTransform` below | [talking heads](talking_heads.md), [top-k](sparse_topk.md) |
| `normaliser` | `forward(scores) -> weights` over the last axis; with `takes_masks`, `forward(scores, visible, query_mask)` | [entmax-1.5](entmax15.md), [inverted attention](inverted_attention.md), `attn_custom_attn_fn` |
| `output_gate` | `forward(out, x) -> out`, `out` `(b, h, n, d)` | [gated attention](gate_values.md), [head gate](head_gate.md), [head scale](head_scale.md) |
| `to_out` | `forward(values) -> y`, `(b, n, h d) -> (b, n, D)`; with `takes_values`, `forward(values, v)` | [attention on attention](attention_on_attention.md), [orthogonal values](orthogonal_values.md) |
| `value_transform` | `values(v) -> v` before aggregation, `output(o) -> o` after it | [LASER](laser.md) |
| `score_bias` | `forward(x, keys_input, offset, state) -> (b, h, n, j)`, the layer's own bias | [forget gates](../positional/forgetting.md), [relative projection](../positional/relative_projection.md) |
| `hybrid` | `forward(out, x, mask, state) -> out`, `out` `(b, h, n, d)` | [hybrid heads](hybrid.md) |
| `latent_qkv` | `forward(x, kv_input, shared, cache, is_cross) -> (q, k, v, offset)` | [latent attention](latent_attention.md) |
| shared inputs | `SharedAttentionInputs` below | [rotary](../positional/rotary.md), [ALiBi](../positional/alibi.md), [T5](../positional/t5_bias.md), [position infused](../positional/position_infused.md) |

Shapes: `b` batch, `h` heads, `n` tokens, `i`/`j` query/key positions, `d` head dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional, Protocol, cast

import torch
from torch import Tensor, nn


#
# ## Inputs shared by every layer of a forward pass
#
# The layer stack computes positional information once per forward and hands the same object to
# every self-attention layer.  Positions here refer to the *newly computed* keys: with an XL memory
# these are the memory followed by the current tokens, with a cache only the current tokens.
# Queries always use the last `n` rows.
@dataclass
class SharedAttentionInputs:
    """Per-forward inputs that every self-attention layer of a stack shares."""

    # Rotary (cos, sin) `(2, j_new, d_rot)`, or `None`; xPos gives `(4, j_new, d_rot)`, query rows then key rows.
    rotary: Optional[Tensor] = None
    # Rotary angles of every key the attention sees, the cached ones too, `(2, j, d_rot)`: set by a
    # cache for keys recomputed from cached latents ([latent attention](latent_attention.md)); `None`:
    # the keys are the new ones, `rotary`.
    key_rotary: Optional[Tensor] = None
    # Additive score bias `(1|b, h, i, j)` over all non-persistent keys, or `None`.
    attn_bias: Optional[Tensor] = None
    # PoPE: the phases of the new keys' positions `(j_new, d)` and the learned key phases `(h, 1, d)`
    # (`positional/polar.py`), or `None`.
    polar: Optional[tuple] = None
    # Positions added to the inputs of the query/key projections `(j_new, dim)`, or `None`.
    qk_pos: Optional[Tensor] = None
    # Cross-attention with positions on both sides (`context_pos`): the queries' and the context keys'
    # rotary angles, each `(2, n|j, d_rot)` ([cross rotary](../positional/cross_rotary.md)), or `None`.
    cross_rotary: Optional[tuple] = None
    # Masks derived from these inputs and the padding mask (which keys each query sees, the padded
    # bias, the fused kernel's mask): identical in every self-attention layer of the forward pass,
    # so the first layer computes them and the others reuse them.
    masks: dict = field(default_factory=dict)


#
# ## The protocols of the query/key extension points
#
# Any module with these methods plugs in; the attention module only calls them.
class QKProjection(Protocol):
    """`qk_proj`: replaces the query and key projections."""

    def __call__(self, x: Tensor, kv_input: Tensor) -> tuple[Tensor, Tensor]:
        """Queries `(b, h, n, e)` from `x` and keys `(b, h, j, e)` from `kv_input`."""
        ...

    def queries(self, x: Tensor) -> Tensor:
        """Queries `(b, h, n, e)` alone (cached cross-attention steps)."""
        ...


class QKTransform(Protocol):
    """`qk_transform`: transforms queries and keys after their projections."""

    def queries(self, q: Tensor) -> Tensor:
        """Queries `(b, h, n, d)` to transformed queries of the same shape."""
        ...

    def keys(self, k: Tensor) -> Tensor:
        """Keys `(b, h, j, d)` to transformed keys of the same shape."""
        ...


class LatentProjection(Protocol):
    """`latent_qkv`: replaces the projections, the rotation of queries and keys, and the cache update."""

    # Width of each value head (what the output projection receives per head).
    dim_value_head: int

    def __call__(self, x: Tensor, kv_input: Tensor, shared: SharedAttentionInputs, cache,
                 is_cross: bool) -> tuple[Tensor, Tensor, Tensor, int | Tensor]:
        """Queries `(b, h, n, e)`, every key `(b, g, j, e)` and value `(b, g, j, dv)`, and the keys before `x`."""
        ...


def masked_fill_value(dtype: torch.dtype) -> float:
    """The most negative finite value of `dtype`: a masked score that can never become NaN."""
    return -torch.finfo(dtype).max


def softmax(scores: Tensor) -> Tensor:
    """Softmax over keys, computed in float32 for stability and cast back."""
    return scores.float().softmax(dim=-1).to(scores.dtype)


#
# ## Score transforms
#
# A score transform sees the scores before the position bias is added (`pre_bias`), the biased
# scores before the normaliser (`pre_softmax`) and the weights after it (`post_softmax`).  Subclasses override what they need; any score transform makes the attention
# module take the explicit path, since the fused kernel never shows the scores.
class ScoreTransform(nn.Module):
    """Base class of techniques that change the attention scores or weights."""

    def pre_bias(self, scores: Tensor) -> Tensor:
        """Transform the scaled scores `(b, h, i, j)` before any position bias is added."""
        return scores

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        """Transform scores `(b, h, i, j)`; `visible` is the boolean mask, true where allowed."""
        return scores

    def post_softmax(self, weights: Tensor) -> Tensor:
        """Transform attention weights `(b, h, i, j)`."""
        return weights

    def bind(self, **inputs) -> None:
        """Receive, before `pre_softmax`, what some transforms need besides the scores: `q` `(b, h, i, d)`,
        `query_mask` `(b, i)` or `None`, `num_mem` persistent slots, `offset` (position of the first
        query) and the cache's `state` dict (or `None`).  Most transforms need none of it."""


class ScoreTransforms(ScoreTransform):
    """Applies several score transforms in order."""

    def __init__(self, transforms: list[ScoreTransform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def _each(self) -> Iterator[ScoreTransform]:
        # The list holds exactly the constructor's `ScoreTransform`s; `nn.ModuleList` types its items as `nn.Module`.
        return cast(Iterator[ScoreTransform], iter(self.transforms))

    def pre_bias(self, scores):
        for t in self._each():
            scores = t.pre_bias(scores)
        return scores

    def pre_softmax(self, scores, visible):
        for t in self._each():
            scores = t.pre_softmax(scores, visible)
        return scores

    def post_softmax(self, weights):
        for t in self._each():
            weights = t.post_softmax(weights)
        return weights

    def bind(self, **inputs):
        for t in self._each():
            t.bind(**inputs)
