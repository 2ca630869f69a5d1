r"""
# Layer dropout (stochastic depth)

*Paper:* [Deep Networks with Stochastic Depth](https://arxiv.org/abs/1603.09382) (Huang et al., 2016); [Reducing Transformer Depth on Demand with Structured Dropout](https://arxiv.org/abs/1909.11556) (Fan et al., 2019; LayerDrop)

A residual block can be skipped without breaking the network: the stream just passes on.  During
training, stochastic depth skips each block with probability $p$,

$$x \leftarrow \begin{cases} x & \text{with probability } p, \\ \operatorname{Block}(x) & \text{otherwise,}\end{cases}$$

a new draw per block and per step.  The network trains as an ensemble of shallower networks,
regularises the deep ones, and learns to tolerate missing layers; Fan et al. (LayerDrop) use this
to prune whole layers at inference time with little loss.  At evaluation every block runs.

`layer_dropout=0.1` skips every block (attention, cross-attention, feed-forward) with probability
0.1; a tuple gives one probability per built block, in the order of the [layout](layout.md).  The
draw is one for the whole batch (a skipped block is skipped for every sequence), from PyTorch's
random generator, so `torch.manual_seed` makes it reproducible.

Tests: `tests/models/test_regularisation_and_output.py` (at evaluation nothing changes; in
training the output changes and a skipped block leaves its input unchanged).

Shapes: `N` blocks.

## Differences from the papers

* Huang et al. let $p$ grow linearly with depth and rescale the surviving branches at evaluation
  (multiply by $1 - p$); here, as in x-transformers and LayerDrop, $p$ is what you give (a tuple for
  a schedule) and nothing is rescaled.
* A skipped self-attention block still hands its (normalised) input to a Transformer-XL memory,
  so memories keep one entry per self-attention layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..keywords import Keyword, declare, rule

if TYPE_CHECKING:
    from ..options import LayerOptions

KEYWORDS = declare(__name__, "stack",
    Keyword("layer_dropout", 0.0, "stochastic depth: skip each block in training with this probability "
            "(or a tuple, one per block)", type=(float, tuple, list), example=0.1))


def drop_probabilities(o: LayerOptions, num_built: int) -> list[float]:
    """One skip probability per built block, from a number or a tuple of `layer_dropout`."""
    p = o.layer_dropout
    probs = list(p) if isinstance(p, (tuple, list)) else [p] * num_built
    if len(probs) != num_built:
        raise ValueError(f"layer_dropout: expected one probability per block, a tuple of length {num_built}, "
                         f"got length {len(probs)}")
    for q in probs:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q < 1:
            raise ValueError(f"layer_dropout: expected probabilities in [0, 1), got {p!r}")
    return [float(q) for q in probs]


def skip_block(p: float, training: bool) -> bool:
    r"""Draw whether to skip a block: true with probability $p$, in training only."""
    return training and p > 0 and bool(torch.rand(()) < p)


@rule("stack")
def _layer_dropout_values(o) -> None:
    p = o.layer_dropout
    if not isinstance(p, (tuple, list)) and not 0 <= p < 1:
        raise ValueError(f"layer_dropout: expected a probability in [0, 1), got {p!r}")
