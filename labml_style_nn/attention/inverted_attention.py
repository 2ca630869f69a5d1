r"""
# Inverted attention: the queries compete for each key

*Papers:* [Object-Centric Learning with Slot Attention](https://arxiv.org/abs/2006.15055)
(Locatello et al., 2020), where the normalisation comes from; x-transformers cites
[openreview WgQZNoQ5AB](https://openreview.net/forum?id=WgQZNoQ5AB) for its use in cross-attention

Softmax attention normalises each *query's* row: the keys compete for a query's attention.
Inverted attention normalises each *key's* column instead, so the queries compete for a key: a
key's content goes mostly to the query that matches it best, as pixels are assigned to slots in
Slot Attention.  The weights of each query are then rescaled to sum to one, a weighted mean:

$$\tilde A_{ij} = \operatorname{softmax}_i(S_{ij}) = \frac{e^{S_{ij}}}{\sum_{i'} e^{S_{i'j}}}, \qquad
A_{ij} = \frac{\tilde A_{ij}}{\sum_{j'} \tilde A_{ij'}}.$$

Padded queries take no part in the competition (their scores are hidden before the softmax over
queries) and hidden keys get no weight.  Because a key's weights depend on every query, the output
of a query depends on the *other* queries: a query's output changes when a later one does, so
inverted attention cannot be causal.  It is refused on a causal stack (x-transformers only warns,
for cross-attention).

It is a `normaliser` that reads the masks: layers with it take the explicit path of
[attention](attention.md).  `attn_inverted_attention=True` (self-attention of an encoder, and
cross-attention, which the `attn_` keywords also configure), `cross_attn_inverted_attention=True`
(cross-attention only).

A worked example: two queries and two keys with scores $S = \begin{pmatrix} 2 & 0 \\ 0 & 0\end{pmatrix}$:
the softmax over queries gives $\tilde A = \begin{pmatrix} 0.88 & 0.5 \\ 0.12 & 0.5 \end{pmatrix}$ and
the rows rescaled $A = \begin{pmatrix} 0.64 & 0.36 \\ 0.19 & 0.81 \end{pmatrix}$: the second query
gets the second key, which the first query left over.

Tests: `tests/attention/test_attn_scoring.py` (parity with x-transformers, padded queries change
nothing, the refusal on causal stacks).

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from Slot Attention

* One pass, no iterative refinement of the queries, and the weights are renormalised with a
  plain $\ell_1$ norm (with an $\epsilon$ of $10^{-8}$), as x-transformers does.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from .extension_points import masked_fill_value

KEYWORDS = declare(__name__, "attn",
    Keyword("inverted_attention", False, "softmax over the queries (they compete for each key), rows renormalised"))


class InvertedSoftmax(nn.Module):
    r"""Softmax over the queries, hidden keys zeroed, rows rescaled to sum to one.

    >>> w = InvertedSoftmax()(torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]]), None, None)
    >>> [[round(x, 2) for x in row] for row in w[0, 0].tolist()]
    [[0.64, 0.36], [0.19, 0.81]]
    """

    # The attention module passes `visible` and the queries' mask.
    takes_masks = True

    def forward(self, scores: Tensor, visible: Optional[Tensor], query_mask: Optional[Tensor]) -> Tensor:
        dtype, scores = scores.dtype, scores.float()
        if query_mask is not None:
            # Padded queries do not compete.
            scores = scores.masked_fill(~query_mask[:, None, :, None], masked_fill_value(scores.dtype))
        # $\tilde A_{ij} = \operatorname{softmax}_i(S_{ij})$, over the queries
        weights = scores.softmax(dim=-2)
        if visible is not None:
            weights = weights.masked_fill(~visible, 0.0)
        # $A_{ij} = \tilde A_{ij} / \sum_{j'} \tilde A_{ij'}$
        return F.normalize(weights, p=1, dim=-1, eps=1e-8).to(dtype)


@rule("attn")
def _inverted_is_not_causal(a, prefix: str, layers) -> None:
    if a.inverted_attention and layers.causal:
        raise ValueError(f"{prefix}inverted_attention and causal: the queries compete for each key, so a "
                         "query's weights depend on later queries; use it in an encoder or a cross-attender")
