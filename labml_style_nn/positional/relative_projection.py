r"""
# Relative position bias from a learned basis of distance curves

*Source:* x-transformers' `use_rel_proj_pos_bias`, which it attributes to the "Inkling" model of
Thinking Machines (no paper yet); related to [T5's relative bias](t5_bias.md) and to
[ALiBi](alibi.md)

T5 and ALiBi give every query of a head the same bias curve over distances: a learned table, or a
straight line.  Here each *query* chooses its own curve.  A bank of $R$ learned curves over the
distances $0, \dots, D - 1$ is shared by the layer, and each query mixes them with weights projected
from its own input:

$$w_{hi} = W_h x_i + b_h \in \mathbb R^R, \qquad B_{hij} = \sum_{r} w_{hir}\, C_r[i - j] \quad (0 \le i - j < D),$$

and $B_{hij} = 0$ for keys after the query or $D$ or more tokens before it.  A query that needs the
last few tokens can put a steep curve on them; one that looks for a distant pattern, a flat one.  The
curves start as small noise ($0.02 \cdot \mathcal N(0, 1)$), so the bias starts near zero.

The bias is computed per layer from that layer's input, so it is a `score_bias` of
[attention](attention.md), added to any shared bias (ALiBi, T5) and given to the fused kernel.  Each
query's bias depends only on its own input and on distances, so cached decoding needs no state.

`attn_use_rel_proj_pos_bias=True`, `attn_rel_proj_num_distance_basis=16` ($R$),
`attn_rel_proj_max_dist=1024` ($D$).  Tests: `tests/positional/test_pos_in_attention.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `i`/`j` query/key positions, `R` curves, `D` distances.
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("use_rel_proj_pos_bias", False, "each query mixes a learned bank of distance curves into a bias"),
    Keyword("rel_proj_num_distance_basis", 16, "use_rel_proj_pos_bias: number R of curves", minimum=1, example=4),
    Keyword("rel_proj_max_dist", 1024, "use_rel_proj_pos_bias: distances D the curves cover", minimum=1,
            example=8))


class RelativeProjectionBias(nn.Module):
    """`score_bias`: per query, a mixture of learned distance curves."""

    def __init__(self, dim: int, heads: int, num_distance_basis: int = 16, max_dist: int = 1024):
        super().__init__()
        self.heads, self.max_dist = heads, max_dist
        # $W_h, b_h$
        self.to_weights = nn.Linear(dim, heads * num_distance_basis)
        # $C_r[\delta]$, the bank of curves
        self.curves = nn.Parameter(torch.randn(num_distance_basis, max_dist) * 0.02)

    def forward(self, x: Tensor, keys_input: Tensor, offset: int, state: Optional[dict]) -> Tensor:
        # Queries are the last $n$ of the $m + n$ keys ($m$ cached or memory keys before them).
        n = x.shape[1]
        j = offset + n
        # $i - j$ for queries at the last $n$ of $j$ positions
        distance = torch.arange(j - n, j, device=x.device)[:, None] - torch.arange(j, device=x.device)[None, :]
        valid = (distance >= 0) & (distance < self.max_dist)
        # $w_{hi}$, then each query's curve $\sum_r w_{hir} C_r$ over all distances
        w = rearrange(self.to_weights(x), "b n (h r) -> b h n r", h=self.heads)
        curve = w @ self.curves  # (b, h, n, D)
        index = distance.clamp(0, self.max_dist - 1).expand(*curve.shape[:2], n, j)
        return curve.gather(-1, index).masked_fill(~valid, 0.0)  # (b, h, n, j)


@rule("attn")
def _settings_need_the_bias(a, prefix: str, layers) -> None:
    for name, default in (("rel_proj_num_distance_basis", 16), ("rel_proj_max_dist", 1024)):
        if getattr(a, name) != default and not a.use_rel_proj_pos_bias:
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}use_rel_proj_pos_bias=True")


class SummedBias(nn.Module):
    """Several `score_bias` modules added together (the forget gates and the relative projection)."""

    def __init__(self, biases: list[nn.Module]):
        super().__init__()
        self.biases = nn.ModuleList(biases)

    def forward(self, x: Tensor, keys_input: Tensor, offset: int, state: Optional[dict]) -> Tensor:
        return sum(bias(x, keys_input, offset, state) for bias in self.biases)  # type: ignore[return-value]
