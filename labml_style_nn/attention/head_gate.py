r"""
# A gate per head: letting a head do nothing

*Paper:* [Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing](https://arxiv.org/abs/2306.12929) (Bondarenko et al., 2023)

Bondarenko et al. trace the huge activations that make transformers hard to quantise to heads that
have learned to do nothing.  A softmax row must sum to one, so such a head puts its weight on a
token with a tiny value (a delimiter, the first token) and pushes that token's score far above the
others, which takes outliers in the residual stream.  They give each head a way to switch itself
off instead: a sigmoid gate per head and token, computed from the token,

$$o_{hi} = \sigma\big(x_i^\top w_h + b_h\big) \sum_j A_{hij} v_{hj}.$$

One scalar per head and token: $D + 1$ parameters per head ($h (D + 1) = 4{,}104$ for $D = 512$,
$h = 8$), against the $h d$ logits per token of the per-feature [gated attention](gate_values.md).
The weights start at zero and the biases at 10, so every head starts open, $\sigma(10) = 0.99995$:
the layer begins as plain attention up to that factor (a test checks $o = \sigma(10)\, o_{\text{plain}}$),
and a head closes only where training asks it to.

It plugs into the `output_gate` point of [attention](attention.md), after [head scale](head_scale.md)
and before [gated attention](gate_values.md), the order of x-transformers; the scores are untouched
and the fused kernel stays in use.  Keyword: `attn_gate_value_heads=True`.  Tests:
`tests/attention/test_attn_gating.py`.

Shapes: `b` batch, `n` tokens, `h` heads, `d` value dim per head, `D` model width.

## Differences from the paper

The paper initialises the gate as a plain linear layer (and also tries a small MLP per head); the
bias of 10 is x-transformers' choice, kept here so that the keyword means what it means there.
"""

from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("gate_value_heads", False, "a sigmoid gate per head and token, computed from the token"))


class HeadGate(nn.Module):
    r"""$o_{hi} \leftarrow \sigma(x_i^\top w_h + b_h)\, o_{hi}$, one gate per head (an output gate).

    >>> import torch
    >>> gate = HeadGate(4, heads=2)
    >>> round(gate(torch.ones(1, 2, 3, 5), torch.randn(1, 3, 4)).min().item(), 5)   # sigma(10)
    0.99995

    Args:
        dim: model width $D$ of the input $x$.
        heads: number of heads $h$.
        init_bias: $b_h$ at initialisation.
    """

    def __init__(self, dim: int, heads: int, init_bias: float = 10.0):
        super().__init__()
        self.to_gate = nn.Linear(dim, heads)  # $w_h$ and $b_h$, (h, D) and (h,)
        nn.init.zeros_(self.to_gate.weight)
        nn.init.constant_(self.to_gate.bias, init_bias)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        """Gate the heads' outputs `out` `(b, h, n, d)` with one gate per head from `x` `(b, n, D)`."""
        # $\sigma(x_i^\top w_h + b_h)$, broadcast over the head's $d$ features
        gate = self.to_gate(x).sigmoid().transpose(1, 2)[..., None]  # (b, h, n, 1)
        return out * gate
