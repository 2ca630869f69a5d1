r"""
# Soft-clamping the feed-forward layer

*Paper:* the soft-clamped GLU of Kimi K3 that x-transformers 2.31 cites ("situ-glu"),
[arXiv:2607.24653](https://arxiv.org/abs/2607.24653); the soft clamp itself is Gemma 2's logit
soft-capping ([Gemma 2](https://arxiv.org/abs/2408.00118), Gemma Team, 2024)

A few hidden features of a feed-forward layer can grow very large during training, and a
product of two of them (the value and the gate of a GLU) larger still: such outliers hurt stability
and low-precision arithmetic.  A soft clamp bounds a value smoothly,

$$\operatorname{clamp}_c(t) = c \tanh(t / c) \in (-c, c),$$

nearly the identity for $|t| \ll c$ (at $t = c/2$ it gives $0.46\,c$; at $t = 3c$, $0.995\,c$) and with a
gradient everywhere, unlike a hard clip.

* `ff_softclamp_value=c` clamps the pre-activation of a plain feed-forward layer,
  $\phi(\operatorname{clamp}_c(x W_1 + b_1))$.
* `ff_glu_softclamp=True` clamps both linear factors of a [GLU](glu.md) with GELU or SiLU gate:
  the value, $\operatorname{clamp}_{c_u}(x V)$ with $c_u$ = `ff_glu_up_softclamp_value` (25), and the
  linear factor inside the gate's activation, $\operatorname{clamp}_{c_g}(t)\, \Phi(t)$ for GELU
  $= t\,\Phi(t)$ and $\operatorname{clamp}_{c_g}(t)\, \sigma(t)$ for SiLU $= t\,\sigma(t)$, with $c_g$ =
  `ff_glu_gate_softclamp_value` (4).  The gate then lies in $(-c_g, c_g)$ and the product in
  $(-c_g c_u, c_g c_u) = (-100, 100)$ whatever the input (a test checks the bound).

Tests: `tests/feedforward/test_ff_xt_options.py` (the bounds, parity with x-transformers' weights).

Shapes: any; applied element-wise.

## Differences from x-transformers

x-transformers accepts `ff_softclamp_value` with `ff_glu=True` and ignores it, and the two GLU
values without `ff_glu_softclamp=True`; here each of those is a `ValueError` naming both keywords.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "ff",
    Keyword("softclamp_value", None, "soft-clamp the pre-activation to (-c, c) with c tanh(t / c)", type=float,
            minimum=0.0, example=15.0),
    Keyword("glu_softclamp", False, "soft-clamp a GELU or SiLU GLU's value and the linear factor of its gate"),
    Keyword("glu_gate_softclamp_value", 4.0, "the gate's bound with ff_glu_softclamp", minimum=0.0, example=3.0),
    Keyword("glu_up_softclamp_value", 25.0, "the value's bound with ff_glu_softclamp", minimum=0.0, example=20.0))


@rule("ff")
def _softclamp_options(f, o) -> None:
    if f.softclamp_value is not None and f.glu:
        raise ValueError("ff_softclamp_value and ff_glu: the clamp acts on a plain layer's pre-activation; for a GLU "
                         "use ff_glu_softclamp")
    if f.softclamp_value is not None and f.softclamp_value <= 0:
        raise ValueError(f"ff_softclamp_value: expected a positive number, got {f.softclamp_value!r}")
    for name in ("glu_gate_softclamp_value", "glu_up_softclamp_value"):
        value, default = getattr(f, name), KEYWORDS[2 if name.startswith("glu_gate") else 3].default
        if value != default and not f.glu_softclamp:
            raise ValueError(f"ff_{name}: only meaningful with ff_glu_softclamp=True")
        if not value > 0:
            raise ValueError(f"ff_{name}: expected a positive number, got {value!r}")
    if f.glu_softclamp:
        if not f.glu:
            raise ValueError("ff_glu_softclamp: only meaningful with ff_glu=True")
        if f.activation_name() not in ("gelu", "silu") or f.solu or f.custom_activation is not None:
            raise ValueError("ff_glu_softclamp: the clamped gate is a GELU or SiLU one; expected ff_activation "
                             "'gelu' or 'silu' (or ff_swish), not another activation")


def softclamp(t: Tensor, value: float) -> Tensor:
    r"""$c \tanh(t / c)$ for $c$ = `value`.

    >>> [round(v, 3) for v in softclamp(torch.tensor([0.1, 2.0, 30.0]), 4.0).tolist()]
    [0.1, 1.848, 4.0]
    """
    return (t / value).tanh() * value


class SoftClamp(nn.Module):
    """`softclamp` as a module, for a plain layer's pre-activation."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, t: Tensor) -> Tensor:
        return softclamp(t, self.value)


class SoftClampedGate(nn.Module):
    r"""A GELU or SiLU gate with its linear factor clamped: $\operatorname{clamp}_c(t)\, \Phi(t)$ or $\operatorname{clamp}_c(t)\, \sigma(t)$.

    >>> gate = SoftClampedGate("silu", 4.0)
    >>> round(gate(torch.tensor(100.0)).item(), 3)   # SiLU(100) = 100; clamped, 4
    4.0
    """

    def __init__(self, activation: str, value: float):
        super().__init__()
        if activation not in ("gelu", "silu"):
            raise ValueError(f"ff_glu_softclamp: expected a gelu or silu gate, got {activation!r}")
        self.activation, self.value = activation, value

    def forward(self, t: Tensor) -> Tensor:
        # $\Phi(t)$ (GELU's weight) or $\sigma(t)$ (SiLU's), times the clamped $t$
        weight = torch.special.ndtr(t) if self.activation == "gelu" else t.sigmoid()
        return softclamp(t, self.value) * weight
