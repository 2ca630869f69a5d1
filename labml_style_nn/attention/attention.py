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
trained ALiBi model, on rows that repeat every 8 tokens, has a head that reads the token it must
copy (stripes at $t - 7$, $t - 15$, ...): query $t$ predicts token $t + 1$, which repeats token
$t + 1 - 8 = t - 7$, one period before the *next* token rather than before $t$ itself.  Drawn by `python docs/figures/make_figures.py`; the
[attention notebook](../../notebooks/attention_patterns.ipynb) shows more.*

Almost every technique in this library changes *one* step of this computation, so the module is
written as that sequence of steps, each one an **extension point** that a technique plugs into
from its own file (the protocols are on the [extension points](extension_points.md) page):

| step | extension point | techniques |
|---|---|---|
| project $x$ to $q, k, v$ | `qk_proj`, `kv_heads` | collaborative heads, [grouped-query](grouped_query.md) |
| project, rotate and cache through latents | `latent_qkv` | [multi-head latent attention](latent_attention.md) |
| transform $q, k$ (then rotate them), and $v$ | `qk_transform`, `rotary`, `rotate_num_heads`, `value_norm` | [qk-norm](qk_norm.md), [qk RMSNorm](qk_rmsnorm.md), rotary embeddings (on [some heads](../positional/partial_rotary_heads.md)), [L2 distance](l2_distance.md) |
| extra key/value slots | `memory_kv`, `mem`, `cache` | persistent memory, [zero slot](zero_kv.md), XL memory, key/value cache |
| additive bias $B$ | `attn_bias`, `score_bias` | T5 relative bias, ALiBi; per layer: [forget gates](../positional/forgetting.md), [relative projection](../positional/relative_projection.md) |
| which keys are visible | `max_attend_past` | [sliding window](sliding_window.md) |
| transform the scores | `score_transform` | [talking heads](talking_heads.md) (x-transformers' act before the bias), top-$k$, residual attention, [soft-capping](softclamp.md), [cog](cog_attention.md), [CoPE](../positional/cope.md), [selective](selective.md) |
| normalise | `normaliser` | softmax, entmax-1.5, `attn_custom_attn_fn`, [sigmoid](sigmoid_attention.md), [Gumbel](gumbel_softmax.md), [hard](hard_attention.md), [inverted](inverted_attention.md), [learned sink](learned_sink.md) |
| transform the values around the aggregation | `value_transform` | [LASER](laser.md) |
| a branch beside attention | `hybrid` | [hybrid heads](hybrid.md) |
| gate the output | `output_gate`, `to_out` | [gated attention](gate_values.md), [head gate](head_gate.md), head scale, attention on attention, [orthogonal values](orthogonal_values.md) |

A score transform that needs more than the scores (CoPE reads the queries, selective attention the
position of the first query) receives them through `bind` before `pre_softmax`; techniques that
carry a running state between cached steps keep it in the cache's `state` dict.

When no step needs the explicit score matrix (no score transform and a softmax normaliser), the
module calls PyTorch's fused `F.scaled_dot_product_attention`, passing any bias and mask as its
`attn_mask`. Both paths compute the same function; a test checks that they agree.  This page
spells out the explicit path, the lesson; the fused path, the one-token step of generation and
the masks shared by all layers are on [making attention fast](fast_attention.md), with what each
trick gains.  Tests: `tests/core/test_attention_core.py` (fused equals explicit, the explicit path
against a reference written in the test, a fully masked row gives zeros).

Shapes: `b` batch, `n` query tokens, `h` heads, `d` head dim, `i`/`j` query/key positions,
`m` memory (or cache) length.

## Shapes of the projections

x-transformers' keywords for the widths, each tested in `tests/attention/test_attn_execution.py`
(shapes, refusals, and logits equal to x-transformers' with its weights copied):

* `cross_attn_dim_context=C`: cross-attention reads a context of width $C$ (its key/value
  projection is $C \to$ keys and values).  Self-attention reads its own input, so `attn_dim_context`
  is refused; the stack keyword `dim_context` says the same as `cross_attn_dim_context`, and giving
  both with different widths is refused.
* `attn_value_dim_head=d_v`: values of width $d_v$ per head instead of $d$.  The score matrix
  does not change shape; the heads' outputs are $h d_v$ wide and the output projection starts
  there.  Queries and keys keep $d$, so the number of parameters of $W_V$ and $W_O$ scales with
  $d_v$ alone (with $D = 512$, $h = 8$: $d_v = 32$ halves them against $d = 64$).
* `attn_dim_out`: the module's output width ($D$ by default).  The `Attention` module takes any;
  in a stack the output is added to the residual stream, so only $D$ is accepted there
  (x-transformers fails later, at the residual sum).
* `attn_project_out`: whether there is an output projection $W^O$.  `None` (the default) follows
  x-transformers: a projection unless there is one head whose output already has the output
  width (x-transformers also skips it for one head of another width, then fails at the residual
  sum; we project).  `False` is refused unless $h d_v = D$.
* `attn_custom_attn_fn=f`: any function from scores to weights over the last axis replaces the
  softmax (the `normaliser` point), e.g. `torch.sigmoid`; hidden keys get the most negative score,
  which $f$ should map to zero.  It needs the explicit path.

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
from typing import Any, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..checks import check_attention_inputs
from ..keywords import Keyword, declare, rule
from ..positional.polar import apply_polar
from ..positional.rotary import apply_rotary
from .extension_points import (
    LatentProjection,
    QKProjection,
    QKTransform,
    ScoreTransform,
    SharedAttentionInputs,
    masked_fill_value,
    softmax,
)
from .fast_attention import FastPaths, FusedKernel
from .grouped_query import repeat_kv, split_heads
from .sliding_window import window_mask

KEYWORDS = declare(__name__, "attn",
    Keyword("dim_head", 64, "width of each head", example=32),
    Keyword("dropout", 0.0, "dropout on the attention weights", example=0.1),
    Keyword("qkv_bias", False, "biases on the query, key and value projections", xtransformers=False),
    Keyword("out_bias", False, "a bias on the output projection", xtransformers=False),
    Keyword("scale", None, "the logit scale (None: 1/sqrt(dim_head); T5 uses 1.0)", type=float, example=1.0,
            xtransformers=False),
    Keyword("dim_context", None, "width of the context that cross-attention reads (cross_attn_dim_context)",
            type=int, minimum=1, example=24),
    Keyword("value_dim_head", None, "width of each head's values (None: dim_head)", type=int, minimum=1,
            example=12),
    Keyword("dim_out", None, "width of the layer's output (None: dim; a stack needs dim)", type=int, minimum=1,
            example=32),
    Keyword("project_out", None, "an output projection (None: unless one head already has the output's width)",
            type=bool, example=False),
    Keyword("custom_attn_fn", None, "a function from scores to weights over the last axis, replacing softmax",
            type="callable", example=F.sigmoid))


@rule("attn")
def _shapes_fit_the_stack(a, prefix: str, o) -> None:
    """The shape keywords must leave the residual stream and the context widths consistent."""
    if a.dim_context is not None:
        if prefix == "attn_":
            raise ValueError("attn_dim_context: self-attention reads its own input; give the context's width as "
                             "cross_attn_dim_context")
        if o.dim_context is not None and o.dim_context != a.dim_context:
            raise ValueError(f"dim_context ({o.dim_context}) and cross_attn_dim_context ({a.dim_context}) both give "
                             "the context's width; choose one")
    if a.dim_out is not None and a.dim_out != o.dim:
        raise ValueError(f"{prefix}dim_out: the output is added to the residual stream of width dim ({o.dim}); "
                         f"expected {o.dim} or None, got {a.dim_out}")
    if a.value_dim_head is not None and a.collab_heads:
        raise ValueError(f"{prefix}value_dim_head and {prefix}collab_heads: collaborative heads project values "
                         "of width dim_head")
    if a.project_out is False:
        width = o.heads * (a.value_dim_head or a.dim_head)
        if a.on_attn:
            raise ValueError(f"{prefix}project_out=False and {prefix}on_attn: attention on attention is an output "
                             "projection")
        if width != o.dim:
            raise ValueError(f"{prefix}project_out=False: without a projection the heads' output, heads x "
                             f"value_dim_head = {width} wide, must already have the width dim ({o.dim})")
    if a.custom_attn_fn is not None and a.use_entmax15:
        raise ValueError(f"{prefix}custom_attn_fn and {prefix}use_entmax15 both replace the softmax; choose one")


def needs_output_projection(project_out: Optional[bool], heads: int, value_dim_head: int, dim_out: int,
                            on_attn: bool) -> bool:
    """x-transformers' rule: project unless told not to, or one head already gives the output.

    >>> needs_output_projection(None, 1, 32, 32, False), needs_output_projection(None, 4, 8, 32, False)
    (False, True)
    """
    if project_out is not None:
        return project_out
    return heads > 1 or value_dim_head != dim_out or on_attn


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
        max_attend_past: sliding window $W$, query $i$ sees keys $j$ with $i - j \le W$ (and, without
            `causal`, every later key).
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
        to_out: the output projection from `heads * value_dim_head` to `dim_out` (with `takes_values`,
            called as `to_out(out, v)` with the tokens' own values `(b, h, n, d)`: orthogonal values).
        value_dim_head: width of each head's values (`None`: `dim_head`).
        value_norm: normalises the new values `(b, g, j, d_v)` after their projection, before they are
            cached (value RMSNorm).
        dim_out: width of the output (`None`: `dim`).
        sublayer_dropout: dropout on the layer's output, after the output projection.
        fused: how the fused kernel runs ([making attention fast](fast_attention.md)): forced, on
            which backends, with an exportable causal mask.
        value_transform: `values(v) -> v` before the aggregation and `output(o) -> o` after it (LASER).
        score_bias: a bias computed from the layer's own input, `score_bias(x, keys_input, offset,
            state) -> (b, h, n, j)` (the Forgetting Transformer, the relative projection bias).
        hybrid: a recurrent branch run beside attention, `hybrid(out, x, mask, state) -> out` (Hymba).
        rotate_num_heads: rotate only the last this-many heads with rotary positions (`None`: all).
        latent_qkv: replaces the projections, the rotation of $q, k$ and the cache update (latent attention).
        value_mix: the learned mix of value residuals, `(b, j, dim) -> (b, g, j, 1)`
            ([value residual](../residual/value_residual.md)); `None`: a fixed 1/2.
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
        value_dim_head: Optional[int] = None,
        value_norm: Optional[nn.Module] = None,
        dim_out: Optional[int] = None,
        sublayer_dropout: float = 0.0,
        fused: Optional[FusedKernel] = None,
        value_transform: Optional[nn.Module] = None,
        score_bias: Optional[nn.Module] = None,
        hybrid: Optional[nn.Module] = None,
        rotate_num_heads: Optional[int] = None,
        latent_qkv: Optional[LatentProjection] = None,
        value_mix: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.heads, self.dim_head, self.causal = heads, dim_head, causal
        self.kv_heads = heads if kv_heads is None else kv_heads
        if self.kv_heads < 1 or heads % self.kv_heads:
            raise ValueError(f"kv_heads: expected a divisor of heads ({heads}), got {kv_heads}")
        if max_attend_past is not None and dim_context is not None:
            raise ValueError("max_attend_past: a sliding window needs self-attention")
        self.max_attend_past = max_attend_past
        self.is_cross, self.dim, self.dim_context = dim_context is not None, dim, dim_context
        self.value_dim_head = dim_head if value_dim_head is None else value_dim_head
        if value_dim_head is not None and qk_proj is not None:
            raise ValueError("value_dim_head: collaborative heads (qk_proj) project values of width dim_head")
        inner, kv_inner = heads * dim_head, self.kv_heads * dim_head
        v_inner = self.kv_heads * self.value_dim_head
        self.scale = dim_head ** -0.5 if scale is None else scale
        # One fused projection for queries, keys and values: a single matrix multiply in
        # self-attention.  Cross-attention and memories slice it into its query and key/value
        # parts.  With `qk_proj` the queries and keys come from that module instead.
        # With $g$ key/value heads the projection is $h d + g d + g d_v$ wide.
        # With `latent_qkv` all three come from that module instead.
        width = v_inner if qk_proj is not None else inner + kv_inner + v_inner
        own = latent_qkv is None
        self.to_q: Optional[nn.Linear] = (
            nn.Linear(dim, inner, bias=qkv_bias) if own and self.is_cross and qk_proj is None else None)
        self.to_qkv: Optional[nn.Linear] = (
            nn.Linear(dim, width, bias=qkv_bias) if own and not self.is_cross else None)
        kv_width = v_inner if qk_proj is not None else kv_inner + v_inner
        self.to_kv: Optional[nn.Linear] = (
            nn.Linear(dim_context, kv_width, bias=qkv_bias) if own and dim_context is not None else None)
        self.latent_qkv = latent_qkv
        self.qk_proj = qk_proj
        self.qk_transform = qk_transform
        self.memory_kv = memory_kv
        self.score_transform = score_transform
        self.normaliser = normaliser
        self.output_gate = output_gate
        self.value_norm = value_norm
        inner_v = heads * (self.value_dim_head if latent_qkv is None else latent_qkv.dim_value_head)
        self.to_out = to_out if to_out is not None else nn.Linear(
            inner_v, dim if dim_out is None else dim_out, bias=out_bias)
        self.dropout = nn.Dropout(dropout)
        self.value_mix = value_mix
        self.sublayer_dropout = nn.Dropout(sublayer_dropout)
        self.fused = fused or FusedKernel()
        if self.fused.force and not self.uses_fused_path:
            needs = type(self.score_transform if self.normaliser is None else self.normaliser).__name__
            raise ValueError(f"flash: the fused kernel never shows the scores, and {needs} needs them; "
                             "drop flash=True (the fused path is taken automatically when it can be)")
        # Modules with their own protocols (see the extension points page), typed loosely here.
        self.value_transform: Any = value_transform
        self.score_bias: Any = score_bias
        self.hybrid: Any = hybrid
        if rotate_num_heads is not None and not (0 < rotate_num_heads <= heads and self.kv_heads == heads):
            raise ValueError(f"rotate_num_heads: expected 1..heads ({heads}) without grouped key/value heads, "
                             f"got {rotate_num_heads}")
        self.rotate_num_heads = rotate_num_heads
        # Techniques that carry a running state between cached steps (they mark themselves `stateful`),
        # and a reason this layer cannot decode with a cache at all (`cache_blocker`), or `None`.
        self.stateful = any(getattr(mod, "stateful", False) for mod in self.modules() if mod is not self)
        self.cache_blocker = next((mod.cache_blocker for mod in self.modules()
                                   if mod is not self and getattr(mod, "cache_blocker", None)), None)

    @property
    def _per_layer_steps(self) -> bool:
        """A step that the one-token shortcut does not run: a value transform, a bias from the layer's
        input, a hybrid branch, partly rotated heads or an output projection that reads the values."""
        return self.value_transform is not None or self.score_bias is not None or self.hybrid is not None \
            or self.rotate_num_heads is not None or getattr(self.to_out, "takes_values", False)

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
        h, g, d, dv = self.heads, self.kv_heads, self.dim_head, self.value_dim_head
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
            k, v = self.to_kv(kv_input).split((g * d, g * dv), dim=-1)
            return to_heads(self.to_q(x)), to_heads(k, g), to_heads(v, g)
        assert self.to_qkv is not None  # self-attention
        if kv_input is x and qk_pos is None:
            if dv == d:
                return split_heads(self.to_qkv(x), h, g, d)  # (b, h, n, d), (b, g, n, d) twice
            q, k, v = self.to_qkv(x).split((inner, g * d, g * dv), dim=-1)
            return to_heads(q), to_heads(k, g), to_heads(v, g)  # values (b, g, n, d_v)
        w, bias = self.to_qkv.weight, self.to_qkv.bias
        q = F.linear(x, w[:inner], None if bias is None else bias[:inner])
        k, v = F.linear(kv_input, w[inner:], None if bias is None else bias[inner:]).split((g * d, g * dv), dim=-1)
        # Position infused attention: positions enter the query and key projections only,
        # $q = (x + p) W_Q$, $k = (c + p) W_K$, so values stay free of position.
        if qk_pos is not None:
            qk_pos = qk_pos.to(w.dtype)  # the sinusoids are float32; half-precision weights need a cast
            q = q + F.linear(qk_pos[-x.shape[1]:], w[:inner])
            k = k + F.linear(qk_pos, w[inner:inner + g * d])
        return to_heads(q), to_heads(k, g), to_heads(v, g)

    def _project_views(self, x: Tensor, kv_views: tuple[Tensor, Tensor], mem: Optional[Tensor],
                       qk_pos: Optional[Tensor]):
        """$q = x W_Q$, $k = x_K W_K$, $v = x_V W_V$ from three inputs (hyper-connections' views)."""
        if mem is not None:
            raise ValueError("mems and qkv_receive_diff_residuals (or integrate_layers, which implies it) cannot be "
                             "combined: a Transformer-XL memory holds one input per earlier token, and the keys and "
                             "values would need one each")
        if self.to_qkv is None or self.qk_proj is not None:
            raise ValueError("qkv_receive_diff_residuals: separate key and value inputs need self-attention's own "
                             "query, key and value projections")
        h, g, d = self.heads, self.kv_heads, self.dim_head
        w, bias = self.to_qkv.weight, self.to_qkv.bias
        parts = (x, *kv_views)
        if qk_pos is not None:
            parts = (x + qk_pos[-x.shape[1]:], kv_views[0] + qk_pos, kv_views[1])  # positions: queries and keys only
        sizes = (h * d, g * d, g * d)
        ws, bs = w.split(sizes), bias.split(sizes) if bias is not None else (None,) * 3
        q, k, v = (F.linear(t, wi, bi) for t, wi, bi in zip(parts, ws, bs, strict=True))
        return (rearrange(q, "b n (h d) -> b h n d", h=h), rearrange(k, "b n (h d) -> b h n d", h=g),
                rearrange(v, "b n (h d) -> b h n d", h=g))

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
        value_residual=None,
        kv_views: Optional[tuple[Tensor, Tensor]] = None,
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
            value_residual: a `ValueResidual` carrying the first layer's values
                ([value residual](../residual/value_residual.md)), or `None`.
            kv_views: separate inputs `(b, n, dim)` of the keys and of the values, when they are not `x`
                (hyper-connections with `qkv_receive_diff_residuals`,
                [hyper-connections](../residual/hyper_connections.md)).
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
                and attn_sink is None and shared.qk_pos is None and shared.polar is None and self._plain_self_attention \
                and not self._per_layer_steps and value_residual is None and kv_views is None and additional_kv is None:
            return self._cached_step(x, mask, shared, cache), None

        # The keys' input: context for cross-attention, memory + tokens for XL self-attention.
        if self.is_cross:
            if context is None:
                raise ValueError("context: cross-attention needs a context tensor (b, j, dim_context)")
            kv_input, key_mask = context, context_mask
        else:
            kv_input = x if mem is None else torch.cat((mem, x), dim=1)
            key_mask = mask

        # Techniques that carry state from step to step (a forget gate's running sum, a recurrent branch)
        # keep it in the cache's `state`.
        state = getattr(cache, "state", None)
        if cache is not None and not self.is_cross:
            if self.cache_blocker:
                raise ValueError(f"cache: {self.cache_blocker}; decode without a cache")
            if self.stateful and state is None:
                raise ValueError("cache: a technique of this layer carries a running state, which only the growing "
                                 "LayersCache keeps; decode with it or without a cache")
        if self.latent_qkv is not None and shared.cross_rotary is not None:
            raise ValueError("context_pos: latent attention does not rotate cross-attention's keys")
        if self.latent_qkv is not None:
            # Latent attention projects, rotates and caches in its own way ([its page](latent_attention.md)):
            # the cache holds latents, and every key and value is expanded from them at every step.
            q, k, v, offset = self.latent_qkv(x, kv_input, shared, cache, self.is_cross)
            if self.qk_transform is not None:
                q, k = self.qk_transform.queries(q), self.qk_transform.keys(k)
        else:
            q, k, v, offset = self._project_and_cache(x, kv_input, shared, cache, mem, value_residual, kv_views)
            if kv_views is not None:
                kv_input = kv_views[1]  # the input of the values

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
        if self.score_bias is not None:
            # A bias from this layer's own input: added to the shared one, so this layer's masks are its own.
            extra = F.pad(self.score_bias(x, kv_input, offset, state), (num_mem, 0))  # (b, h, n, m + j)
            m = dict(m, bias=extra if m["bias"] is None else m["bias"] + extra)
            m.pop("fused", None)
        # The tokens' own values (before any value transform), for an output projection that reads them.
        own_values = v[..., -n:, :]
        if self.value_transform is not None:
            v = self.value_transform.values(v)
        query_mask = None if mask is None else mask[:, -n:]  # (b, n): which queries are real tokens
        if self.score_transform is not None:
            # Score transforms that need more than the scores (the queries, which queries are real, the
            # number of persistent slots, the position of the first query, the cache's state) read them here.
            self.score_transform.bind(q=q, query_mask=query_mask, num_mem=num_mem, offset=offset, state=state)
        if self.uses_fused_path and prev_scores is None and not return_scores and attn_sink is None:
            out = self._fused(q, k, v, m)
            scores = None
        elif self.fused.force:
            raise ValueError("flash: this layer runs the fused kernel only, which keeps no scores or weights; "
                             "residual attention, return_scores and attn_sink need flash=False")
        else:
            out, scores = self._explicit(q, k, v, m["visible"], m["bias"], m["has_key"], prev_scores, attn_sink,
                                         query_mask)
        if self.value_transform is not None:
            out = self.value_transform.output(out)
        # A recurrent branch beside attention (Hymba): both outputs normalised and mixed per head.
        if self.hybrid is not None:
            out = self.hybrid(out, x, query_mask, state)

        # The output gate, per head and token: $o_{hi} \leftarrow g(o_{hi}, x_i)$ (value gating, head scale)
        if self.output_gate is not None:
            out = self.output_gate(out, x)
        # $\operatorname{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O$: the heads side by side, then
        # the output projection
        out = rearrange(out, "b h n d -> b n (h d)")
        # Dropout on the layer's output (`attn_sublayer_dropout`)
        if getattr(self.to_out, "takes_values", False):
            return self.sublayer_dropout(self.to_out(out, repeat_kv(own_values, self.heads // own_values.shape[1]))), \
                scores
        return self.sublayer_dropout(self.to_out(out)), scores

    def _rotate(self, t: Tensor, rotary: Tensor) -> Tensor:
        """Rotary positions on every head, or on the last `rotate_num_heads` of them only."""
        r = self.rotate_num_heads
        if r is None or r == t.shape[1]:
            return apply_rotary(t, rotary)
        return torch.cat((t[:, :-r], apply_rotary(t[:, -r:], rotary)), dim=1)

    #
    # ### Rotary positions and the cache
    #
    # Transforms of queries and keys (e.g. qk-norm), then rotary positions.  Keys that come from a
    # cache were transformed when they were computed.  A cache stores keys/values once computed and
    # returns all of them so far; `offset` counts the keys that come before the current tokens.
    def _project_and_cache(self, x: Tensor, kv_input: Tensor, shared: SharedAttentionInputs, cache,
                           mem: Optional[Tensor] = None, value_residual=None,
                           kv_views: Optional[tuple[Tensor, Tensor]] = None):
        n = x.shape[1]
        if cache is not None and self.is_cross and cache.has_kv():
            # The context's keys and values were computed at the first step; only project $q$.
            q, (k, v), new_keys = self._queries(x), cache.get_kv(), False
        else:
            if kv_views is not None:
                q, k, v = self._project_views(x, kv_views, mem, shared.qk_pos)
                kv_input = kv_views[1]  # the input of the values
            else:
                q, k, v = self._project(x, kv_input, None if self.is_cross else shared.qk_pos)
            new_keys = True
            if value_residual is not None:
                # $V_1 + \lambda (V_l - V_1)$, row by row, before the cache stores the values
                v = value_residual(v, kv_input, self.value_mix)
        # Transforms of queries and keys (e.g. qk-norm), then rotary positions, and of the new values
        # (value RMSNorm).  Keys and values that come from a cache were transformed when they were
        # computed.
        if self.qk_transform is not None:
            q = self.qk_transform.queries(q)
            if new_keys:
                k = self.qk_transform.keys(k)
        if self.value_norm is not None and new_keys:
            v = self.value_norm(v)
        if shared.rotary is not None and not self.is_cross:
            # Rows 0-1 turn queries, the last two keys (the same rows, except with xPos' scales).
            q = self._rotate(q, shared.rotary[:2, ..., -n:, :])  # (2, n, r), or (2, b, 1, n, r) per row
            k = self._rotate(k, shared.rotary[-2:])
        if shared.cross_rotary is not None and self.is_cross:
            # Queries turn by their positions, the context's keys by theirs (`positional/cross_rotary.py`).
            q = self._rotate(q, shared.cross_rotary[0][:2, -n:])
            if new_keys:
                k = self._rotate(k, shared.cross_rotary[1][-2:])
        if shared.polar is not None and not self.is_cross:
            # PoPE: magnitudes from content, phases from position, `d` -> `2d` (`positional/polar.py`)
            phases, key_phase = shared.polar
            q, k = apply_polar(q, phases[-n:]), apply_polar(k, phases + key_phase)
        offset = 0 if self.is_cross else k.shape[-2] - n
        if cache is not None:
            if self.is_cross:
                if not cache.has_kv():
                    cache.set_kv(k, v)
            else:
                offset = cache.offset
                k, v = cache.update(k, v)
        return q, k, v, offset

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
            # Key $j$ is visible from query $i$ when $j \le i + m$ (causal); persistent slots always.
            seen = j_pos <= i_pos if self.causal else torch.ones_like(j_pos <= i_pos)
            if self.max_attend_past is not None:
                # ... and, with a sliding window, when $i - j \le W$ (an encoder sees every later key).
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
    def _explicit(self, q, k, v, visible, bias, has_key, prev_scores, attn_sink=None, query_mask=None):
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
        # A score transform may act before the bias too (x-transformers' talking heads do).
        if self.score_transform is not None:
            scores = self.score_transform.pre_bias(scores)
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
        normalise: Any = self.normaliser or softmax
        # A normaliser that needs the masks (inverted attention normalises over the queries) reads them.
        weights = normalise(scores, visible, query_mask) if getattr(normalise, "takes_masks", False) \
            else normalise(scores)
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
