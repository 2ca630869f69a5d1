r"""
# Soft-capping the stack's output

*Paper:* [Gemma 2: Improving Open Language Models at a Practical Size](https://arxiv.org/abs/2408.00118) (Gemma Team, 2024)

Gemma 2 bounds its logits smoothly instead of letting them grow without limit.  A value $v$ sets
the bound, and each number passes through a scaled $\tanh$,

$$\operatorname{softcap}(x) = v \tanh(x / v),$$

which is close to the identity for $|x| \ll v$ and saturates at $\pm v$.  Gemma 2 caps the attention
scores ($v = 50$) and the final logits ($v = 30$).  x-transformers' `softclamp_output` caps the
residual stream where it leaves the last block, just before the final norm: every feature of the
output stream lies in $(-v, v)$, so no single feature can dominate the final norm's statistics.

`softclamp_output=True` switches it on; `softclamp_output_value` is $v$ (30 by default).

Tests: `tests/models/test_regularisation_and_output.py` (the closed form, bounded output, parity
with x-transformers).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from the paper

* Gemma 2 caps the logits after the output projection (and the attention scores); this caps the
  hidden states before the final norm, as x-transformers does.
"""

import torch
from torch import Tensor

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("softclamp_output", False, "soft-cap the output stream v * tanh(x / v) before the final norm"),
    Keyword("softclamp_output_value", 30.0, "the cap v of softclamp_output", example=10.0))


def softclamp(x: Tensor, value: float) -> Tensor:
    r"""$v \tanh(x / v)$.

    >>> [round(t, 4) for t in softclamp(torch.tensor([0.1, 100.0]), 2.0).tolist()]
    [0.0999, 2.0]
    """
    return torch.tanh(x / value) * value


@rule("stack")
def _softclamp_values(o) -> None:
    if not o.softclamp_output_value > 0:
        raise ValueError(f"softclamp_output_value: expected a positive number, got {o.softclamp_output_value!r}")
    if o.softclamp_output_value != 30.0 and not o.softclamp_output:
        raise ValueError("softclamp_output_value: only meaningful with softclamp_output=True")
