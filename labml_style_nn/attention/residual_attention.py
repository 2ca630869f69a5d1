r"""
# Residual attention (RealFormer)

*Paper:* [RealFormer: Transformer Likes Residual Attention](https://arxiv.org/abs/2012.11747) (He et al., 2020)

RealFormer adds a residual connection to the attention *scores*.  Each layer adds the previous
layer's raw (pre-softmax) scores to its own before the softmax, and passes the sum on to the next:

$$S^{(l)} = \frac{Q^{(l)} K^{(l)\top}}{\sqrt d} + S^{(l-1)}, \qquad S^{(0)} = 0, \qquad
A^{(l)} = \operatorname{softmax}\big(S^{(l)} + B\big)$$

Unrolled, layer $l$ attends with the *sum* of every layer's dot products so far,
$S^{(l)} = \sum_{m \le l} Q^{(m)} K^{(m)\top} / \sqrt d$: a layer only has to learn a correction to
the pattern of the layers below it.  Attention patterns then change gradually through depth, which
the paper finds makes training more stable and lets it use a higher learning rate.  It adds no
parameters.  The paper's best results use post-norm blocks (`pre_norm=False`), which need a
learning-rate warm-up.

## How it plugs in

The attention module does the addition (its `prev_scores` argument, `attention/attention.py`) and
returns the sum; this file holds the small state that carries that sum from one layer to the next
inside a forward pass of the stack (`models/layers.py`):

* self-attention layers form one chain (`residual_attn=True`);
* cross-attention layers form their own chain (`cross_residual_attn=True`; on `XTransformer`,
  `dec_cross_residual_attn=True`), since their scores have a different number of keys;
* each head keeps its own chain: $S^{(l)}_h$ adds to $S^{(l-1)}_h$.

A layer that must hand on its scores has to compute them, so these layers take the explicit path;
the other kind of layer keeps the fused kernel.  A test checks $S^{(l)} = S^{(l)}_{\text{own}} +
S^{(l-1)}$ layer by layer.

A worked example with one query and two keys: layer 1 scores them $(1, 0)$ and attends with
weights $(0.73, 0.27)$.  Layer 2's own scores are $(0, 1)$; on its own it would attend
$(0.27, 0.73)$, but with the residual it attends with $(1, 0) + (0, 1) = (1, 1)$, weights
$(0.5, 0.5)$: a layer moves the pattern of the layers below it rather than replacing it.

It plugs into the `prev_scores` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_residual_attention_adds_previous_scores` in `tests/attention/test_attn_paths.py`.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys (persistent memory slots included).

## Differences from the paper

* Position biases (T5, ALiBi) are added *after* the residual sum, so that a bias shared by all
  layers is not accumulated once per layer.
* Score transforms (talking heads, top-$k$) act on the layer's copy of the sum; the chain carries the
  sum before them, so one layer's sparsification does not remove keys from the next layer's scores.
* The paper studies encoders (BERT) and encoder-decoders; the chain works the same in a decoder,
  where the causal mask is applied afresh in every layer.
"""

from typing import Optional

from torch import Tensor

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("residual_attn", False, "add each layer's attention scores to the next layer's"),
    Keyword("cross_residual_attn", False, "residual attention between the cross-attention layers"))


class ResidualScores:
    """Carries the raw scores `(b, h, i, j)` of the last attention layer of one kind to the next.

    Args:
        enabled: when false, `prev` stays `None` and every layer attends on its own scores.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.prev: Optional[Tensor] = None  # $S^{(l-1)}$, `None` before the first layer

    def update(self, scores: Optional[Tensor]) -> None:
        """Record the scores $S^{(l)}$ that layer $l$ returned, for layer $l + 1$."""
        if self.enabled:
            self.prev = scores
