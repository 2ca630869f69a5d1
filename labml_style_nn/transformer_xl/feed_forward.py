r"""
# Position-wise feed-forward network

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017),
[Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context](https://arxiv.org/abs/1901.02860) (Dai et al., 2019)

After attention has mixed information *across* positions, every position is transformed on its
own by the same two-layer network. The hidden layer is wider than the model ($d_{ff}$ is
usually $4\, d_{model}$), which is where most of a transformer's parameters live:

$$\mathrm{FFN}(x) = W_2\, \mathrm{dropout}\big(\max(0,\ W_1 x + b_1)\big) + b_2$$

Transformer-XL uses this block unchanged. It works on any leading shape, so the
sequence-first `[i, b, d_model]` tensors of this subpackage pass straight through.  In numbers,
with the paper's base sizes $d_{model} = 512$, $d_{ff} = 2048$: $W_1$ and $W_2$ hold
$2 \times 512 \times 2048 = 2.1$ million weights, twice the $4 \times 512^2 = 1.05$ million of the
attention's $W_Q, W_K, W_V, W_O$ in the same layer (relative attention adds $W_R$, a fifth).

This is the small positional-argument block of the Transformer-XL API. The keyword-driven
library has its own richer feed-forward (GELU, GLU, ReLU$^2$ variants) in
`labml_style_nn/feedforward/`.

## Differences from the paper

* Dropout sits on the hidden activations, as in the Transformer-XL code, in addition to the
  dropout the layer applies to the block's output. The original transformer drops out only the
  block's output.
* The activation can be swapped (`activation=nn.GELU()`); ReLU is the default, as in both papers.
"""

from typing import Optional

import torch
import torch.nn as nn

from ..checks import check_tensor


class FeedForward(nn.Module):
    r"""Two linear maps with a non-linearity between them, applied at every position."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1, activation: Optional[nn.Module] = None):
        """
        * `d_model` the width of the input and output
        * `d_ff` the width of the hidden layer
        * `dropout` dropout on the hidden activations
        * `activation` the non-linearity, `nn.ReLU()` when `None`
        """
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        if not isinstance(d_ff, int) or d_ff < 1:
            raise ValueError(f"d_ff must be a positive int, got {d_ff!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.d_model = d_model
        # $W_1, b_1$: `d_model -> d_ff`
        self.layer1 = nn.Linear(d_model, d_ff)
        # $W_2, b_2$: `d_ff -> d_model`
        self.layer2 = nn.Linear(d_ff, d_model)
        self.activation = nn.ReLU() if activation is None else activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` is `[..., d_model]`; the result has the same shape."""
        check_tensor("x", x, f"[..., d_model={self.d_model}]", kind="float", sizes={-1: self.d_model})
        # $h = \mathrm{dropout}(\max(0,\ W_1 x + b_1))$
        h = self.dropout(self.activation(self.layer1(x)))  # (..., d_ff)
        # $W_2 h + b_2$
        return self.layer2(h)  # (..., d_model)
