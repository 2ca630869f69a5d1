r"""
# Pooling a sequence: [CLS] tokens, the average, attention pooling

A classifier or a retrieval model needs one vector (or a few) per sequence.  Three ways, each a
keyword of x-transformers' `TransformerWrapper`:

* **`use_cls_token`** ([BERT](https://arxiv.org/abs/1810.04805), Devlin et al., 2019): a learned
  token is prepended and its output is the summary; `num_cls_tokens=k` prepends $k$ of them.
* **`average_pool_embed`**: the mean of the outputs over the real (unmasked) tokens,
  $\bar h = \sum_t m_t h_t / \sum_t m_t$.
* **`attn_pool`** ([Set Transformer](https://arxiv.org/abs/1810.00825)'s pooling by multihead
  attention, Lee et al., 2019): $k$ learned queries cross-attend to the outputs,
  $\operatorname{PMA}(H) = \operatorname{Attention}(Q_{\text{learned}}, H, H)$; with
  `attn_pool_depth > 1` a small cross-attending stack does the pooling.

`AttentionPool` is also a module of its own, as in x-transformers.

Shapes: `b` batch, `n` tokens, `D` width, `k` pooled tokens.

**Differences from x-transformers.**  None in meaning: an encoder with `attn_pool=True` returns the
pooled tokens `(b, k, D)` (the logits go to `intermediates.logits`); a decoder returns them only in
`intermediates.attn_pooled_tokens`, with `return_intermediates=True`.
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import repeat
from torch import Tensor, nn

from ..attention.attention import Attention


def masked_mean(h: Tensor, mask: Optional[Tensor]) -> Tensor:
    r"""$\sum_t m_t h_t / \sum_t m_t$ over the tokens of `h` `(b, n, D)`.

    >>> masked_mean(torch.tensor([[[1.], [3.], [9.]]]), torch.tensor([[True, True, False]])).tolist()
    [[2.0]]
    """
    if mask is None:
        return h.mean(dim=1)
    m = mask[..., None].to(h.dtype)  # (b, n, 1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-5)  # (b, D)


class AttentionPool(nn.Module):
    """`num_pooled_tokens` learned queries attend to a sequence: `(b, n, dim_context)` to `(b, k, dim)`."""

    def __init__(self, dim: int, num_pooled_tokens: int = 1, dim_context: Optional[int] = None,
                 add_residual: bool = False, depth: int = 1, heads: int = 8, dim_head: int = 64,
                 use_transformer_blocks: Optional[bool] = None, squeeze_output: Optional[bool] = None,
                 attn_kwargs: Optional[dict] = None):
        super().__init__()
        dim_context = dim if dim_context is None else dim_context
        squeeze_output = bool(squeeze_output)
        if squeeze_output and num_pooled_tokens > 1:
            raise ValueError("squeeze_output: only one pooled token can drop its axis (num_pooled_tokens=1)")
        use_transformer_blocks = depth > 1 if use_transformer_blocks is None else use_transformer_blocks
        if not use_transformer_blocks and depth != 1:
            raise ValueError("depth: a pool of depth > 1 is a stack of cross-attention blocks (use_transformer_blocks)")
        if use_transformer_blocks and add_residual:
            raise ValueError("add_residual: the cross-attending stack already has residual connections")
        # $k$ learned queries, small at first
        self.queries = nn.Parameter(torch.randn(num_pooled_tokens, dim) * 1e-2) if num_pooled_tokens > 0 else None
        if use_transformer_blocks:
            from ..models.layers import CrossAttender
            self.pooler: nn.Module = CrossAttender(dim=dim, depth=depth, heads=heads, attn_dim_head=dim_head,
                                                   dim_context=dim_context,
                                                   **{f"attn_{k}": v for k, v in (attn_kwargs or {}).items()})
        else:
            self.pooler = Attention(dim, heads=heads, dim_head=dim_head, dim_context=dim_context, **(attn_kwargs or {}))
        self.blocks, self.add_residual, self.squeeze_output = use_transformer_blocks, add_residual, squeeze_output

    def forward(self, context: Tensor, mask: Optional[Tensor] = None, queries: Optional[Tensor] = None) -> Tensor:
        """Pooled tokens `(b, k, dim)` (`(b, dim)` with `squeeze_output`); `mask` `(b, n)` marks real tokens."""
        if queries is None:
            if self.queries is None:
                raise ValueError("queries: with num_pooled_tokens=0 the queries must be passed in")
            queries = repeat(self.queries, "k d -> b k d", b=context.shape[0])  # (b, k, dim)
        if self.blocks:
            pooled = self.pooler(queries, context=context, context_mask=mask)
        else:
            # $\operatorname{softmax}(Q K^\top / \sqrt d)\, V$ with keys and values from the sequence
            pooled, _ = self.pooler(queries, context=context, context_mask=mask)
        if self.add_residual:
            pooled = pooled + queries
        return pooled[:, 0] if self.squeeze_output else pooled
