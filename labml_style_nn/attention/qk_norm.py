r"""
# Query-key normalisation

*Paper:* [Query-Key Normalization for Transformers](https://arxiv.org/abs/2010.04245) (Henry et al., 2020)

Dot-product scores grow with the norms of the queries and keys.  A few large scores saturate the
softmax: its gradient vanishes for every other key, and in half precision the scores can overflow.
QK-norm $\ell_2$-normalises every query and key along the head dimension, so that each score is a
cosine similarity, and multiplies by a learned temperature $g$ in place of the fixed $1/\sqrt d$:

$$S_{ij} = g \cdot \frac{q_i^\top k_j}{\lVert q_i \rVert\,\lVert k_j \rVert} \in [-|g|, |g|].$$

The scores are bounded by the temperature, whatever the inputs (a test checks it).  A cosine
similarity alone lies in $[-1, 1]$, far too flat for a softmax over hundreds of keys, hence the
temperature.  The paper initialises it from the training sequence length $L$,

$$g_0 = \log_2(L^2 - L),$$

large enough that a softmax over $L$ keys can still put most of its weight on one; with the x-transformers README's
`qk_norm_attn_seq_len = 1024` that is about 20.  The x-transformers README reports that this initialisation is what
makes the method work as well as dot-product attention for autoregressive models.

## What x-transformers' `qk_norm` does

x-transformers 2.31 keeps the normalisation and fixes the temperature instead of learning it:
`attn_qk_norm=True` gives $S_{ij} = s\, \hat q_i^\top \hat k_j$ with $s$ = `attn_qk_norm_scale`,
10 by default, and this library's `attn_qk_norm=True` now means the same (a parity test copies
x-transformers' weights and gets its logits).  Two refinements come with it:

* `attn_qk_norm_groups=G` normalises each of $G$ groups of $d / G$ features separately, so a score
  is a sum of $G$ cosine similarities, bounded by $s\,G$.  x-transformers refuses groups of two
  features or fewer ("2 was too small in my tests"), and so do we.
* `attn_qk_norm_dim_scale=True` multiplies the normalised queries and keys by learned per-head,
  per-feature scales $\gamma^q_h, \gamma^k_h \in \mathbb{R}^d$, each starting at $d^{1/4}$, and uses the
  usual $1/\sqrt d$ in place of $s$: at initialisation $d^{1/4} d^{1/4} / \sqrt d = 1$, a plain
  cosine similarity, and training sets the temperature per feature.  `attn_qk_norm_scale` is then
  unused, so giving both is refused.

The paper's learned temperature is still here: give the training length, `attn_qk_norm_seq_len=L`
(or the older spelling `qk_norm_attn_seq_len`), and $g$ starts at $\log_2(L^2 - L)$ and is learned,
as this library's `attn_qk_norm=True` did before it took x-transformers' meaning.

The technique plugs into the `qk_transform` extension point: the attention module calls
`queries(q)` and `keys(k)` right after the projections and before rotary embeddings (a rotation
keeps lengths, and with groups or per-feature scales the order matters: x-transformers normalises
first), with its score scale set by `models/build.py` ($s$, $1/\sqrt d$, or 1 with a learned
temperature, which then multiplies the queries and keeps the fused kernel in use).  Persistent memory keys are
normalised and scaled too, as in x-transformers; keys stored in a cache were normalised when they
were computed.

Tests: `test_qk_norm_scores_bounded_by_temperature` and `test_qk_norm_is_cosine_similarity_times_temperature` in
`tests/attention/test_attn_properties.py`; the groups, the per-feature scales and parity with x-transformers in
`tests/attention/test_attn_qk_norm_xt.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim, `G` groups.

## Differences from the paper

* The paper learns one temperature per layer; x-transformers' default, and ours, fixes it at 10.
  The learned temperature is `attn_qk_norm_seq_len`; with it, one temperature per layer, shared by
  its heads, as in the paper.
* The bound is on the scores $QK^\top$ themselves: a position bias (ALiBi, T5) is added to them,
  and residual attention sums them across layers, so the softmax's input can exceed it with those
  features on.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("qk_norm", False, "l2-normalise queries and keys; a fixed scale (qk_norm_scale) replaces 1/sqrt(d)"),
    Keyword("qk_norm_groups", 1, "qk-norm: normalise this many groups of features separately", minimum=1,
            example=2),
    Keyword("qk_norm_scale", 10, "qk-norm: the fixed scale of the cosine similarities", type=(int, float),
            example=5.0),
    Keyword("qk_norm_dim_scale", False, "qk-norm: learned per-feature scales on queries and keys, then 1/sqrt(d)"),
    Keyword("qk_norm_seq_len", None, "qk-norm: learn the temperature instead, initialised for this sequence length",
            type=int, example=64, xtransformers=False))


@rule("attn")
def _qk_norm_options(a, prefix: str, o) -> None:
    changed = [n for n, default in (("qk_norm_groups", 1), ("qk_norm_scale", 10), ("qk_norm_dim_scale", False))
               if getattr(a, n) != default]
    if changed and not a.qk_norm:
        raise ValueError(f"{prefix}{changed[0]}: only meaningful with {prefix}qk_norm=True")
    if not a.qk_norm:
        return
    if a.dim_head % a.qk_norm_groups or a.dim_head // a.qk_norm_groups <= 2:
        raise ValueError(f"{prefix}qk_norm_groups: expected a divisor of dim_head ({a.dim_head}) leaving more than "
                         f"2 features per group, got {a.qk_norm_groups}")
    if a.qk_norm_dim_scale and a.qk_norm_scale != 10:
        raise ValueError(f"{prefix}qk_norm_dim_scale and {prefix}qk_norm_scale: with per-feature scales the score "
                         "scale is 1/sqrt(dim_head); choose one")
    if a.qk_norm_seq_len is not None and (a.qk_norm_scale != 10 or a.qk_norm_dim_scale):
        other = "qk_norm_scale" if a.qk_norm_scale != 10 else "qk_norm_dim_scale"
        raise ValueError(f"{prefix}qk_norm_seq_len and {prefix}{other}: a learned temperature replaces the "
                         "fixed scale; choose one")


def initial_temperature(seq_len: int) -> float:
    r"""The paper's initial temperature $\log_2(L^2 - L)$, for sequences of length $L \ge 2$.

    >>> round(initial_temperature(1024), 3)
    19.999
    >>> initial_temperature(2)
    1.0
    """
    return math.log2(seq_len ** 2 - seq_len)


def l2norm_groups(t: Tensor, groups: int = 1) -> Tensor:
    r"""Unit length along the last axis, separately for each of `groups` equal groups of features.

    >>> l2norm_groups(torch.tensor([3.0, 4.0, 0.0, 2.0]), groups=2).tolist()
    [0.6000000238418579, 0.800000011920929, 0.0, 1.0]
    """
    if groups == 1:
        return F.normalize(t, dim=-1)
    # $\hat t^{(G)} = t^{(G)} / \lVert t^{(G)} \rVert$ for each group $G$ of $d / G$ features
    return F.normalize(t.unflatten(-1, (groups, -1)), dim=-1).flatten(-2)


class QKNorm(nn.Module):
    """Transform of queries and keys: unit length (per group), with optional learned scales.

    Args:
        seq_len: learn a temperature $g$ on the queries, initialised for length $L$ (`None`: no
            temperature, the attention module's scale is used; the old `QKNorm(seq_len)` form).
        groups: number of groups $G$ normalised separately.
        dim_scale: learned per-feature scales, `(heads, dim_head)` for queries and
            `(kv_heads, dim_head)` for keys, starting at $d^{1/4}$.
    """

    def __init__(self, seq_len: int | None = None, *, groups: int = 1,
                 dim_scale: tuple[int, int, int] | None = None):
        super().__init__()
        self.groups = groups
        self.temperature = None if seq_len is None else nn.Parameter(torch.tensor(initial_temperature(seq_len)))  # $g$
        self.q_scale = self.k_scale = None
        if dim_scale is not None:
            heads, kv_heads, dim_head = dim_scale
            # $\gamma^q_h, \gamma^k_h = d^{1/4}$ at first: their product over $\sqrt d$ is 1
            self.q_scale = nn.Parameter(torch.full((heads, 1, dim_head), dim_head ** 0.25))  # (h, 1, d)
            self.k_scale = nn.Parameter(torch.full((kv_heads, 1, dim_head), dim_head ** 0.25))  # (g, 1, d)

    def queries(self, q: Tensor) -> Tensor:
        r"""`(b, h, n, d)` queries to $\gamma^q \odot q / \lVert q \rVert$ (times $g$ when learned)."""
        # $q_i / \lVert q_i \rVert$, per group
        q = l2norm_groups(q, self.groups)  # (b, h, n, d)
        if self.q_scale is not None:
            q = q * self.q_scale.to(q.dtype)
        if self.temperature is not None:
            # $g \, \hat q_i$; the attention module then uses scale 1
            q = q * self.temperature.to(q.dtype)
        return q

    def keys(self, k: Tensor) -> Tensor:
        r"""`(b, h, j, d)` keys to $\gamma^k \odot k / \lVert k \rVert$."""
        # $k_j / \lVert k_j \rVert$, per group
        k = l2norm_groups(k, self.groups)  # (b, h, j, d)
        return k if self.k_scale is None else k * self.k_scale.to(k.dtype)
