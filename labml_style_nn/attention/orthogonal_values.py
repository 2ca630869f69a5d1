r"""
# Orthogonal projected values ("belief attention")

*Paper:* [openreview Ard2QzPAUK](https://openreview.net/forum?id=Ard2QzPAUK) (ICLR 2026 submission,
cited by x-transformers as "belief attention")

Attention's output $o_i = \sum_j A_{ij} v_j$ usually contains a good deal of the token's *own* value
$v_i$ (a token attends to itself), which the residual stream already carries.  Projecting the
output onto the orthogonal complement of the token's own value keeps only what the other tokens
add:

$$o_i \leftarrow o_i - \frac{o_i^\top v_i}{\lVert v_i \rVert^2}\, v_i .$$

`orthog_projected_values=True` projects the whole output of a token (all heads' features at once,
$h d$ of them) against its values; `orthog_projected_values_per_head=True` projects each head's
output against that head's value ($d$ features each).  With both, the two projections are
concatenated, and the output projection is twice as wide.

The projection needs the tokens' own values, so this replaces the output projection `to_out` of
[attention](attention.md) with one that also receives them (`takes_values`); self-attention only.
Each token's projection uses only its own output and value, so the layer stays causal and a cached
step equals the full pass.

A worked example: $o = (1, 1)$ and $v = (1, 0)$: the component along $v$ is $(1, 0)$ and the
projected output is $(0, 1)$.

`attn_orthog_projected_values`, `attn_orthog_projected_values_per_head`.  Tests:
`tests/attention/test_attn_hybrid_values.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim, `D` model width.

## Differences from x-transformers

* x-transformers flattens each *sequence*, every token and feature together, into one vector before
  the projection: each token's output then depends on every other token's, future ones included,
  and the two options compute the same projection.  Here each token is projected on its own (a
  test shows x-transformers' outputs at the first position changing with the last token in a
  decoder), so weight-copied parity does not hold by design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("orthog_projected_values", False, "remove from each token's output its component along its value"),
    Keyword("orthog_projected_values_per_head", False, "the same, per head; with both the two are concatenated"))


def orthogonal_part(x: Tensor, y: Tensor) -> Tensor:
    r"""$x - \frac{x^\top y}{\lVert y\rVert^2} y$ over the last axis.

    >>> orthogonal_part(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])).tolist()
    [0.0, 1.0]
    """
    unit = F.normalize(y, dim=-1)
    return x - (x * unit).sum(dim=-1, keepdim=True) * unit


class OrthogonalValuesOut(nn.Module):
    """`to_out` that projects the output orthogonally to the tokens' values, then to the model width."""

    takes_values = True

    def __init__(self, heads: int, dim_head: int, dim: int, whole: bool, per_head: bool, bias: bool = False):
        super().__init__()
        self.heads, self.whole, self.per_head = heads, whole, per_head
        self.proj = nn.Linear(heads * dim_head * (int(whole) + int(per_head)), dim, bias=bias)

    def forward(self, out: Tensor, values: Tensor) -> Tensor:
        """`out` `(b, n, h d)` and the tokens' own values `(b, h, n, d)` to `(b, n, D)`."""
        parts = []
        if self.whole:
            parts.append(orthogonal_part(out, rearrange(values, "b h n d -> b n (h d)")))
        if self.per_head:
            per_head = orthogonal_part(rearrange(out, "b n (h d) -> b n h d", h=self.heads),
                                       rearrange(values, "b h n d -> b n h d"))
            parts.append(rearrange(per_head, "b n h d -> b n (h d)"))
        return self.proj(torch.cat(parts, dim=-1))


@rule("attn")
def _not_with_on_attn(a, prefix: str, layers) -> None:
    if (a.orthog_projected_values or a.orthog_projected_values_per_head) and a.on_attn:
        raise ValueError(f"{prefix}orthog_projected_values and {prefix}on_attn both replace the output "
                         "projection; choose one")
