r"""
# Collaborative multi-head attention

*Paper:* [Multi-Head Attention: Collaborate Instead of Concatenate](https://arxiv.org/abs/2006.16362) (Cordonnier et al., 2020)

Separate query/key projections per head learn largely redundant subspaces.  Collaborative attention
shares **one** query projection and **one** key projection of width $\tilde D$ across all heads, and
gives each head $h$ only a mixing vector $m_h \in \mathbb{R}^{\tilde D}$ that re-weights the shared
features:

$$S_{hij} = \frac{(\tilde q_i \odot m_h)^\top \tilde k_j}{\sqrt{\tilde D}}, \qquad
\tilde q = x \tilde W_Q,\ \tilde k = c \tilde W_K.$$

With $\tilde D = c \cdot D$ for a compression $c$ (the seeds suggest 0.25 to 0.5), the query/key
parameters shrink from $2 h d D$ to $2 \tilde D D + h \tilde D$.  Values keep their per-head
projections.

Shapes: `b` batch, `n` tokens, `h` heads, `e` shared width $\tilde D$.

## Differences from the paper

The paper also re-parameterises pretrained models by tensor decomposition; here the layer is
trained from scratch.  The mixing vectors start from a standard normal draw.
"""

import torch
from einops import rearrange
from torch import nn, Tensor


class CollaborativeQK(nn.Module):
    """Shared query/key projections with per-head mixing vectors."""

    def __init__(self, dim: int, heads: int, compression: float, dim_context: int | None = None):
        super().__init__()
        self.dim_shared = max(1, int(compression * dim))
        self.to_q = nn.Linear(dim, self.dim_shared, bias=False)
        self.to_k = nn.Linear(dim if dim_context is None else dim_context, self.dim_shared, bias=False)
        self.mixing = nn.Parameter(torch.randn(heads, self.dim_shared))  # $m_h$

    def queries(self, x: Tensor) -> Tensor:
        # $\tilde q_i \odot m_h$
        q = self.to_q(x)  # (b, n, e)
        return rearrange(q, "b n e -> b 1 n e") * self.mixing[None, :, None, :]  # (b, h, n, e)

    def forward(self, x: Tensor, kv_input: Tensor) -> tuple[Tensor, Tensor]:
        k = rearrange(self.to_k(kv_input), "b j e -> b 1 j e")
        return self.queries(x), k.expand(-1, self.mixing.shape[0], -1, -1)  # (b, h, j, e)
