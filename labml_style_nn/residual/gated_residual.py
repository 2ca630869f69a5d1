r"""
# Gated residual connections (GTrXL)

*Paper:* [Stabilizing Transformers for Reinforcement Learning](https://arxiv.org/abs/1910.06764) (Parisotto et al., 2019)

Transformer-XL proved hard to train for reinforcement learning.  GTrXL replaces each residual sum with
a GRU-style gate that decides, per feature, how much of the branch output $y = F(x)$ enters the
stream:

$$\begin{aligned}
r &= \sigma(W_r y + U_r x), \qquad z = \sigma(W_z y + U_z x - b_g) \\
\hat h &= \tanh(W_h y + U_h (r \odot x)) \\
x' &= (1 - z) \odot x + z \odot \hat h
\end{aligned}$$

With the gate bias $b_g > 0$ the update gate $z$ starts small and each block starts close to the
identity, which the paper finds essential for stability.

We use PyTorch's `GRUCell` with the branch output as its input and the residual as its hidden state.

Tested by `test_gated_residual_matches_the_gru_equations_and_starts_near_identity` in `tests/residual/test_res_residual.py`; [residual blocks](residual.md) shows the block it replaces the sum of.

Shapes: `b` batch, `n` tokens, `D` model width.

`gate_residual=True` puts the gate on every block of the stack, attention and feed-forward.

## Differences from the paper

* `GRUCell`'s update gate $z'$ weights the *old* state ($x' = (1 - z') \odot \hat h + z' \odot x$),
  so the bias $b_g = 2$ is added to $z'$ rather than subtracted from $z$; it is the same gate.
* `GRUCell` applies the reset gate after the recurrent projection, $r \odot (U_h x + b)$, where the
  paper has $U_h (r \odot x)$, and every projection has a bias.
* GTrXL passes the branch output through a ReLU before the gate; here the branch output enters as it is.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("gate_residual", False, "a GRU gate instead of the residual sum"))


class GatedResidual(nn.Module):
    r"""A GRU gate in place of the residual sum; starts close to the identity.

    >>> GatedResidual(4)(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """

    def __init__(self, dim: int, gate_bias: float = 2.0):
        super().__init__()
        self.gru = nn.GRUCell(dim, dim)
        # PyTorch orders the gates as (reset, update, new); bias the update gate towards the state.
        with torch.no_grad():
            self.gru.bias_ih[dim:2 * dim].add_(gate_bias)

    def forward(self, branch: Tensor, residual: Tensor) -> Tensor:
        """Gate `branch` $y$ into `residual` $x$, both `(b, n, D)`; every token is gated on its own."""
        shape = residual.shape
        # $x' = (1 - z) \odot x + z \odot \hat h$ with input $y$ and state $x$
        out = self.gru(branch.reshape(-1, shape[-1]), residual.reshape(-1, shape[-1]))  # (b n, D)
        return out.reshape(shape)  # (b, n, D)
