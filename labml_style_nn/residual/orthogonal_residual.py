r"""
# Orthogonal residual updates

*Paper:* [Revisiting Residual Connections: Orthogonal Updates for Stable and Efficient Deep Networks](https://arxiv.org/abs/2505.11881) (Oh et al., 2025)

A residual block adds its branch output $f = F(x)$ to the stream $x$.  Part of $f$ points along
$x$: it only makes the stream longer or shorter, without writing anything new into it.  The paper
finds that this parallel part dominates in deep networks and keeps the stream growing, and that
adding only the part of $f$ **orthogonal** to the stream trains more stably and generalises better:

$$x \leftarrow x + f_\perp, \qquad f_\perp = f - \frac{\langle f, x\rangle}{\langle x, x\rangle}\, x,$$

computed for each token's vector on its own.  A worked example: $x = (1, 0)$, $f = (3, 2)$ gives
$f_\perp = (0, 2)$ and $x \leftarrow (1, 2)$; the plain residual would give $(4, 2)$.

With `scale_residual=True` (NormFormer's per-feature $\lambda$) the stream is scaled first and
$f$ is made orthogonal to $\lambda \odot x$.  Each token's update depends on that token alone, so
causality, padding, cached decoding and Transformer-XL memories are unaffected.

Tests: `tests/residual/test_res_stream.py` (the formula, the invariant sweeps, parity with
x-transformers on single tokens, and the reason it cannot hold on sequences).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from x-transformers

* x-transformers projects the whole sequence of one example as a single vector (it flattens the
  tokens and features together), so one token's update depends on every other token: in a
  `Decoder` a token then sees the future, and padding changes the result.  Here the projection is
  per token, as the paper defines it; the two agree on a single token, and a test shows
  x-transformers' decoder looking ahead.
* x-transformers computes the projection in float64; here it is float32 (or the input's dtype if wider).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("orthog_residual", False, "add only the part of each branch output orthogonal to the stream"))


def orthogonal_part(f: Tensor, x: Tensor, eps: float = 1e-12) -> Tensor:
    r"""$f - \frac{\langle f, x\rangle}{\langle x, x\rangle} x$ over the last axis.

    >>> orthogonal_part(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])).tolist()
    [0.0, 2.0]
    """
    dtype = f.dtype
    f, x = f.to(torch.promote_types(dtype, torch.float32)), x.to(torch.promote_types(x.dtype, torch.float32))
    # $\hat x = x / \lVert x \rVert$, then $f - \langle f, \hat x\rangle \hat x$
    unit = x / x.norm(dim=-1, keepdim=True).clamp(min=eps)
    return (f - (f * unit).sum(dim=-1, keepdim=True) * unit).to(dtype)


class OrthogonalResidual(nn.Module):
    r"""$x + f_\perp$, with $x$ first scaled by a learned $\lambda$ when `scale_residual`."""

    def __init__(self, dim: int, scale_residual: bool = False):
        super().__init__()
        self.scale: Optional[nn.Parameter] = nn.Parameter(torch.ones(dim)) if scale_residual else None

    def forward(self, branch: Tensor, residual: Tensor) -> Tensor:
        if self.scale is not None:
            residual = residual * self.scale.to(residual.dtype)  # $\lambda \odot x$
        # $x + f_\perp$
        return residual + orthogonal_part(branch, residual)


@rule("stack")
def _orthogonal_keywords(o) -> None:
    if not o.orthog_residual:
        return
    for name in ("gate_residual", "reversible"):
        if getattr(o, name):
            raise ValueError(f"orthog_residual and {name} cannot be combined: " + (
                "each replaces the residual sum" if name == "gate_residual"
                else "a reversible coupling adds each branch output whole"))
    if o.num_residual_streams > 1:
        raise ValueError("orthog_residual and num_residual_streams cannot be combined: hyper-connections replace the "
                         "residual sum")
    if o.scale_residual_constant != 1:
        raise ValueError("orthog_residual and scale_residual_constant cannot be combined (as in x-transformers, the "
                         "orthogonal update takes no constant)")
