r"""
# ScaleNorm

*Paper:* [Transformers without Tears: Improving the Normalization of Self-Attention](https://arxiv.org/abs/1910.05895) (Nguyen & Salazar, 2019)

ScaleNorm puts each vector on a sphere and gives it one learned length $g$, where LayerNorm
centres and rescales every feature with $2D$ learned parameters.  It keeps only what seems to matter
of LayerNorm, the scale of the whole vector:

$$\operatorname{ScaleNorm}(x) = g \frac{x}{\max(\lVert x \rVert, \epsilon)}.$$

The paper reports faster convergence, in particular for low-resource translation.  $g$ starts at
$\sqrt D$, the typical length of a vector whose features have unit scale.

`use_scalenorm=True` puts it everywhere a stack has a norm: before each branch (pre-norm), after
each residual sum (post-norm), on branch outputs (sandwich norm) and at the end of the stack.

Tests: `test_scale_norm_closed_form` and `test_zero_and_half_precision_inputs_stay_finite` in `tests/norms/test_norms.py`; [residual blocks](../residual/residual.md) shows where a stack puts its norms.

Shapes: `D` model width; any leading axes.

## Differences from the paper

* The paper pairs ScaleNorm with FixNorm (unit-length word embeddings); only ScaleNorm is
  implemented here.
* With `norm_add_unit_offset` (the default) the stored scalar is $g - \sqrt D$, the offset from
  its initial value ([LayerNorm](layer_norm.md) explains why); x-transformers stores $g / \sqrt D - 1$.
* The norm is computed in float32 whatever the input dtype, so half precision cannot overflow.
"""

import torch
from torch import Tensor, nn

from ..checks import check_tensor
from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("use_scalenorm", False, "ScaleNorm instead of LayerNorm everywhere"))


class ScaleNorm(nn.Module):
    r"""One learned scale $g$ for the whole vector, applied after projecting to the unit sphere.

    >>> y = ScaleNorm(4)(torch.tensor([3.0, 0.0, 4.0, 0.0]))   # g = sqrt(4) = 2, |x| = 5
    >>> [round(v, 4) for v in y.tolist()]
    [1.2, 0.0, 1.6, 0.0]
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, unit_offset: bool = False):
        super().__init__()
        self.eps = eps
        # `unit_offset`: $g = \sqrt D + g'$ with $g'$ stored, so weight decay pulls $g$ to its initial value
        self.unit_offset = dim ** 0.5 if unit_offset else 0.0
        self.g = nn.Parameter(torch.tensor(dim ** 0.5 - self.unit_offset))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, "(..., dim)", kind="float")
        # Norms are computed in float32 so that half precision inputs cannot overflow.
        xf = x.float()
        # $\max(\lVert x \rVert, \epsilon)$
        norm = xf.norm(dim=-1, keepdim=True).clamp(min=self.eps)  # (..., 1)
        # $g\, x / \lVert x \rVert$
        g = self.g + self.unit_offset if self.unit_offset else self.g
        return (xf / norm * g).to(x.dtype)
