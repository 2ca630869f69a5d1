r"""
# Input injection: every block sees the stack's input again

*Paper:* [Deep Equilibrium Models](https://arxiv.org/abs/1909.01377) (Bai et al., 2019)

A deep equilibrium model applies one layer $f$ again and again until its output stops changing,
$z^\star = f(z^\star; x)$.  For the fixed point to depend on the input at all, the input has to
enter *every* application, not just the first: $z_{l+1} = f(z_l + U x)$.  Later work on looped
transformers uses the same injection to generalise to more iterations than were trained, since no
block ever has to remember the input through the stream alone.

`reinject_input=True` projects the stack's input once, $u = x_0 U$, and adds it to the input of
every branch:

$$x_{l+1} = x_l + F_l\big(\operatorname{Norm}(x_l + u)\big), \qquad u = x_0 U,$$

while the residual stream itself carries $x_l$ without it.  `learned_reinject_input_gate=True`
lets each token decide how much of it to take, $u = \sigma(x_0 w)\, x_0 U$.

The injection of token $i$ depends on token $i$'s input only, so a cached step computes it for its
new tokens, and a Transformer-XL memory, which holds each layer's normalised branch inputs, already
contains it.

Tests: `tests/residual/test_res_stream.py` (the formula at the first block, the invariant
sweeps, cached decoding, XL memory, parity with x-transformers).

Shapes: `b` batch, `n` tokens, `D` model width; $U \in \mathbb R^{D \times D}$, $w \in \mathbb R^D$.

## Differences from the papers

* A DEQ solves for the fixed point of one layer; here the layers are distinct and run once each
  (with `weight_tie_layers=True` they are one layer applied `depth` times, a looped transformer).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("reinject_input", False, "add a projection of the stack's input to the input of every branch "
            "(deep equilibrium models)"),
    Keyword("learned_reinject_input_gate", False, "gate the reinjected input per token with a learned sigmoid"))


class InputInjection(nn.Module):
    r"""$u = \sigma(x_0 w)\, x_0 U$ (without the gate: $u = x_0 U$), computed once per forward.

    >>> inject = InputInjection(2, gated=False)
    >>> _ = inject.proj.weight.data.copy_(torch.eye(2))
    >>> inject(torch.tensor([[[1.0, 2.0]]])).tolist()
    [[[1.0, 2.0]]]
    """

    def __init__(self, dim: int, gated: bool):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.gate: Optional[nn.Linear] = nn.Linear(dim, 1, bias=False) if gated else None

    def forward(self, x: Tensor) -> Tensor:
        # $u = x_0 U$
        u = self.proj(x)  # (b, n, D)
        if self.gate is not None:
            # $\sigma(x_0 w)\, u$, one gate per token
            u = u * torch.sigmoid(self.gate(x))  # (b, n, 1)
        return u


@rule("stack")
def _input_injection_keywords(o) -> None:
    if o.learned_reinject_input_gate and not o.reinject_input:
        raise ValueError("learned_reinject_input_gate: only meaningful with reinject_input=True")
    if o.reinject_input and o.reversible:
        raise ValueError("reversible and reinject_input cannot be combined: a reversible coupling's branch sees "
                         "only the other half of the stream")
