r"""
# Attention z-loss

*Papers:* [ST-MoE](https://arxiv.org/abs/2202.08906) (Zoph et al., 2022, for router logits, with a
footnote on attention logits) and [PaLM](https://arxiv.org/abs/2204.02311) (Chowdhery et al., 2022,
on the output softmax).

A softmax is invariant to adding a constant to its logits, so nothing in the task keeps the logits
from drifting to large values, where bfloat16 rounding and exploding gradients make training
unstable.  The z-loss penalises the log of the softmax's normaliser, $z = \log \sum_j e^{S_{ij}}$,
pulling it to 0 at negligible cost to the task:

$$\mathcal{L}_z = w \cdot \frac{1}{b\,n} \sum_{b, i} \sum_h \Big(\sum_{l} \log \sum_j e^{S^{(l)}_{bhij}}\Big)^2$$

`model(x, return_attn_z_loss=True, return_intermediates=True)` puts it in `intermediates.attn_z_loss`;
`AutoregressiveWrapper(add_attn_z_loss=True)` adds it to the training loss (the
[auxiliary losses](../generation/auxiliary_losses.md) hook).

**Differences from the papers.**  This is x-transformers' formula: the normalisers of all layers
(cross-attention included) are *summed before squaring*, where ST-MoE squares each router's $z$.
`TransformerWrapper(attn_z_loss_weight=w)` sets the default weight $w$ ($10^{-4}$); x-transformers
accepts that keyword but reads only the forward's `attn_z_loss_weight`.  Computing it needs the
scores, so the explicit attention path runs.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys, `l` attention layers.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def attn_z_loss(pre_softmax_attns: list[Tensor], mask: Optional[Tensor] = None, weight: float = 1.0) -> Tensor:
    """The z-loss of the masked pre-softmax scores `(b, h, i, j)` of every attention layer.

    >>> attn_z_loss([torch.zeros(1, 1, 2, 4)]).item() == torch.tensor(4.).log().square().item()
    True
    """
    # $\sum_l \log \sum_j e^{S^{(l)}_{ij}}$, per batch, head and query
    lse = sum(scores.logsumexp(dim=-1) for scores in pre_softmax_attns)  # (b, h, i)
    loss = torch.as_tensor(lse).square().sum(dim=1)  # (b, i): summed over heads
    if mask is None:
        return loss.mean() * weight
    return loss[mask].sum() / mask.sum().clamp(min=1) * weight
