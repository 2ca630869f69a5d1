r"""
# Rotary positions across cross-attention

*Source:* x-transformers' `context_pos` argument of the stack's forward.

[Rotary embeddings](rotary.md) rotate a query at position $i$ and a key at position $j$ so that
their score depends on $j - i$ alone.  In self-attention both sides are the same tokens.  In
cross-attention the keys come from another sequence, and the stack usually leaves them unrotated.
When the two sequences share a time axis (the
[Free Transformer](../families/free_transformer.md) asks, at every position of a text, a question
of the same text), the caller gives the context's positions `context_pos` $(j)$: the queries turn
by their own positions (`pos`, or $m \dots m + n - 1$) and the keys by theirs, so that

$$\langle R_i q, R_j k \rangle = \langle q, R_{j-i} k \rangle$$

holds across the two sequences as well.

Shapes: `n` queries, `j` context tokens, `d_rot` rotated features.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..attention.extension_points import SharedAttentionInputs


def cross_rotary_inputs(rotary: Optional[nn.Module], query_pos: Tensor, context_pos: Tensor,
                        context_len: int) -> SharedAttentionInputs:
    """The angles of the queries `(2, n, d_rot)` and of the context's keys `(2, j, d_rot)` for cross-attention."""
    if rotary is None:
        raise ValueError("context_pos: positions of the context need rotary positions (rotary_pos_emb=True)")
    if not torch.is_tensor(context_pos) or context_pos.shape != (context_len,) or context_pos.is_floating_point():
        got = tuple(context_pos.shape) if torch.is_tensor(context_pos) else type(context_pos).__name__
        raise ValueError(f"context_pos: expected ({context_len},) integer positions, one per context token, got {got}")
    return SharedAttentionInputs(cross_rotary=(rotary(query_pos), rotary(context_pos.to(query_pos.device))))
