r"""
# Learned attention sinks

*Papers:* [Efficient Streaming Language Models with Attention Sinks](https://arxiv.org/abs/2309.17453)
(Xiao et al., 2023); [gpt-oss-120b & gpt-oss-20b Model Card](https://arxiv.org/abs/2508.10925)
(OpenAI, 2025)

Softmax weights must sum to one, so a head with nothing to read still has to put its weight
somewhere.  Trained models learn to dump it on the first token, a "sink" (Xiao et al.).  gpt-oss
gives every head a sink of its own instead: one learned logit $s_h$ per head that joins every row
of scores as an extra key whose value is zero,

$$A_{ij} = \frac{e^{S_{ij}}}{e^{s_h} + \sum_{j'} e^{S_{ij'}}}, \qquad o_i = \sum_j A_{ij} v_j.$$

The weights of the real keys now sum to $1 - e^{s_h} / (e^{s_h} + \sum_{j'} e^{S_{ij'}})$, less
than one: the head can attend to nothing by raising $s_h$ (or the scores falling below it).  With
$s_h = 0$ (the initial value) this is the [zero key/value](zero_kv.md) of "attention is off by
one" with a learned logit.

The sink column is added to the scores after the mask and dropped after the normaliser, so it works
with any normaliser (softmax, sigmoid, top-$k$, ...); with [cog attention](cog_attention.md) its
logit enters as $|s_h|$.  It wraps the `normaliser` of [attention](attention.md): layers with it
take the explicit path.

A worked example: scores $(0, 0)$ and $s_h = 0$ give weights $(1/3, 1/3)$; with $s_h = 2$,
$(0.11, 0.11)$.

`attn_head_learned_sink=True`.  Tests: `tests/attention/test_attn_scoring.py`.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import repeat
from torch import Tensor, nn

from ..keywords import Keyword, declare
from .extension_points import softmax

KEYWORDS = declare(__name__, "attn",
    Keyword("head_learned_sink", False, "a learned logit per head joins every row as a key with value 0"))


class LearnedSink(nn.Module):
    r"""Normaliser wrapper: one learned sink logit $s_h$ per head, a key whose value is zero.

    >>> sink = LearnedSink(1)
    >>> [round(x, 3) for x in sink(torch.zeros(1, 1, 1, 2)).flatten().tolist()]
    [0.333, 0.333]
    """

    def __init__(self, heads: int, normaliser: Callable[[Tensor], Tensor] = softmax, absolute: bool = False):
        super().__init__()
        # $s_h$, zero at the start
        self.sink = nn.Parameter(torch.zeros(heads))
        self.normaliser = normaliser
        # Cog attention normalises $|S|$, so the sink enters as $|s_h|$.
        self.absolute = absolute

    def forward(self, scores: Tensor) -> Tensor:
        b, _, i, _ = scores.shape
        sink = self.sink.abs() if self.absolute else self.sink
        sink = repeat(sink.to(scores.dtype), "h -> b h i 1", b=b, i=i)
        # $[s_h, S_{i1}, \dots, S_{ij}]$ normalised together, then the sink's own weight dropped
        weights = self.normaliser(torch.cat((sink, scores), dim=-1))  # (b, h, i, 1 + j)
        return weights[..., 1:]
