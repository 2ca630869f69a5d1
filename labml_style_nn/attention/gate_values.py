r"""
# Gating the aggregated values

*Paper:* [Highly accurate protein structure prediction with AlphaFold](https://doi.org/10.1038/s41586-021-03819-2) (Jumper et al., 2021)

AlphaFold2's attention (in its supplementary methods) multiplies the aggregated values of every
head by a sigmoid gate computed from the layer's input, before the output projection:

$$o_{hi} = \sigma\big(x_i W^g_h + b^g_h\big) \odot \sum_j A_{hij} v_{hj}$$

The gate is per token, per head and per feature.  It lets a token switch off heads (or single
features) whose answer it does not need, giving the block finer control over its update of the
residual stream than the output projection alone.

The gate acts after the weighted sum, so the scores are untouched and the fused attention kernel
stays in use (a test checks which path runs).  In cross-attention the gate is computed from the
queries' side $x$, never from the context.  x-transformers spells the keyword both `attn_gate_values=True`
and, in an older version, `gate_values=True`; both build this module.

It plugs into the `output_gate` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_value_gate_at_init_scales_by_sigmoid_of_its_bias` in `tests/attention/test_attn_properties.py`.

Shapes: `b` batch, `n` tokens, `h` heads, `d` head dim, `D` model width.

## Differences from the paper

AlphaFold initialises the gate's weights to $0$ and its bias to $1$, so every gate starts at
$\sigma(1) \approx 0.73$.  We keep the zero weights but set the bias to $10$, so that every gate
starts at $\sigma(10) > 0.99995$: at initialisation the layer is plain attention up to that
constant factor (a test checks $o = \sigma(10)\, o_{\text{plain}}$ exactly), and the gate only
closes where training asks it to.  In numbers: $\sigma(10) = 0.99995$, AlphaFold's $\sigma(1) = 0.73$,
and a logit of $-4$, which training can reach for a head a token does not need, passes
$\sigma(-4) = 0.018$ of that head's output.
"""

from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("gate_values", False, "gate each head's output with a sigmoid of the input"))


class ValueGate(nn.Module):
    r"""Per-head, per-feature sigmoid gate on the aggregated values, computed from the input.

    Args:
        dim: model width $D$ of the input $x$.
        heads: number of heads $h$.
        dim_head: width $d$ of each head's values.
        init_bias: $b^g$ at initialisation; the gates start at $\sigma(b^g)$.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, init_bias: float = 10.0):
        super().__init__()
        self.heads = heads
        # $W^g \in \mathbb{R}^{D \times h d}$, zero at first, so the gate depends on $x$ only once trained
        self.to_gate = nn.Linear(dim, heads * dim_head)
        nn.init.zeros_(self.to_gate.weight)
        nn.init.constant_(self.to_gate.bias, init_bias)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        """Gate the heads' outputs `out` `(b, h, n, d)` with gates computed from `x` `(b, n, D)`."""
        # $x_i W^g_h + b^g_h$, one logit per head and feature
        gate = rearrange(self.to_gate(x), "b n (h d) -> b h n d", h=self.heads)
        # $\sigma(\cdot) \odot \sum_j A_{hij} v_{hj}$
        return out * gate.sigmoid()  # (b, h, n, d)
