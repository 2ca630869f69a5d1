r"""
# Collaborative multi-head attention

*Paper:* [Multi-Head Attention: Collaborate Instead of Concatenate](https://arxiv.org/abs/2006.16362) (Cordonnier et al., 2020)

Each head of multi-head attention has its own query and key projections, $W^h_Q, W^h_K \in
\mathbb{R}^{D \times d}$.  The paper finds that, after training, these per-head subspaces overlap a
lot: the heads re-learn the same query/key features.  Collaborative attention shares **one** query
projection and **one** key projection of width $\tilde D$ across all heads, and gives each head $h$
only a mixing vector $m_h \in \mathbb{R}^{\tilde D}$ that re-weights the shared features:

$$S_{hij} = \frac{(\tilde q_i \odot m_h)^\top \tilde k_j}{\sqrt{\tilde D}}, \qquad
\tilde q_i = x_i \tilde W_Q,\quad \tilde k_j = c_j \tilde W_K,$$

with $c$ the keys' input (the tokens, or the cross-attention context).  Written with
$\operatorname{diag}(m_h)$, head $h$ scores with the bilinear form $\tilde W_Q \operatorname{diag}(m_h)
\tilde W_K^\top$: all heads draw on one shared basis.

With $\tilde D = c \cdot D$ for a compression $c$ (`attn_collab_compression`; the x-transformers README suggests 0.25
to 0.5 to match plain attention), the query/key parameters shrink from $2 h d D$ to
$2 \tilde D D + h \tilde D$.  The x-transformers README's example, $D = 512$, $h = 8$, $d = 64$, $c = 0.3$: from
524,288 to 157,896 parameters ($\tilde D = 153$) per layer.  Values keep their per-head projections.

The queries and keys that this module returns have $h$ heads of width $\tilde D$ each (the keys are
the same for every head, broadcast without a copy), so the rest of attention runs unchanged,
including the fused kernel: it accepts keys wider than the values.  Rotary embeddings, qk-norm and
persistent memory keys all work on the shared width $\tilde D$.

It plugs into the `qk_proj` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `tests/attention/test_attn_doctests.py` (the parameter count above) and `tests/memory/test_persistent_memory.py` (with memory keys).

Shapes: `b` batch, `n` query tokens, `j` key tokens, `h` heads, `e` shared width $\tilde D$.

## Differences from the paper

* The paper's main use is to re-parameterise a *pretrained* model by a tensor decomposition of its
  query/key weights; here the layer is trained from scratch, as in x-transformers.
* The mixing vectors start from a standard normal draw, so heads differ at initialisation; the
  shared projections use PyTorch's default initialisation.
* The scores are scaled by $1/\sqrt{\tilde D}$, the width of the shared dot product (chosen in
  `models/build.py`), and no projection has a bias.
"""

import torch
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("collab_heads", False, "collaborative heads: shared query/key projections, mixed per head",
            xtransformers=False),
    Keyword("collab_compression", None, "collaborative heads: shared width as a fraction of dim (default 0.3)",
            type=float, example=0.5, xtransformers=False))


class CollaborativeQK(nn.Module):
    r"""Shared query/key projections with per-head mixing vectors, plugged in as `qk_proj`.

    Args:
        dim: model width $D$ of the queries' input.
        heads: number of heads $h$.
        compression: $c$, so that the shared width is $\tilde D = \lfloor c D \rfloor$ (at least 1).
        dim_context: width of the keys' input for cross-attention (`None`: same as `dim`).
    """

    def __init__(self, dim: int, heads: int, compression: float, dim_context: int | None = None):
        super().__init__()
        # $\tilde D = c D$
        self.dim_shared = max(1, int(compression * dim))
        # $\tilde W_Q \in \mathbb{R}^{D \times \tilde D}$, $\tilde W_K \in \mathbb{R}^{D_c \times \tilde D}$
        self.to_q = nn.Linear(dim, self.dim_shared, bias=False)
        self.to_k = nn.Linear(dim if dim_context is None else dim_context, self.dim_shared, bias=False)
        self.mixing = nn.Parameter(torch.randn(heads, self.dim_shared))  # $m_h$, (h, e)

    def queries(self, x: Tensor) -> Tensor:
        """Per-head queries `(b, h, n, e)` from `x` `(b, n, D)`; also used alone by cached cross-attention."""
        # $\tilde q_i = x_i \tilde W_Q$
        q = self.to_q(x)  # (b, n, e)
        # $\tilde q_i \odot m_h$: one re-weighting of the shared features per head
        return rearrange(q, "b n e -> b 1 n e") * self.mixing[None, :, None, :]  # (b, h, n, e)

    def forward(self, x: Tensor, kv_input: Tensor) -> tuple[Tensor, Tensor]:
        """Queries `(b, h, n, e)` from `x` and keys `(b, h, j, e)` from `kv_input` `(b, j, D_c)`."""
        # $\tilde k_j = c_j \tilde W_K$, shared by every head
        k = rearrange(self.to_k(kv_input), "b j e -> b 1 j e")
        # `expand` is a view: the heads share one tensor of keys
        return self.queries(x), k.expand(-1, self.mixing.shape[0], -1, -1)  # (b, h, j, e)
