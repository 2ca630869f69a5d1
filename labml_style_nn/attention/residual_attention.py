r"""
# Residual attention (RealFormer)

*Paper:* [RealFormer: Transformer Likes Residual Attention](https://arxiv.org/abs/2012.11747) (He et al., 2020)

RealFormer adds a residual path to the attention *scores*: each layer adds the previous layer's
raw (pre-softmax) scores to its own before the softmax, and passes the sum on:

$$S^{(l)} = \frac{Q^{(l)} K^{(l)\top}}{\sqrt d} + S^{(l-1)}, \qquad A^{(l)} = \operatorname{softmax}(S^{(l)} + B)$$

Attention patterns then change gradually through depth, which the paper finds makes training more
stable and lets it use a higher learning rate.  It adds no parameters.  The paper's best results
use post-norm blocks (`pre_norm=False`).

The attention module does the addition (`prev_scores` in `attention/attention.py`); this file holds
the small state that carries the scores from one layer to the next.  Self-attention and
cross-attention layers keep separate chains (`residual_attn`, `cross_residual_attn`).

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

Position biases (T5, ALiBi) are added *after* the residual sum, so that a bias shared by all layers
is not accumulated once per layer.
"""

from typing import Optional

from torch import Tensor


class ResidualScores:
    """Carries the raw scores of the last attention layer of one kind to the next."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.prev: Optional[Tensor] = None

    def update(self, scores: Optional[Tensor]) -> None:
        if self.enabled:
            self.prev = scores
