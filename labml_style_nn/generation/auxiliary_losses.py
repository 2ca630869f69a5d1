r"""
# Auxiliary losses: one place where a model's extra training signals meet the loss

Some techniques train with a loss of their own beside next-token prediction: PaLM's
[attention z-loss](../wrapping/z_loss.md), the L1 loss of a
[next-embedding head](../wrapping/output_heads.md), the load-balancing loss of a mixture of experts.
Each is computed during the forward pass, where its inputs are, and the autoregressive wrapper
only adds them up:

$$\mathcal{L} = \mathcal{L}_{\text{next token}} + \sum_k \mathcal{L}_k$$

The contract is small.  A technique writes its loss, already weighted, into the pass's
[intermediates](intermediates.md) under a name of its own, `intermediates.aux_losses["name"]`;
`AutoregressiveWrapper.forward` asks the network for its intermediates when a loss may be there
(`add_attn_z_loss`, a next-embedding head, or a network whose `produces_aux_losses` is true), adds
every entry, and with `return_outputs=True` returns them so they can be logged.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


def wants_intermediates(net: nn.Module, add_attn_z_loss: bool, return_outputs: bool) -> bool:
    """Whether the training forward must ask `net` for its intermediates."""
    if not hasattr(net, "attn_layers"):
        return False  # e.g. the Feedback Transformer: no intermediates
    return add_attn_z_loss or return_outputs or bool(getattr(net, "add_continuous_pred_head", False)) \
        or bool(getattr(net, "produces_aux_losses", False))


def total_auxiliary_loss(intermediates) -> Optional[Tensor]:
    r"""$\sum_k \mathcal{L}_k$ over `intermediates.aux_losses`, or `None` when there are none."""
    losses: list[Tensor] = list(getattr(intermediates, "aux_losses", {}).values())
    if not losses:
        return None
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total
