r"""
# RMSNorm on queries, keys and values

*Paper:* [Scaling Vision Transformers to 22 Billion Parameters](https://arxiv.org/abs/2302.05442) (Dehghani et al., 2023)

Training ViT-22B diverged after a few thousand steps: the attention logits grew without bound and
the softmax collapsed to one-hot rows ("attention entropy collapse").  The fix was to normalise the
queries and keys of every head before their dot product, with a learned gain:

$$\hat q_{hi} = \gamma^q_h \odot \frac{q_{hi}}{\operatorname{RMS}(q_{hi})}, \qquad
\hat k_{hj} = \gamma^k_h \odot \frac{k_{hj}}{\operatorname{RMS}(k_{hj})}, \qquad
S_{hij} = \frac{\hat q_{hi}^\top \hat k_{hj}}{\sqrt d},$$

with $\operatorname{RMS}(u) = \lVert u \rVert / \sqrt d$.  Each normalised vector has length
$\sqrt d$, so at initialisation ($\gamma = 1$) a score is $\sqrt d \cos\theta$: bounded, unlike a plain
dot product, and as sharp as a typical unnormalised score.  The gains let training choose the
sharpness per feature.  Unlike [qk-norm](qk_norm.md) the usual $1/\sqrt d$ stays, and nothing is
fixed or learned as a temperature.

The same normalisation on the values (`attn_value_rmsnorm=True`) bounds what a head can write to the
residual stream; x-transformers adds it citing AlphaGenome and ByteDance's GR3, for stability.

| keyword | normalises | gains |
|---|---|---|
| `attn_qk_rmsnorm=True` | queries and keys | $\gamma^q_h$ per query head, $\gamma^k_g$ per key/value head |
| `attn_k_rmsnorm=True` | keys only | $\gamma^k_g$ |
| `attn_value_rmsnorm=True` | values | $\gamma^v_g$ per key/value head |

The queries and keys plug into the `qk_transform` point of [attention](attention.md), applied
before rotary embeddings as in x-transformers; the values into `value_norm`.  Keys and values
are normalised once, when computed, so a cache holds normalised ones.  The fused kernel stays in
use.  Tests: `tests/attention/test_attn_qk_rmsnorm.py` (the closed form, the bound on the scores,
parity with x-transformers' weights).

Shapes: `b` batch, `h` query heads, `g` key/value heads, `n`/`j` tokens, `d` head dim.

## Differences from the paper and from x-transformers

* ViT-22B uses LayerNorm (centred, with a bias); x-transformers and we use the bias-free RMS form.
* x-transformers stores each gain minus one (starting at zero); we store the gain itself.
* x-transformers' value gains have one row per *query* head, which only broadcasts when every
  query head has its own key/value head (or there is one); ours have one per key/value head, so
  grouped-query attention works.
* Persistent memory keys (`attn_num_mem_kv`) pass through the key norm here; x-transformers
  leaves them as they are with these keywords (it normalises them only for `attn_qk_norm`).
* `attn_qk_norm` and these norms both claim the queries and keys, so giving both is refused;
  x-transformers would apply the RMSNorm after the $\ell_2$ norm, which only rescales by $\sqrt d\, \gamma$.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("qk_rmsnorm", False, "RMSNorm with a learned gain per head on queries and keys"),
    Keyword("k_rmsnorm", False, "RMSNorm with a learned gain per head on the keys only"),
    Keyword("value_rmsnorm", False, "RMSNorm with a learned gain per head on the values"))


@rule("attn")
def _one_norm_for_queries_and_keys(a, prefix: str, o) -> None:
    if a.qk_rmsnorm and a.k_rmsnorm:
        raise ValueError(f"{prefix}qk_rmsnorm and {prefix}k_rmsnorm: qk_rmsnorm already normalises the keys; "
                         "choose one")
    if (a.qk_rmsnorm or a.k_rmsnorm) and a.qk_norm:
        which = "qk_rmsnorm" if a.qk_rmsnorm else "k_rmsnorm"
        raise ValueError(f"{prefix}{which} and {prefix}qk_norm both normalise the keys; choose one")


class MultiheadRMSNorm(nn.Module):
    r"""$\gamma_h \odot u / \operatorname{RMS}(u)$ along the last axis, with a gain per head.

    >>> norm = MultiheadRMSNorm(heads=1, dim=4)
    >>> norm(torch.tensor([[[[2.0, 0.0, 0.0, 0.0]]]])).tolist()   # length sqrt(4) = 2
    [[[[2.0, 0.0, 0.0, 0.0]]]]

    Args:
        heads: number of heads of the tensors it normalises.
        dim: features per head $d$.
    """

    def __init__(self, heads: int, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gain = nn.Parameter(torch.ones(heads, 1, dim))  # $\gamma_h$, (h, 1, d)

    def forward(self, u: Tensor) -> Tensor:
        """`u` `(b, h, n, d)` normalised per vector, times the gain of its head."""
        # $u / \operatorname{RMS}(u) = \sqrt d\, u / \lVert u \rVert$
        return F.normalize(u, dim=-1) * self.scale * self.gain.to(u.dtype)  # (b, h, n, d)


class QKRMSNorm(nn.Module):
    """The `qk_transform` of `attn_qk_rmsnorm` (queries and keys) or `attn_k_rmsnorm` (keys only).

    Args:
        heads: query heads $h$ (`None`: queries are left as they are).
        kv_heads: key/value heads $g$.
        dim_head: features per head $d$.
    """

    def __init__(self, heads: Optional[int], kv_heads: int, dim_head: int):
        super().__init__()
        self.q_norm = MultiheadRMSNorm(heads, dim_head) if heads is not None else None
        self.k_norm = MultiheadRMSNorm(kv_heads, dim_head)

    def queries(self, q: Tensor) -> Tensor:
        r"""`(b, h, n, d)` queries to $\gamma^q_h \odot q / \operatorname{RMS}(q)$ (or unchanged)."""
        return q if self.q_norm is None else self.q_norm(q)

    def keys(self, k: Tensor) -> Tensor:
        r"""`(b, g, j, d)` keys to $\gamma^k_g \odot k / \operatorname{RMS}(k)$."""
        return self.k_norm(k)
