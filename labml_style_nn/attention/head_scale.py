r"""
# Per-head scaling (NormFormer)

*Paper:* [NormFormer: Improved Transformer Pretraining with Extra Normalization](https://arxiv.org/abs/2110.09456) (Shleifer et al., 2021)

NormFormer observes that in pre-norm transformers the gradients of the early layers are much larger
than those of the later ones.  It proposes four small changes that even them out; one of them is a
learned scalar $\gamma_h$ per head that scales the head's output before the heads are concatenated
and projected:

$$o_{hi} = \gamma_h \sum_j A_{hij} v_{hj}, \qquad \operatorname{MHA}(x)_i = W_O [o_{1i}; \dots; o_{hi}]$$

A head can then be turned up or down as a whole, which the output projection $W_O$ could express
too, but only by learning the same factor across all of that head's $d \cdot D$ weights.  In
numbers, with $h = 8$ heads of $d = 64$ and $D = 512$: $\gamma$ is 8 parameters next to the layer's
$4 \times 512^2 \approx 1.05$ million, and halving head 3 is one step on $\gamma_3$ instead of a
coordinated move of the $64 \times 512 = 32{,}768$ weights of its slice of $W_O$.

$\gamma$ starts at one, so the layer starts as exactly plain attention (a test checks it).  The
scores are untouched and the fused kernel stays in use.

This file also holds `OutputGates`, which chains several output gates when more than one technique
plugs into that extension point, in x-transformers' order: head scale, the [head gate](head_gate.md),
then [gated attention](gate_values.md).

It plugs into the `output_gate` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_head_scale_at_init_is_plain_attention_and_scales_heads` in `tests/attention/test_attn_properties.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim, `D` model width.

## Differences from the paper

NormFormer's four changes are each a separate keyword in x-transformers, and only this one lives here:
`attn_head_scale` (this file); `ff_post_act_ln`, a norm after the feed-forward activation
(`feedforward/feedforward.py`); `scale_residual`, learned residual scales
(`residual/scale_residual.py`); the norm after the attention output is the sandwich norm
(`sandwich_norm`), which also adds one to the feed-forward branch.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("head_scale", False, "a learned scale per head (NormFormer)"))


class HeadScale(nn.Module):
    r"""A learned scale $\gamma_h$ per head on the aggregated values (an output gate)."""

    def __init__(self, heads: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, heads, 1, 1))  # $\gamma_h = 1$ at first, (1, h, 1, 1)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        """Scale the heads' outputs `out` `(b, h, n, d)`; `x` is unused (the gate interface)."""
        # $\gamma_h \sum_j A_{hij} v_{hj}$
        return out * self.scale.to(out.dtype)  # (b, h, n, d)


class OutputGates(nn.Module):
    """Applies several output gates in order (e.g. head scale, then gated attention)."""

    def __init__(self, gates: Sequence[nn.Module]):
        super().__init__()
        self.gates = nn.ModuleList(gates)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        """`out` `(b, h, n, d)` through each gate in turn; each gate may read `x` `(b, n, D)`."""
        for gate in self.gates:
            out = gate(out, x)
        return out
