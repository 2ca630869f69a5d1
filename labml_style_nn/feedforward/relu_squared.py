r"""
# Squared ReLU

*Paper:* [Primer: Searching for Efficient Transformers for Language Modeling](https://arxiv.org/abs/2109.08668) (So et al., 2021)

Primer ran an architecture search over transformer language models; one of its two most robust
findings is to square the ReLU of the feed-forward layer:

$$\phi(x) = \max(0, x)^2$$

It is as cheap as ReLU, and in the paper's autoregressive experiments it beats GELU.

Shapes: any; applied element-wise to the hidden layer `(b, n, H)`.

## Differences from the paper

Primer's other robust finding, a depth-wise convolution after the query, key and value projections,
is not part of this option.

## Evidence

* Measured: `rotary+relu2` reaches 2.227 ± 0.024 bpc against 2.387 ± 0.025 for the GELU baseline at
  equal parameters, over three seeds, in [`compare_variants.py`](../../experiments/compare_variants.py)
  (250 steps; [results](../../docs/results.md#comparing-techniques)).
* Invariant: the activation named `relu_squared` is $\operatorname{ReLU}(x)^2$,
  `test_ff_activation_is_the_named_function` in `tests/feedforward/test_ff_glu_family.py`.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "ff",
    Keyword("relu_squared", False, "ReLU squared as the activation (Primer)"))


class ReLUSquared(nn.Module):
    r"""$\max(0, x)^2$

    >>> import torch
    >>> ReLUSquared()(torch.tensor([-2.0, 0.5, 3.0])).tolist()
    [0.0, 0.25, 9.0]
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()
