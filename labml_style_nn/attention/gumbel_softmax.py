r"""
# Gumbel-softmax attention

*Paper:* [Categorical Reparameterization with Gumbel-Softmax](https://arxiv.org/abs/1611.01144)
(Jang, Gu and Poole, 2016)

Attention weights are a soft choice among the keys.  The Gumbel-softmax turns them into a *sampled*
choice that gradients still flow through: add independent Gumbel noise $g_{ij} = -\log(-\log u_{ij})$,
$u_{ij} \sim \mathcal U(0, 1)$, to the scores, and take a softmax at temperature $\tau$,

$$A_{ij} = \operatorname{softmax}_j\left(\frac{S_{ij} + g_{ij}}{\tau}\right).$$

The argmax of $S_{ij} + g_{ij}$ is a sample from $\operatorname{softmax}_j(S_{ij})$ (the Gumbel-max
trick), so as $\tau \to 0$ each query attends to one key drawn with the softmax's probabilities.
With `hard=True` the forward pass uses that one-hot sample and the backward pass the gradient of
the soft weights (the straight-through estimator): a query reads exactly one value, and training
still sees how the scores would move the choice.

The noise is drawn at every forward pass, in training *and* in evaluation, as in x-transformers:
the layer is random, so two passes (and a cached decode against a full pass) differ unless the
random generator is reseeded.  A hidden key's score is the most negative finite number; noise
cannot lift it, so it is never drawn.

`attn_gumbel_softmax=True`, `attn_gumbel_softmax_temp=1.0`, `attn_gumbel_softmax_hard=True` (the
defaults of x-transformers).  It is a `normaliser`: layers with it take the explicit path of
[attention](attention.md).  Tests: `tests/attention/test_attn_scoring.py` (one key per row when
hard, the straight-through gradient, parity with x-transformers under the same random draws).

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("gumbel_softmax", False, "weights sampled with the Gumbel-softmax (random in evaluation too)"),
    Keyword("gumbel_softmax_temp", 1.0, "the temperature tau of gumbel_softmax", minimum=1e-6, example=0.5),
    Keyword("gumbel_softmax_hard", True, "gumbel_softmax: one-hot samples forward, soft gradients backward"))


class GumbelSoftmax(nn.Module):
    r"""$A_{ij} = \operatorname{softmax}_j((S_{ij} + g_{ij}) / \tau)$, one-hot forward when `hard`.

    >>> _ = torch.manual_seed(0)
    >>> GumbelSoftmax(hard=True)(torch.tensor([[0.0, 5.0, 0.0]])).tolist()
    [[0.0, 1.0, 0.0]]
    """

    def __init__(self, temperature: float = 1.0, hard: bool = True):
        super().__init__()
        self.temperature, self.hard = temperature, hard

    def forward(self, scores: Tensor) -> Tensor:
        weights = F.gumbel_softmax(scores, tau=self.temperature, hard=self.hard, dim=-1)
        # A row with no visible key divides $-\infty$ by $-\infty$ (its weights are zeroed afterwards).
        return weights.nan_to_num(0.0)


@rule("attn")
def _settings_need_gumbel(a, prefix: str, layers) -> None:
    for name, default in (("gumbel_softmax_temp", 1.0), ("gumbel_softmax_hard", True)):
        if getattr(a, name) != default and not a.gumbel_softmax:
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}gumbel_softmax=True")
