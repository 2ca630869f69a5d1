r"""
# Direct Preference Optimization (DPO)

*Paper:* [Direct Preference Optimization: Your Language Model is Secretly a Reward Model](https://arxiv.org/abs/2305.18290)
(Rafailov et al., 2023)

RLHF fits a reward model to human preferences and then trains the policy against it with
reinforcement learning, kept near a reference model by a KL penalty.  DPO shows that the optimum
of that objective can be written in closed form, with the policy's own log-ratio to the reference
model as the implicit reward $r(x, y) = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_{\text{ref}}(y \mid x)}$.
Putting it into the Bradley–Terry preference model gives a plain classification loss on pairs of
a preferred answer $y_w$ and a dispreferred one $y_l$:

$$\mathcal{L}_{\text{DPO}} = -\log \sigma\Big(\beta \log \frac{\pi_\theta(y_w)}{\pi_{\text{ref}}(y_w)}
- \beta \log \frac{\pi_\theta(y_l)}{\pi_{\text{ref}}(y_l)}\Big)$$

The reference model is a frozen copy of the policy at the start; only the answer tokens count
(`prompt_mask` marks the prompt).  At the start the policy is the reference, so the loss is
$\log 2$, and it falls as the policy moves probability from $y_l$ to $y_w$.

**Differences from the paper.**  As in x-transformers, a sequence's log-probability is the *mean*
over its answer tokens (the paper sums them), which does not favour short answers.

Shapes: `b` batch, `n` tokens.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sequence_log_probs(model: nn.Module, seq: Tensor) -> Tensor:
    r"""$\log p(x_{t+1} \mid x_{\le t})$ of each next token `(b, n - 1)`."""
    log_probs = model(seq[:, :-1]).log_softmax(dim=-1)  # (b, n - 1, V)
    return log_probs.gather(-1, seq[:, 1:, None]).squeeze(-1)


def masked_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """The mean of `values` `(b, n - 1)` over the positions `mask` keeps (`(b, n)` masks drop the last)."""
    if mask is None:
        return values.mean(dim=-1)
    if mask.shape[-1] == values.shape[-1] + 1:
        mask = mask[:, :-1]
    return (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1e-5)


class DPO(nn.Module):
    """The DPO loss of a `TransformerWrapper` policy against a frozen copy of itself."""

    def __init__(self, model: nn.Module, *, beta: float = 0.1, pad_id: Optional[int] = None):
        super().__init__()
        self.policy_model = model
        self.ref_model = copy.deepcopy(model)
        for p in self.ref_model.parameters():
            p.requires_grad = False
        self.beta, self.pad_id = beta, pad_id

    def parameters(self, recurse: bool = True):
        """Only the policy trains."""
        return self.policy_model.parameters(recurse)

    def forward(self, preferred_seq: Tensor, unpreferred_seq: Tensor, *, prompt_mask: Tensor,
                preferred_seq_mask: Optional[Tensor] = None, unpreferred_seq_mask: Optional[Tensor] = None) -> Tensor:
        """The mean DPO loss of pairs `(b, n)`; `prompt_mask` `(b, n)` marks the prompt's tokens."""
        if preferred_seq.dim() != 2 or preferred_seq.shape != unpreferred_seq.shape:
            raise ValueError("preferred_seq and unpreferred_seq: expected token ids of one shape (batch, n)")
        if self.pad_id is not None:
            preferred_seq_mask = preferred_seq != self.pad_id if preferred_seq_mask is None else preferred_seq_mask
            unpreferred_seq_mask = unpreferred_seq != self.pad_id if unpreferred_seq_mask is None else unpreferred_seq_mask
        with torch.no_grad():
            self.ref_model.eval()
            ref_w = sequence_log_probs(self.ref_model, preferred_seq)
            ref_l = sequence_log_probs(self.ref_model, unpreferred_seq)
        pol_w = sequence_log_probs(self.policy_model, preferred_seq)
        pol_l = sequence_log_probs(self.policy_model, unpreferred_seq)
        # Only the answers count.
        mask_w = ~prompt_mask if preferred_seq_mask is None else ~prompt_mask & preferred_seq_mask
        mask_l = ~prompt_mask if unpreferred_seq_mask is None else ~prompt_mask & unpreferred_seq_mask
        # $\log \pi_\theta(y_w) - \log \pi_\theta(y_l)$ and the same for the reference
        policy_logratio = masked_mean(pol_w, mask_w) - masked_mean(pol_l, mask_l)
        ref_logratio = masked_mean(ref_w, mask_w) - masked_mean(ref_l, mask_l)
        # $-\log \sigma(\beta\,(\cdot - \cdot))$
        return -F.logsigmoid(self.beta * (policy_logratio - ref_logratio)).mean()
