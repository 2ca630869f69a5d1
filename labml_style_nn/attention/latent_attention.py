r"""
# Multi-head latent attention

*Paper:* [DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model](https://arxiv.org/abs/2405.04434) (DeepSeek-AI, 2024), section 2.1

At generation time a transformer keeps the keys and values of every earlier token, in every layer:
$2 n_h d_h$ numbers per token and layer for $n_h$ heads of width $d_h$.  That cache, not the
arithmetic, bounds the batch and the context a decoder can serve.  [Grouped-query
attention](grouped_query.md) shrinks it by sharing key/value heads between query heads.  Multi-head
latent attention (MLA) keeps a key and a value per head but **compresses them jointly**: each token
is projected down to one small latent vector $c^{KV}_t$ of $d_c \ll n_h d_h$ features, the cache
stores only that, and every head's key and value are projected back up from it when needed.

## Low-rank joint compression

With $h_t$ the input of token $t$ (eqs. 9-11 of the paper):

$$c^{KV}_t = W^{DKV} h_t, \qquad k^C_t = W^{UK} c^{KV}_t, \qquad v^C_t = W^{UV} c^{KV}_t,$$

$W^{DKV} \in \mathbb{R}^{d_c \times D}$ the down-projection, $W^{UK}, W^{UV} \in \mathbb{R}^{n_h d_h
\times d_c}$ the up-projections.  The queries get the same treatment, which saves activations in
training but nothing in the cache (eqs. 12-13):

$$c^Q_t = W^{DQ} h_t, \qquad q^C_t = W^{UQ} c^Q_t .$$

## The decoupled rotary key

Without positions, the up-projection of the keys could be folded into the queries: for head $i$

$$q^{C\top}_{t,i}\, k^C_{j,i} = \left(W^{UQ}_i c^Q_t\right)^\top W^{UK}_i c^{KV}_j
= c^{Q\top}_t \underbrace{\left(W^{UQ\top}_i W^{UK}_i\right)}_{\text{one } d'_c \times d_c \text{ matrix}} c^{KV}_j ,$$

so attention could score the query against the cached latents directly and never build a key
(the **weight absorption** of the paper, and $W^{UV}$ folds into $W^O$ the same way).  Rotary
embeddings break this: rotating the key by its position puts $R_j$ between the two matrices,
$c^{Q\top}_t W^{UQ\top}_i R_{j - t} W^{UK}_i c^{KV}_j$, and the product now depends on the
distance $j - t$, so no single matrix can be precomputed.  DeepSeek therefore carries position in
a few extra features outside the latent (eqs. 14-19): a rotated query part per head and **one
rotated key shared by all heads**, computed from $h_t$ directly and cached beside the latent,

$$q^R_t = \operatorname{RoPE}\!\left(W^{QR} c^Q_t\right), \qquad k^R_t = \operatorname{RoPE}\!\left(W^{KR} h_t\right),
\qquad q_{t,i} = [q^C_{t,i};\, q^R_{t,i}], \quad k_{t,i} = [k^C_{t,i};\, k^R_t],$$

$$o_{t,i} = \sum_{j \le t} \operatorname{softmax}_j\!\left(\frac{q_{t,i}^\top k_{j,i}}{\sqrt{d_h + d_R}}\right) v^C_{j,i},
\qquad u_t = W^O [o_{t,1}; \dots; o_{t,n_h}] .$$

The position-free part $q^{C\top} k^C$ stays absorbable; the $d_R$ rotated features are cheap to
keep as they are.

## What the cache holds

Per token and layer: $2 n_h d_h$ numbers for multi-head attention, $2 n_g d_h$ with $n_g$ key/value
groups, $d_c + d_R$ with MLA.  DeepSeek-V2 has $n_h = 128$ heads of $d_h = 128$, $d_c = 512$ and
$d_R = 64$: **576 numbers instead of 32,768**, 57 times fewer (the paper: as little as
grouped-query attention with 2.25 groups).  Over its 60 layers, in bf16, a token costs 67.5 KiB of
cache instead of 3.75 MiB, so a 128K-token context needs 8.4 GiB instead of 480 GiB.

Here the cache stores exactly that: `update(c, k_R)` on the ordinary key/value caches (the growing,
[static](../generation/static_cache.md) and [rolling](../generation/rolling_cache.md) ones, which
keep any two tensors per token), with $c$ as one $d_c$-wide "head" and $k^R$ rotated at its own
position before it is stored.  Every step then up-projects **all** cached latents to keys and
values.  **This code does not absorb the weights**: it spends $O(j\, d_c\, n_h (d_h + d_v))$ per
step re-expanding the cache, where absorption would score in the latent space at
$O(j\, n_h\, d_c)$.  Absorption changes only the cost, not the function, and is not implemented.

## Two layouts of the decoupled key

* **DeepSeek's** (`attn_latent_rope_dim=d_R`, with `attn_latent_norm=True` for the RMSNorms on
  both latents and `attn_latent_value_dim_head` for a value width of its own): every head has $d_h$
  latent features and $d_R$ rotated ones, the rotated key is shared.  This is what
  [DeepSeek-V3](../pretrained/deepseek_v3.md) loads.
* **x-transformers'** (`attn_latent_rope_subheads=s`): whole heads instead of features.  The
  last $s$ key heads come from $h_t$ directly (each its own, not shared) and only those heads,
  queries and keys, are rotated; the other heads carry no position and their keys come from the
  latent.  The cache holds $d_c + s\, d_h$ numbers per token.
* **Neither** (`attn_use_latent_kv=True` with rotary embeddings): x-transformers rotates every
  key after its up-projection.  The cache still holds only $c_t$, but each step must rotate the
  keys of every cached position again, and nothing could be absorbed: the case that motivates the
  decoupled key.  The caches hand these keys their angles (`SharedAttentionInputs.key_rotary`).

Shapes: `b` batch, `n` new tokens, `j` keys (cached and new), `h` query heads, `g` key/value
heads, `d` $= d_h$, `d_c` the latent, `d_R` the rotated features, `s` decoupled heads,
`e` $= d_h + d_R$ the query/key width, `dv` the value width.

## Differences from the paper

* No weight absorption (above): keys and values are re-expanded from the latents at every step.
* $W^{DKV}$ and $W^{KR}$ are one matrix, as are $W^{UK}$ and $W^{UV}$ (one matrix multiply each;
  Hugging Face's `kv_a_proj_with_mqa` is the first).
* The latents' RMSNorms (in DeepSeek's released code, not in the paper's equations) have
  DeepSeek's fixed $\epsilon = 10^{-6}$.
* A key's features are $[k^C; k^R]$ and rotary pairs are $(p, p + d_R/2)$; DeepSeek's checkpoints
  pair $(2p, 2p + 1)$, which the [converter](../pretrained/deepseek_v3.md) reorders.

## Differences from x-transformers

* x-transformers caches its decoupled sub-head keys unrotated and rotates the whole key sequence
  at every step; here they are stored rotated at their own positions (the same function).
* `attn_dim_latent_q`/`attn_dim_latent_kv` without their `attn_use_latent_*` switch are ignored
  there and refused here; `attn_latent_rope_subheads` without `attn_use_latent_kv` fails there on
  a shape and is refused here, as are combinations with collaborative heads, biased projections and
  position-infused attention.
* Cross-attention: its latent is computed from the context of `dim_context` features
  (x-transformers projects from `dim`, which fails when the two differ).
* Grouped key/value heads: x-transformers gives query head $m g + a$ key head $a$, this library
  query head $a r + m$; the parity test reorders the query heads.
* Attention sinks (which re-rotate cached keys) refuse a latent cache.

## Evidence

* `tests/attention/test_latent_attention.py`: logits within $10^{-5}$ of x-transformers 2.31.10
  with its weights copied (padded, causal and bidirectional; latent queries, latent keys with all
  heads rotated, decoupled sub-heads, grouped heads; gradients for one case); the cache holds
  $d_c$, $d_c + s d_h$ or $d_c + d_R$ numbers per token and cached decoding equals the full pass;
  each keyword changes the output; the refusals.
* The invariant sweeps: causality, padding, context padding, gradients and fused equals explicit
  (`tests/attention/attn_features.py`), cached equals uncached generation
  (`tests/generation/test_cache.py`), the static and rolling caches
  (`test_static_decoding.py`, `test_rolling_cache.py`).
* `tests/pretrained/test_deepseek_v3.py`: DeepSeek-V3's logits and greedy generation equal
  Hugging Face's, with a cache of `kv_lora_rank + qk_rope_head_dim` numbers per token.
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from ..norms.rms_norm import RMSNorm
from ..positional.rotary import apply_rotary
from .extension_points import SharedAttentionInputs

KEYWORDS = declare(__name__, "attn",
    Keyword("use_latent_q", False, "queries through a low-rank latent: q = W_UQ W_DQ x (needs attn_dim_latent_q)"),
    Keyword("dim_latent_q", None, "width of the query latent", type=int, minimum=1, example=16),
    Keyword("use_latent_kv", False, "keys and values up-projected from one cached latent c = W_DKV x "
            "(needs attn_dim_latent_kv)"),
    Keyword("dim_latent_kv", None, "width of the key/value latent, what the cache stores per token", type=int,
            minimum=1, example=16),
    Keyword("latent_rope_subheads", None, "decoupled rotary keys as x-transformers has them: the last s heads' "
            "keys come from x directly and alone are rotated", type=int, minimum=1, example=1),
    Keyword("latent_rope_dim", None, "DeepSeek's decoupled rotary key: d_R rotated features per query head, one "
            "shared d_R-wide key from x", type=int, minimum=2, example=4, xtransformers=False),
    Keyword("latent_norm", False, "RMSNorm on the query and key/value latents (DeepSeek)", xtransformers=False),
    Keyword("latent_value_dim_head", None, "value width per head of latent attention (DeepSeek's v_head_dim; "
            "default attn_dim_head)", type=int, minimum=1, example=4, xtransformers=False))

# DeepSeek's latent norms have their own epsilon, not the model's `rms_norm_eps`.
LATENT_NORM_EPS = 1e-6


#
# ## The module
class LatentQKV(nn.Module):
    r"""Queries, keys and values through low-rank latents; the cache holds the latents, not the heads.

    Plugged into [attention](attention.md) as `latent_qkv`: it replaces the projections, the rotary
    embedding of queries and keys, and the cache update, and returns heads ready for the scores.

    Args:
        dim: model width $D$ of the queries' input.
        heads: query heads $h$.
        dim_head: width $d$ of each head's query/key features computed from the latents.
        kv_heads: key/value heads $g$ (`None`: $h$).
        dim_latent_q: width $d'_c$ of the query latent (`None`: queries straight from $x$).
        dim_latent_kv: width $d_c$ of the key/value latent (`None`: keys and values straight from
            $x$, cached as heads).
        rope_subheads: x-transformers' decoupled keys: the last $s$ key heads come from $x$.
        rope_dim: DeepSeek's decoupled key: $d_R$ rotated features per head, one key shared by all.
        dim_value_head: value width per head (`None`: $d$).
        latent_norm: RMSNorm on both latents.
        dim_context: width of the keys' input for cross-attention (`None`: $D$).
    """

    def __init__(self, dim: int, *, heads: int, dim_head: int, kv_heads: Optional[int] = None,
                 dim_latent_q: Optional[int] = None, dim_latent_kv: Optional[int] = None,
                 rope_subheads: Optional[int] = None, rope_dim: Optional[int] = None,
                 dim_value_head: Optional[int] = None, latent_norm: bool = False, dim_context: Optional[int] = None):
        super().__init__()
        g = heads if kv_heads is None else kv_heads
        dv = dim_head if dim_value_head is None else dim_value_head
        if (rope_subheads is not None or rope_dim is not None) and dim_latent_kv is None:
            raise ValueError("rope_subheads, rope_dim: decoupled rotary keys need a key/value latent (dim_latent_kv)")
        if rope_subheads is not None and rope_dim is not None:
            raise ValueError("rope_subheads and rope_dim are two layouts of the decoupled key; choose one")
        if rope_subheads is not None and not (g == heads and 0 < rope_subheads <= heads):
            raise ValueError(f"rope_subheads: expected 1..heads ({heads}) with one key head per query head, "
                             f"got {rope_subheads} with {g} key/value heads")
        self.heads, self.kv_heads, self.dim_head, self.dim_value_head = heads, g, dim_head, dv
        self.rope_subheads, self.rope_dim = rope_subheads, rope_dim
        dim_kv_input = dim if dim_context is None else dim_context
        # Width of each query (and key): the latent-derived $d$ plus DeepSeek's rotated $d_R$.
        self.dim_qk = dim_head + (rope_dim or 0)
        # Width of the decoupled key computed from $x$: $s$ heads of $d$, or one shared $d_R$.
        self.dim_rope_key = (rope_subheads or 0) * dim_head + (rope_dim or 0)
        # Key heads up-projected from the latent: all of them, or all but the $s$ decoupled ones.
        self.latent_key_heads = g - (rope_subheads or 0)

        # $c^Q = x W^{DQ}$, then $q = c^Q W^{UQ}$ (or $q = x W^Q$ without a query latent)
        self.to_latent_q = nn.Linear(dim, dim_latent_q, bias=False) if dim_latent_q is not None else None
        self.norm_q = RMSNorm(dim_latent_q, eps=LATENT_NORM_EPS) if dim_latent_q and latent_norm else None
        self.to_q = nn.Linear(dim_latent_q or dim, heads * self.dim_qk, bias=False)
        # $[c^{KV}; k^R] = x\, [W^{DKV}; W^{KR}]$, one down-projection; then
        # $[k^C; v^C] = c^{KV} [W^{UK}; W^{UV}]$, one up-projection.  Without a key/value latent:
        # $[k; v] = x\, [W^K; W^V]$ as in plain attention.
        self.dim_latent_kv = dim_latent_kv
        if dim_latent_kv is not None:
            self.to_latent_kv = nn.Linear(dim_kv_input, dim_latent_kv + self.dim_rope_key, bias=False)
            self.norm_kv = RMSNorm(dim_latent_kv, eps=LATENT_NORM_EPS) if latent_norm else None
            self.up_kv = nn.Linear(dim_latent_kv, self.latent_key_heads * dim_head + g * dv, bias=False)
            self.to_kv = None
        else:
            self.to_latent_kv = self.norm_kv = self.up_kv = None
            self.to_kv = nn.Linear(dim_kv_input, g * (dim_head + dv), bias=False)

    #
    # ### Queries
    def queries(self, x: Tensor, rotary: Optional[Tensor]) -> Tensor:
        r"""Rotated queries `(b, h, n, d + d_R)`; `rotary` holds the angles of the last `n` positions."""
        c_q = x if self.to_latent_q is None else self.to_latent_q(x)  # (b, n, d'_c)
        if self.norm_q is not None:
            c_q = self.norm_q(c_q)
        q = rearrange(self.to_q(c_q), "b n (h e) -> b h n e", h=self.heads)  # e = d + d_R
        if rotary is None:
            return q
        if self.rope_dim is not None:
            # DeepSeek: $q_i = [q^C_i;\ \mathrm{RoPE}(q^R_i)]$, the last $d_R$ features rotate
            q_c, q_r = q.split((self.dim_head, self.rope_dim), dim=-1)
            return torch.cat((q_c, apply_rotary(q_r, rotary)), dim=-1)
        if self.rope_subheads is not None:
            # x-transformers: the last $s$ heads rotate, the others carry no position
            s = self.rope_subheads
            return torch.cat((q[:, :-s], apply_rotary(q[:, -s:], rotary)), dim=1)
        return apply_rotary(q, rotary)

    #
    # ### Keys and values, through the cache
    def forward(self, x: Tensor, kv_input: Tensor, shared: SharedAttentionInputs, cache, is_cross: bool):
        """`(q, k, v, offset)`: heads `(b, h, n, e)`, `(b, g, j, e)`, `(b, g, j, dv)` and the keys before `x`."""
        n = x.shape[1]
        rotary = None if is_cross else shared.rotary
        q = self.queries(x, None if rotary is None else rotary[:, ..., -n:, :])
        offset = 0 if is_cross else kv_input.shape[1] - n
        if cache is not None and not is_cross:
            offset = cache.offset
        if is_cross and cache is not None and cache.has_kv():
            first, second = cache.get_kv()  # the context's, computed at the first step
        else:
            first, second = self._compress(kv_input, rotary)
            if cache is not None:
                if is_cross:
                    cache.set_kv(first, second)
                else:
                    # What the cache stores: the latent $c^{KV}$ and the rotated $k^R$, never the heads
                    first, second = cache.update(first, second)
        if self.dim_latent_kv is None:
            return q, first, second, offset  # keys and values, cached as heads
        # Keys recomputed from cached latents need the angles of every cached position.
        key_rotary = rotary if rotary is None or shared.key_rotary is None else shared.key_rotary
        k, v = self._expand(first, second, key_rotary)
        return q, k, v, offset

    def _compress(self, kv_input: Tensor, rotary: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """What one token adds to the cache: `(c, k_R)` `(b, 1, j, d_c)`, `(b, s|1, j, d|d_R)`; or `(k, v)` heads."""
        g, d = self.kv_heads, self.dim_head
        if self.to_kv is not None:
            k, v = self.to_kv(kv_input).split((g * d, g * self.dim_value_head), dim=-1)
            k = rearrange(k, "b j (g d) -> b g j d", g=g)
            v = rearrange(v, "b j (g d) -> b g j d", g=g)
            return (k if rotary is None else apply_rotary(k, rotary)), v
        assert self.dim_latent_kv is not None and self.to_latent_kv is not None
        # $[c^{KV}_t; k^R_t] = x_t\, [W^{DKV}; W^{KR}]$: the compression, one matrix multiply
        c, k_r = self.to_latent_kv(kv_input).split((self.dim_latent_kv, self.dim_rope_key), dim=-1)
        if self.norm_kv is not None:
            c = self.norm_kv(c)
        c = c[:, None]  # (b, 1, j, d_c): the cache's one "head"
        if self.rope_subheads is not None:
            k_r = rearrange(k_r, "b j (s d) -> b s j d", s=self.rope_subheads)
        else:
            k_r = k_r[:, None]  # (b, 1, j, d_R); zero wide without a decoupled key
        # $k^R_t = \mathrm{RoPE}(W^{KR} x_t)$, rotated once, at its own position, before it is cached
        if rotary is not None and self.dim_rope_key:
            k_r = apply_rotary(k_r, rotary)
        return c, k_r

    def _expand(self, c: Tensor, k_r: Tensor, key_rotary: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Keys `(b, g, j, e)` and values `(b, g, j, dv)` from the latents of every cached token."""
        assert self.up_kv is not None
        g, d = self.kv_heads, self.dim_head
        # $[k^C_t; v^C_t] = c^{KV}_t\, [W^{UK}; W^{UV}]$
        k_c, v = self.up_kv(c[:, 0]).split((self.latent_key_heads * d, g * self.dim_value_head), dim=-1)
        k_c = rearrange(k_c, "b j (g d) -> b g j d", d=d)  # (b, g - s, j, d)
        v = rearrange(v, "b j (g d) -> b g j d", g=g)  # (b, g, j, dv)
        if self.rope_dim is not None:
            # DeepSeek: $k_{t,i} = [k^C_{t,i};\ k^R_t]$, one rotated key shared by every head
            k = torch.cat((k_c, k_r.expand(-1, g, -1, -1)), dim=-1)  # (b, g, j, d + d_R)
        elif self.rope_subheads is not None:
            # x-transformers: the latent's $g - s$ heads without position, then the $s$ rotated ones
            k = torch.cat((k_c, k_r), dim=1)  # (b, g, j, d)
        elif key_rotary is not None:
            # No decoupled key: every key is rotated after its up-projection, at every step, for every
            # cached position.  This is what cannot be absorbed (see above).
            k = apply_rotary(k_c, key_rotary)
        else:
            k = k_c
        return k, v


#
# ## Rules between keywords
@rule("attn")
def _check_latent(a, prefix: str, o) -> None:
    if a.use_latent_q and a.dim_latent_q is None:
        raise ValueError(f"{prefix}use_latent_q needs {prefix}dim_latent_q, the width of the query latent")
    if a.use_latent_kv and a.dim_latent_kv is None:
        raise ValueError(f"{prefix}use_latent_kv needs {prefix}dim_latent_kv, the width of the key/value latent")
    for flag, width in (("use_latent_q", "dim_latent_q"), ("use_latent_kv", "dim_latent_kv")):
        if getattr(a, width) is not None and not getattr(a, flag):
            raise ValueError(f"{prefix}{width}: only meaningful with {prefix}{flag}=True")
    for name in ("latent_rope_subheads", "latent_rope_dim", "latent_norm", "latent_value_dim_head"):
        if getattr(a, name) not in (None, False) and not a.use_latent_kv:
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}use_latent_kv=True")
    if not (a.use_latent_q or a.use_latent_kv):
        return
    if a.latent_rope_subheads is not None and a.latent_rope_dim is not None:
        raise ValueError(f"{prefix}latent_rope_subheads and {prefix}latent_rope_dim both decouple the rotary "
                         "keys (x-transformers' rotated heads, DeepSeek's rotated features); choose one")
    if a.latent_rope_subheads is not None:
        if a.latent_rope_subheads > o.heads:
            raise ValueError(f"{prefix}latent_rope_subheads: expected at most heads ({o.heads}), "
                             f"got {a.latent_rope_subheads}")
        if a.num_kv_heads(o.heads) != o.heads:
            raise ValueError(f"{prefix}latent_rope_subheads and {prefix}kv_heads (or {prefix}one_kv_head): the "
                             "decoupled key heads need one key head per query head")
    for other in ("collab_heads", "qkv_bias"):
        if getattr(a, other):
            raise ValueError(f"{prefix}use_latent_q/{prefix}use_latent_kv and {prefix}{other} both replace the "
                             "query/key/value projections; choose one")
    if o.position_infused_attn:
        raise ValueError(f"{prefix}use_latent_q/{prefix}use_latent_kv and position_infused_attn: positions added "
                         "to the projections' inputs are not supported by the latent projections")
    wide = a.latent_rope_dim is not None or (a.latent_value_dim_head or a.dim_head) != a.dim_head
    for other in ("num_mem_kv", "gate_values", "on_attn"):
        if wide and getattr(a, other):
            raise ValueError(f"{prefix}latent_rope_dim (or {prefix}latent_value_dim_head) and {prefix}{other}: "
                             f"{other} assumes keys and values of attn_dim_head features")
    if a.latent_rope_dim is not None and o.rotary_emb_dim is not None and o.rotary_emb_dim > a.latent_rope_dim:
        raise ValueError(f"rotary_emb_dim: expected at most {prefix}latent_rope_dim ({a.latent_rope_dim}), "
                         f"the rotated features, got {o.rotary_emb_dim}")


def make_latent_qkv(a, o, dim_context: Optional[int]) -> Optional[LatentQKV]:
    """The latent projections of attention options `a` in stack `o`, or `None` when neither latent is on."""
    if not (a.use_latent_q or a.use_latent_kv):
        return None
    return LatentQKV(o.dim, heads=o.heads, dim_head=a.dim_head, kv_heads=a.num_kv_heads(o.heads),
                     dim_latent_q=a.dim_latent_q if a.use_latent_q else None,
                     dim_latent_kv=a.dim_latent_kv if a.use_latent_kv else None,
                     rope_subheads=a.latent_rope_subheads, rope_dim=a.latent_rope_dim,
                     dim_value_head=a.latent_value_dim_head, latent_norm=a.latent_norm, dim_context=dim_context)


def needs_key_angles(o) -> bool:
    """Whether some layer of stack options `o` rotates keys recomputed from cached latents (every step)."""
    a = o.attn  # (cross-attention keys carry no position)
    return o.rotary_pos_emb and a.use_latent_kv and a.latent_rope_subheads is None and a.latent_rope_dim is None
