r"""
# ReZero

*Paper:* [ReZero is All You Need: Fast Convergence at Large Depth](https://arxiv.org/abs/2003.04887) (Bachlechner et al., 2020)

ReZero removes normalisation altogether.  Each branch is multiplied by a single learned scalar
$\alpha$, initialised at **zero**:

$$x \leftarrow x + \alpha\, F(x), \qquad \alpha_0 = 0.$$

At initialisation every block is the identity, so the whole stack is the identity and signals (and
gradients) pass through any depth unchanged; each layer then learns how much to contribute.  The
paper trains 100+ layer transformers this way without warmup.  A test checks that a ReZero stack
returns its input at initialisation.

Tested by `test_rezero_stack_is_the_identity_at_initialisation` and `test_rezero_alpha_learns_from_zero` in `tests/residual/test_res_residual.py`; the [residual blocks](residual.md) page shows where the scale sits.

Shapes: any; $\alpha$ is a scalar.

`use_rezero=True` removes every norm of the stack (pre-, post-, sandwich and final) and scales every
branch; it refuses to be combined with a norm option.

## Differences from the paper

None.  The x-transformers README notes that ReZero can struggle on very large data sets; ScaleNorm is the suggested
fallback.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("use_rezero", False, "no norms; each branch is scaled by a learned scalar that starts at 0",
            xtransformers=False))


class ReZero(nn.Module):
    r"""Scales a branch output by a learned scalar that starts at zero.

    >>> ReZero()(torch.ones(2, 3)).abs().sum().item()
    0.0
    """

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, branch: Tensor) -> Tensor:
        # $\alpha\, F(x)$
        return branch * self.alpha.to(branch.dtype)
