r"""
# Position infused attention

*Paper:* [Shortformer: Better Language Modeling using Shorter Inputs](https://arxiv.org/abs/2012.15832) (Press et al., 2020); [End-to-End Object Detection with Transformers](https://arxiv.org/abs/2005.12872) (Carion et al., 2020)

Instead of adding positions to the token embeddings once, add fixed sinusoidal positions to the
inputs of the **query and key** projections in *every* layer, and leave the values alone:

$$q_i = (x_i + p_i) W_Q, \qquad k_j = (x_j + p_j) W_K, \qquad v_j = x_j W_V.$$

The hidden states that flow through the residual stream then carry no position.  Shortformer uses
this to cache the states of a previous segment and reuse them at new positions, a cheaper
alternative to Transformer-XL's relative attention.

This module only produces $p$; the attention module adds $p W_Q$ and $p W_K$ inside its fused
projection (see `attention/attention.py`, `_project`), so no separate pass over $x + p$ is needed.

Tests: `tests/positional/test_pos_position_infused.py` (positions enter queries and keys only; the residual stream's values do not depend on position).

Shapes: `n` tokens, `D` model width.

## Differences from the paper

* Shortformer caches the states of the previous segment and gives them *new* positions relative to
  the current window; here the positions of a memory or a cache simply continue from the previous
  segment, so a cached pass equals one pass over the whole sequence, and so does a pass with a
  Transformer-XL memory as long as the memory holds the whole prefix.
* Values stay free of position only if the token embeddings carry none, so the wrapper's absolute
  embedding must be off (`use_abs_pos_emb=False`).
* DETR adds learned or sinusoidal 2-D positions for images; we use the 1-D sinusoids of
  [absolute](absolute.md), with no learned parameters.
"""

from torch import Tensor, nn

from ..checks import check_positions
from ..keywords import Keyword, declare
from .absolute import SinusoidalPositionalEmbedding

KEYWORDS = declare(__name__, "stack",
    Keyword("position_infused_attn", False, "add sinusoidal positions to the queries' and keys' input, not the "
            "values'", xtransformers=False))


class PositionInfusedAttention(nn.Module):
    """Sinusoidal positions for the query/key inputs of every attention layer."""

    def __init__(self, dim: int):
        super().__init__()
        self.sinusoids = SinusoidalPositionalEmbedding(dim)

    def forward(self, positions: Tensor) -> Tensor:
        r"""$p$ for the key positions of this pass `(j,)`; queries use the last $n$ rows.

        With $D = 4$: $p_0 = (\sin 0, \sin 0, \cos 0, \cos 0)$, and $p_1$ turns the first pair by
        1 radian and the second by $10000^{-2/4} = 0.01$ (the layout of [absolute](absolute.md)).

        >>> PositionInfusedAttention(4)(torch.arange(2))
        tensor([[0.0000, 0.0000, 1.0000, 1.0000],
                [0.8415, 0.0100, 0.5403, 0.9999]])
        """
        check_positions("positions", positions)
        return self.sinusoids(positions)  # (j, D)
