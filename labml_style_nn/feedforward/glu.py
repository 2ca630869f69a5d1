r"""
# GLU variants: a gated feed-forward layer

*Paper:* [GLU Variants Improve Transformer](https://arxiv.org/abs/2002.05202) (Shazeer, 2020)

A gated linear unit computes two projections of the input and lets one gate the other,
element-wise.  With a GELU gate (GEGLU):

$$\operatorname{GEGLU}(x) = \operatorname{GELU}(x W) \odot (x V)$$

and the feed-forward network becomes $\operatorname{FFN}_{\text{GEGLU}}(x) = \operatorname{GEGLU}(x) W_2$.
Shazeer finds the gated variants clearly better than ReLU or GELU at the same compute; GEGLU was
later adopted by T5.1.1 and mT5.

Both projections are one matrix multiply of width $2H$, split in two.

Shapes: `b` batch, `n` tokens, `D` model width, `H` hidden width.

## Differences from the paper

To keep the parameter count equal to the ungated layer the paper shrinks $H$ to $\tfrac{2}{3}$ of it;
here `ff_mult` sets $H$ as given, so a GLU layer has 1.5 times the parameters of a plain one.
The projections have biases, which the paper omits.
"""

import torch.nn.functional as F
from torch import Tensor, nn


class GLU(nn.Module):
    r"""$\operatorname{GELU}(x W) \odot (x V)$, with $W$ and $V$ fused into one projection.

    >>> GLU(4, 6)(torch.zeros(2, 4)).shape   # hidden width 6, from one projection of width 12
    torch.Size([2, 6])
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        # $x V$ and $x W$ from one matrix multiply
        value, gate = self.proj(x).chunk(2, dim=-1)  # (b, n, H) each
        # $\operatorname{GELU}(x W) \odot (x V)$
        return value * F.gelu(gate)
