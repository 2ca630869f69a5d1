r"""
# Dropping context tokens in cross-attention

A cross-attending stack reads a context: an encoder's output, image features, a text prompt.  A
regulariser in the spirit of dropout, but structured: during training, drop whole context *tokens*
rather than single features, so the model cannot lean on any one of them,

$$c \leftarrow c_{S}, \qquad S \subset \{1, \dots, j\}, \quad |S| = \max\big(1, \lfloor (1 - p)\, j \rfloor\big),$$

a random subset kept per sequence (padded tokens are dropped first).  The keys and values of
cross-attention are computed from the kept tokens only, so it also saves compute.  At evaluation
the whole context is used.  x-transformers cites no paper for it; it is the token dropout that
several multimodal models use on their conditioning sequence.

`cross_attn_tokens_dropout=0.25` keeps three quarters of the context in training.

Tests: `tests/models/test_regularisation_and_output.py`.

Shapes: `b` batch, `j` context tokens, `k` kept tokens, `C` context width.

## Differences from x-transformers

* x-transformers draws a new subset before *each* cross-attention block, from what the previous
  block kept, so a stack with $L$ cross-attention blocks keeps about $(1 - p)^L$ of the context by
  the last one.  Here one subset is drawn per forward pass and every cross-attention block reads
  it, so `cross_attn_tokens_dropout` is the fraction dropped, whatever the depth.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("cross_attn_tokens_dropout", 0.0, "in training, drop this fraction of the cross-attention "
            "context tokens (one subset per forward pass)", example=0.25))


def drop_context_tokens(context: Tensor, mask: Optional[Tensor], p: float) -> tuple[Tensor, Optional[Tensor]]:
    r"""Keep a random $\max(1, \lfloor (1-p) j \rfloor)$ of the `j` tokens of `context` `(b, j, C)`.

    Real tokens (true in `mask` `(b, j)`) are kept before padding; the kept tokens stay in order.
    """
    b, j = context.shape[:2]
    num_keep = max(1, int((1 - p) * j))
    # A random score per token; padding gets $-\infty$ so it is dropped first.
    scores = torch.rand(b, j, device=context.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, -1.0)
    keep = scores.topk(num_keep, dim=1).indices.sort(dim=1).values  # (b, k)
    kept = context.gather(1, keep[..., None].expand(-1, -1, context.shape[-1]))  # (b, k, C)
    return kept, mask.gather(1, keep) if mask is not None else None


@rule("stack")
def _context_dropout_values(o) -> None:
    p = o.cross_attn_tokens_dropout
    if not 0 <= p < 1:
        raise ValueError(f"cross_attn_tokens_dropout: expected a probability in [0, 1), got {p!r}")
    if p and not (o.cross_attend or o.only_cross):
        raise ValueError("cross_attn_tokens_dropout: needs cross-attention layers (cross_attend=True)")
