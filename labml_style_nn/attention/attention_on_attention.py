r"""
# Attention on attention

*Paper:* [Attention on Attention for Image Captioning](https://arxiv.org/abs/1908.06954) (Huang et al., 2019)

Attention always returns *some* weighted average, even when nothing in the keys is relevant to the
query.  Attention on attention (AoA) adds a second, gating step that decides how much of that average
to let through.  The paper builds an "information" vector and a sigmoid "gate" from the attended
values $\hat v$ concatenated with the query $q$:

$$i = W_i [\hat v; q] + b_i, \qquad g = \sigma(W_g [\hat v; q] + b_g), \qquad o = i \odot g.$$

## The variant used here

The seeds found the paper's version worse in practice and use a variant that does not concatenate
the queries: information and gate are both computed from the attended values $\hat v$, which were
themselves computed for this query,

$$o = (W_i \hat v) \odot \sigma(W_g \hat v),$$

a gated linear unit in place of the output projection.

Shapes: `b` batch, `n` tokens, `h` heads, `d` head dim, `D` model width.
"""

from torch import nn, Tensor
import torch.nn.functional as F


class AttentionOnAttention(nn.Module):
    """Output projection replaced by a GLU: $(W_i \\hat v) \\odot \\sigma(W_g \\hat v)$."""

    def __init__(self, dim_inner: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim_inner, 2 * dim)

    def forward(self, values: Tensor) -> Tensor:
        # `glu` splits the last axis in two: information $\odot\ \sigma$(gate)
        return F.glu(self.proj(values), dim=-1)  # (b, n, D)
