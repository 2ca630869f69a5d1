r"""
# Multi-head attention, with extension points

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

Every token asks a question (a query), every token offers an answer (a key and a value), and each
query collects the values of the keys that match it best:

$$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\left(\frac{Q K^\top}{\sqrt{d}} + B\right) V$$

Multi-head attention runs $h$ of these side by side on $d$-dimensional slices and mixes the results
with an output projection:

$$\operatorname{MultiHead}(x) = \operatorname{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O,
\qquad \text{head}_t = \operatorname{Attention}(x W^Q_t,\ c\, W^K_t,\ c\, W^V_t),$$

with $c = x$ for self-attention and the context for cross-attention.

**Why $1/\sqrt d$.**  If the entries of $q$ and $k$ are independent with mean 0 and variance 1,
$q^\top k$ is a sum of $d$ such products and has variance $d$ (on random vectors: 3.97 for $d = 4$,
64.1 for $d = 64$).  Scores that grow with the head width would push the softmax into saturation,
where one key takes all the weight and the gradients of the others vanish; dividing by $\sqrt d$
brings the variance back to 1 whatever $d$ is.

**A worked example.**  One query $q = (1, 0)$ and three keys $k_1 = (2, 0)$, $k_2 = (0, 2)$,
$k_3 = (-2, 0)$, $d = 2$: the scores $q^\top k_j / \sqrt 2$ are $(1.41, 0, -1.41)$, the softmax turns
them into the weights $(0.77, 0.19, 0.05)$, and with the values $v_1 = (1, 0)$, $v_2 = (0, 1)$,
$v_3 = (0, 0)$ the output is $(0.77, 0.19)$: mostly the value of the key that points the query's way.

>>> q, k = torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0]])
>>> (k @ q / 2 ** 0.5).softmax(-1)
tensor([0.7679, 0.1867, 0.0454])

![Attention weights under a mask, a window, ALiBi's bias and in a trained head](../../docs/figures/attention_patterns.png)

*What the masks and biases of this page do to the weights $A_{ij}$ (query $i$ down, key $j$
across): plain causal attention with equal scores spreads evenly over the past; a sliding window
(`attn_max_attend_past=3`) keeps the last four keys; ALiBi's bias alone favours recent keys; a
trained ALiBi model, on rows that repeat every 8 tokens, has a head that looks one period back
(stripes at $t - 7$, $t - 15$, ...).  Drawn by `python docs/figures/make_figures.py`; the
[attention notebook](../../notebooks/attention_patterns.ipynb) shows more.*

Almost every technique in this library changes *one* step of this computation, so the module is
written as that sequence of steps, each one an **extension point** that a technique plugs into
from its own file (the protocols are on the [extension points](extension_points.md) page):

| step | extension point | techniques |
|---|---|---|
| project $x$ to $q, k, v$ | `qk_proj`, `kv_heads` | collaborative heads, [grouped-query](grouped_query.md) |
| transform $q, k$ | `qk_transform`, `rotary` | qk-norm, rotary embeddings |
| extra key/value slots | `memory_kv`, `mem`, `cache` | persistent memory, XL memory, key/value cache |
| additive bias $B$ | `attn_bias` | T5 relative bias, ALiBi |
| which keys are visible | `max_attend_past` | [sliding window](sliding_window.md) |
| transform the scores | `score_transform` | talking heads, top-$k$, residual attention |
| normalise | `normaliser` | softmax, entmax-1.5 |
| gate the output | `output_gate`, `to_out` | value gating, head scale, attention on attention |

When no step needs the explicit score matrix (no score transform and a softmax normaliser), the
module calls PyTorch's fused `F.scaled_dot_product_attention`, passing any bias and mask as its
`attn_mask`. Both paths compute the same function; a test checks that they agree.  This page
spells out the explicit path, the lesson; the fused path, the one-token step of generation and
the masks shared by all layers are on [making attention fast](fast_attention.md), with what each
trick gains.  Tests: `tests/core/test_attention_core.py` (fused equals explicit, the explicit path
against a reference written in the test, a fully masked row gives zeros).

Shapes: `b` batch, `n` query tokens, `h` heads, `d` head dim, `i`/`j` query/key positions,
`m` memory (or cache) length.

## Masks

* `mask` `(b, n)` is true for real tokens; padded keys get no weight.
* `causal=True` lets query $i$ see keys $j \le i + m$, where $m$ keys come before the current
  tokens (XL memory or a cache).
* Persistent memory slots are always visible.
* A query that can see no key at all (a fully masked row) returns zeros, never NaN.

Padding and causality are passed to the fused kernel as a `(b, 1, i, j)` boolean mask; we never
build a mask with a heads axis unless a bias has one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..checks import check_attention_inputs
from ..keywords import Keyword, declare
from ..positional.rotary import apply_rotary
from .extension_points import (
    QKProjection,
    QKTransform,
    ScoreTransform,
    SharedAttentionInputs,
    masked_fill_value,
    softmax,
)
from .fast_attention import FastPaths
from .grouped_query import repeat_kv, split_heads
from .sliding_window import window_mask

KEYWORDS = declare(__name__, "attn",
    Keyword("dim_head", 64, "width of each head", example=32),
    Keyword("dropout", 0.0, "dropout on the attention weights", example=0.1),
    Keyword("qkv_bias", False, "biases on the query, key and value projections", xtransformers=False),
    Keyword("out_bias", False, "a bias on the output projection", xtransformers=False),
    Keyword("scale", None, "the logit scale (None: 1/sqrt(dim_head); T5 uses 1.0)", type=float, example=1.0,
            xtransformers=False))


#
# ## The module
class Attention(FastPaths, nn.Module):
    r"""Multi-head self- or cross-attention with the extension points listed above.

    Args:
        dim: model width of the queries' input.
        heads: number of heads $h$.
        dim_head: width $d$ of each head.
        kv_heads: key/value heads $g$ shared by groups of $h / g$ query heads (`None`: $h$).
        causal: queries see only keys at or before their own position.
        max_attend_past: sliding window $W$, query $i$ sees keys $j$ with $i - j \le W$ (causal only).
        qkv_bias: biases on the query, key and value projections.
        out_bias: a bias on the output projection.
        dim_context: width of the cross-attention context (`None` for self-attention).
        dropout: dropout on the attention weights.
        scale: score scale, $1/\sqrt{d}$ by default.
        qk_proj: replaces the query/key projections (collaborative heads).
        qk_transform: transforms $q, k$ after projection (qk-norm).
        memory_kv: learned key/value slots prepended to every sequence (persistent memory).
        score_transform: a `ScoreTransform` (talking heads, top-$k$, residual attention).
        normaliser: maps scores to weights over the last axis (softmax, entmax-1.5).
        output_gate: gates the aggregated values per head, `gate(out, x)`.
        to_out: the output projection from `heads * dim_head` to `dim`.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        dim_head: int = 64,
        kv_heads: Optional[int] = None,
        causal: bool = False,
        max_attend_past: Optional[int] = None,
        qkv_bias: bool = False,
        out_bias: bool = False,
        dim_context: Optional[int] = None,
        dropout: float = 0.0,
        scale: Optional[float] = None,
        qk_proj: Optional[QKProjection] = None,
        qk_transform: Optional[QKTransform] = None,
        memory_kv: Optional[nn.Module] = None,
        score_transform: Optional[ScoreTransform] = None,
        normaliser: Optional[Callable[[Tensor], Tensor]] = None,
        output_gate: Optional[nn.Module] = None,
        to_out: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.heads, self.dim_head, self.causal = heads, dim_head, causal
        self.kv_heads = heads if kv_heads is None else kv_heads
        if self.kv_heads < 1 or heads % self.kv_heads:
            raise ValueError(f"kv_heads: expected a divisor of heads ({heads}), got {kv_heads}")
        if max_attend_past is not None and (not causal or dim_context is not None):
            raise ValueError("max_attend_past: a sliding window needs causal self-attention")
        self.max_attend_past = max_attend_past
        self.is_cross, self.dim, self.dim_context = dim_context is not None, dim, dim_context
        inner, kv_inner = heads * dim_head, self.kv_heads * dim_head
        self.scale = dim_head ** -0.5 if scale is None else scale
        # One fused projection for queries, keys and values: a single matrix multiply in
        # self-attention.  Cross-attention and memories slice it into its query and key/value
        # parts.  With `qk_proj` the queries and keys come from that module instead.
        # With $g$ key/value heads the projection is $h + 2g$ heads wide.
        width = inner if qk_proj is not None else inner + 2 * kv_inner
        self.to_q: Optional[nn.Linear] = (
            nn.Linear(dim, inner, bias=qkv_bias) if self.is_cross and qk_proj is None else None)
        self.to_qkv: Optional[nn.Linear] = None if self.is_cross else nn.Linear(dim, width, bias=qkv_bias)
        n_kv = 1 if qk_proj is not None else 2
        self.to_kv: Optional[nn.Linear] = (
            None if dim_context is None else nn.Linear(dim_context, n_kv * kv_inner, bias=qkv_bias))
        self.qk_proj = qk_proj
        self.qk_transform = qk_transform
        self.memory_kv = memory_kv
        self.score_transform = score_transform
        self.normaliser = normaliser
        self.output_gate = output_gate
        self.to_out = to_out if to_out is not None else nn.Linear(inner, dim, bias=out_bias)
        self.dropout = nn.Dropout(dropout)

    @property
    def uses_fused_path(self) -> bool:
        """True when no step needs the explicit score matrix, so SDPA computes attention."""
        return self.score_transform is None and self.normaliser is None

    #
    # ### Projections
    #
    # $q = x W_Q$, $[k, v] = c\, [W_K, W_V]$ with $c$ the keys' input: the tokens themselves, the XL
    # memory followed by the tokens, or the cross-attention context.
    def _project(self, x: Tensor, kv_input: Tensor, qk_pos: Optional[Tensor]):
        h, g, d = self.heads, self.kv_heads, self.dim_head
        inner = h * d

        def to_heads(t: Tensor, heads: int = h) -> Tensor:
            return rearrange(t, "b n (h d) -> b h n d", h=heads)

        if self.qk_proj is not None:
            # Collaborative heads: shared query/key projections, values as usual.
            proj = self.to_kv if self.is_cross else self.to_qkv
            assert proj is not None  # cross-attention has `to_kv`, self-attention `to_qkv`
            # Position infused attention adds positions to the query and key inputs only.
            q_in, k_in = (x, kv_input) if qk_pos is None else (x + qk_pos[-x.shape[1]:], kv_input + qk_pos)
            q, k = self.qk_proj(q_in, k_in)
            return q, k, to_heads(proj(kv_input))
        if self.is_cross:
            assert self.to_q is not None and self.to_kv is not None  # cross-attention without `qk_proj`
            k, v = self.to_kv(kv_input).chunk(2, dim=-1)
            return to_heads(self.to_q(x)), to_heads(k, g), to_heads(v, g)
        assert self.to_qkv is not None  # self-attention
        if kv_input is x and qk_pos is None:
            return split_heads(self.to_qkv(x), h, g, d)  # (b, h, n, d), (b, g, n, d) twice
        w, bias = self.to_qkv.weight, self.to_qkv.bias
        q = F.linear(x, w[:inner], None if bias is None else bias[:inner])
        k, v = F.linear(kv_input, w[inner:], None if bias is None else bias[inner:]).chunk(2, dim=-1)
        # Position infused attention: positions enter the query and key projections only,
        # $q = (x + p) W_Q$, $k = (c + p) W_K$, so values stay free of position.
        if qk_pos is not None:
            qk_pos = qk_pos.to(w.dtype)  # the sinusoids are float32; half-precision weights need a cast
            q = q + F.linear(qk_pos[-x.shape[1]:], w[:inner])
            k = k + F.linear(qk_pos, w[inner:inner + g * d])
        return to_heads(q), to_heads(k, g), to_heads(v, g)

    #
    # ### Forward
    def forward(
        self,
        x: Tensor,
        *,
        context: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
        context_mask: Optional[Tensor] = None,
        shared: Optional[SharedAttentionInputs] = None,
        mem: Optional[Tensor] = None,
        cache=None,
        prev_scores: Optional[Tensor] = None,
        return_scores: bool = False,
        attn_sink: Optional[list] = None,
        additional_kv: Optional[tuple[Tensor, Tensor]] = None,
    ):
        r"""Attend from `x` `(b, n, dim)` to itself (or to `context` `(b, j, dim_context)`).

        Args:
            mask: `(b, m + n)` (or `(b, n)` without memory) true for real tokens of `x`'s side.
            context_mask: `(b, j)` true for real context tokens (cross-attention).
            shared: positional inputs computed once per forward by the stack.
            mem: XL memory `(b, m, dim)`, prepended to the keys' input.
            cache: a key/value cache with `offset` and `update(k, v) -> (k, v)` (generation).
            prev_scores: the previous layer's scores (residual attention).
            return_scores: also return the pre-softmax scores `(b, h, i, j)`.
            attn_sink: a list that receives the attention weights `(b, h, i, j)` (takes the
                explicit path; for inspecting what the model attends to).
            additional_kv: keys and values from elsewhere, `(b, h_kv, a, d)` each, prepended and
                always visible (x-transformers' `self_attn_additional_kv`, e.g. a vision model's).

        Returns:
            `(out, scores)`: `out` is `(b, n, dim)`; `scores` is `None` unless requested.
        """
        check_attention_inputs(self.dim, self.dim_context, x, context, mask, context_mask, mem, cache is not None)
        shared = shared or SharedAttentionInputs()
        n = x.shape[1]
        # Generation's one-token step takes a shortcut ([making attention fast](fast_attention.md)).
        if n == 1 and cache is not None and mem is None and prev_scores is None and not return_scores \
                and attn_sink is None and shared.qk_pos is None and self._plain_self_attention and additional_kv is None:
            return self._cached_step(x, mask, shared, cache), None

        # The keys' input: context for cross-attention, memory + tokens for XL self-attention.
        if self.is_cross:
            if context is None:
                raise ValueError("context: cross-attention needs a context tensor (b, j, dim_context)")
            kv_input, key_mask = context, context_mask
        else:
            kv_input = x if mem is None else torch.cat((mem, x), dim=1)
            key_mask = mask

        if cache is not None and self.is_cross and cache.has_kv():
            # The context's keys and values were computed at the first step; only project $q$.
            q, (k, v), new_keys = self._queries(x), cache.get_kv(), False
        else:
            q, k, v = self._project(x, kv_input, None if self.is_cross else shared.qk_pos)
            new_keys = True

        # Transforms of queries and keys: rotary positions, then e.g. qk-norm.  Keys that come
        # from a cache were transformed when they were computed.
        if shared.rotary is not None and not self.is_cross:
            q = apply_rotary(q, shared.rotary[:, -n:])
            k = apply_rotary(k, shared.rotary)
        if self.qk_transform is not None:
            q = self.qk_transform.queries(q)
            if new_keys:
                k = self.qk_transform.keys(k)

        # A cache stores keys/values once computed and returns all of them so far.
        offset = 0 if self.is_cross else k.shape[-2] - n
        if cache is not None:
            if self.is_cross:
                if not cache.has_kv():
                    cache.set_kv(k, v)
            else:
                offset = cache.offset
                k, v = cache.update(k, v)

        # Persistent memory: learned slots, prepended, always visible.
        num_mem = 0
        if self.memory_kv is not None:
            mk, mv = self.memory_kv(q.shape[0])
            if self.qk_transform is not None:
                mk = self.qk_transform.keys(mk)
            k, v = torch.cat((mk.to(k.dtype), k), dim=-2), torch.cat((mv.to(v.dtype), v), dim=-2)
            num_mem = mk.shape[-2]
        if additional_kv is not None:
            # Keys and values computed elsewhere (already positioned), visible like persistent slots.
            ak, av = additional_kv
            if ak.shape[1] != k.shape[1] or ak.shape[-1] != k.shape[-1] or ak.shape[0] != k.shape[0]:
                raise ValueError(f"self_attn_additional_kv: expected keys of shape ({k.shape[0]}, {k.shape[1]}, "
                                 f"len, {k.shape[-1]}), got {tuple(ak.shape)}")
            k, v = torch.cat((ak.to(k.dtype), k), dim=-2), torch.cat((av.to(v.dtype), v), dim=-2)
            num_mem += ak.shape[-2]

        # Which keys each query sees, and the bias, shared by the layers of a stack; then score, bias,
        # mask, normalise and aggregate, explicitly (`_explicit`, below) or in one fused kernel when no
        # step needs the scores ([making attention fast](fast_attention.md)).
        m = self._masks(q, k, key_mask, offset, num_mem, shared)
        if self.uses_fused_path and prev_scores is None and not return_scores and attn_sink is None:
            out = self._fused(q, k, v, m)
            scores = None
        else:
            out, scores = self._explicit(q, k, v, m["visible"], m["bias"], m["has_key"], prev_scores, attn_sink)

        # The output gate, per head and token: $o_{hi} \leftarrow g(o_{hi}, x_i)$ (value gating, head scale)
        if self.output_gate is not None:
            out = self.output_gate(out, x)
        # $\operatorname{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O$: the heads side by side, then
        # the output projection
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.to_out(out), scores

    #
    # ### Which keys each query may see
    #
    # Returns a boolean mask broadcastable to `(b, 1, i, j)` (or `None` when everything is
    # visible) and, when some row could be fully masked, a `(b, 1, i, 1)` indicator of rows
    # that see at least one key.
    def _visibility(self, q, k, key_mask, offset, num_mem):
        n, j = q.shape[-2], k.shape[-2]
        visible = None
        if (self.causal and n > 1) or self.max_attend_past is not None:
            i_pos = torch.arange(n, device=q.device)[:, None] + offset + num_mem
            j_pos = torch.arange(j, device=q.device)[None, :]
            # Key $j$ is visible from query $i$ when $j \le i + m$; persistent slots always.
            seen = j_pos <= i_pos
            if self.max_attend_past is not None:
                # ... and, with a sliding window, when $i - j \le W$.
                seen = seen & window_mask(i_pos, j_pos, self.max_attend_past)
            visible = (seen | (j_pos < num_mem))[None, None]  # (1, 1, i, j)
        has_key = None
        if key_mask is not None:
            if key_mask.shape[-1] != j - num_mem:
                raise ValueError(
                    f"mask: expected {j - num_mem} key positions along the last axis, got {key_mask.shape[-1]}"
                )
            km = F.pad(key_mask, (num_mem, 0), value=True) if num_mem else key_mask
            km = km[:, None, None, :]  # (b, 1, 1, j)
            visible = km if visible is None else visible & km
            if not num_mem:
                has_key = visible.any(dim=-1, keepdim=True)  # (b, 1, i|1, 1)
        return visible, has_key

    #
    # ### The explicit path
    def _explicit(self, q, k, v, visible, bias, has_key, prev_scores, attn_sink=None):
        # Grouped-query attention: each key/value head serves $h / g$ query heads.
        k, v = repeat_kv(k, self.heads // k.shape[1]), repeat_kv(v, self.heads // v.shape[1])  # (b, h, j, d)
        # $S_{ij} = \frac{q_i^\top k_j}{\sqrt{d}}$, in the queries' dtype: $\mathrm{Var}(q^\top k) = d$,
        # hence $1/\sqrt d$.  The scale multiplies $q$ ($n d$ values) instead of $S$ ($n^2$), and one
        # batched matmul needs no permuted copies.
        scores = torch.matmul(q * self.scale, k.transpose(-1, -2))  # (b, h, i, j)
        # Residual attention adds the previous layer's raw scores and passes the sum on.
        if prev_scores is not None:
            scores = scores + prev_scores
        raw = scores
        # $S_{ij} + B_{ij}$: a position bias (T5, ALiBi).  Softmax ignores a constant added to a whole
        # row, so only how $B$ varies along the keys of a row matters.
        if bias is not None:
            # In the scores' dtype: ALiBi's float32 bias must not promote a bf16 model's scores.
            scores = scores + bias.to(scores.dtype)
        if self.score_transform is not None:
            scores = self.score_transform.pre_softmax(scores, visible)
        if visible is not None:
            # In place when `scores` is the biased sum made just above, a temporary that autograd
            # does not keep; the raw scores are returned and a transform's output may be kept.
            fill = masked_fill_value(scores.dtype)
            temporary = bias is not None and self.score_transform is None
            scores = scores.masked_fill_(~visible, fill) if temporary else scores.masked_fill(~visible, fill)
        pre_softmax = getattr(attn_sink, "pre_softmax", None)
        if pre_softmax is not None:
            # The masked scores, kept for the attention z-loss (wrapping/z_loss.py).
            pre_softmax.append(scores)
        # $A_{ij} = \operatorname{softmax}_j(S_{ij}) = e^{S_{ij}} / \sum_{j'} e^{S_{ij'}}$ over the keys (or
        # another normaliser); a hidden key's score is the most negative finite number: weight 0
        weights = (self.normaliser or softmax)(scores)
        if has_key is not None:
            weights = weights * has_key
        if self.score_transform is not None:
            weights = self.score_transform.post_softmax(weights)
        if attn_sink is not None:
            attn_sink.append(weights)
        weights = self.dropout(weights)
        # $o_i = \sum_j A_{ij} v_j$
        out = torch.matmul(weights, v)  # (b, h, i, d)
        return out, raw
