r"""
# DeepSeekMoE: fine-grained and shared experts, sigmoid gates, balance without a loss

*Papers:* [DeepSeekMoE: Towards Ultimate Expert Specialization in Mixture-of-Experts Language Models](https://arxiv.org/abs/2401.06066) (Dai et al., 2024),
[DeepSeek-V3 Technical Report](https://arxiv.org/abs/2412.19437) (DeepSeek-AI, 2024),
[Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts](https://arxiv.org/abs/2408.15664) (Wang et al., 2024)

DeepSeekMoE changes what an expert is, and DeepSeek-V3 changes how tokens pick them.

**Fine-grained experts.**  Split each of $E$ experts into $m$ narrower ones (hidden width $H/m$)
and route each token to $mk$ of them: the same parameters and the same compute per token, but
$\binom{mE}{mk}$ combinations instead of $\binom{E}{k}$, so experts can specialise more finely.
DeepSeek-V3 has 256 routed experts of width 2048 and picks 8 (`ff_num_experts=256, ff_top_k=8,
ff_expert_inner_dim=2048`).

**Shared experts.**  Some knowledge every token needs; rather than have every routed expert learn
it, $K_s$ experts see every token (`ff_num_shared_experts`):

$$y = \sum_{i=1}^{K_s} \operatorname{FFN}^{(s)}_i(x) + \sum_{e \in \mathcal{T}} g_e \operatorname{FFN}_e(x).$$

The shared experts are one feed-forward network of width $K_s H$.  Qwen2-MoE has one shared
expert of its own width (`ff_shared_inner_dim`) whose output is scaled by a learned sigmoid gate
$\sigma(x w_s)$ (`ff_shared_expert_gate=True`).

**Sigmoid gates.**  DeepSeek-V3 scores experts independently, $s_e = \sigma(x w_e)$, instead of a
softmax that makes them compete; the chosen scores are renormalised and scaled by a constant
$\lambda$ (`ff_routed_scale`, 2.5 in V3): $g_e = \lambda\, s_e / \sum_{e' \in \mathcal{T}} s_{e'}$.

**Balance without an auxiliary loss.**  A loss that pushes towards balance also pushes against the
language-modelling objective.  Instead each expert has a bias $b_e$ that is added to its score
*only to choose* the experts, $\mathcal{T} = \operatorname{TopK}(s + b, k)$, never to weigh them.
After each training step the bias of an overloaded expert goes down and that of an underloaded one
up, by a fixed step $\gamma$ (`ff_bias_update_rate`, $10^{-3}$ in V3):

$$b_e \leftarrow b_e + \gamma \operatorname{sign}(\bar c - c_e),$$

where $c_e$ is the number of tokens expert $e$ received and $\bar c$ their mean.

**Group-limited routing.**  Experts are placed on devices in $G$ groups (`ff_expert_groups`); to
bound the communication each token may use experts of only $M$ groups (`ff_expert_groups_top_k`).
A group's score is the sum of the top two $s_e + b_e$ in it; the $M$ best groups are kept, the
others' experts masked out before the top-$k$.

```python
Decoder(dim=7168, depth=61, heads=128, ff_num_experts=256, ff_top_k=8, ff_expert_inner_dim=2048,
        ff_num_shared_experts=1, ff_router="sigmoid", ff_routed_scale=2.5, ff_expert_groups=8,
        ff_expert_groups_top_k=4, ff_bias_update_rate=1e-3, ff_balance_loss=0.0, ff_first_dense=3,
        ff_inner_dim=18432, ff_glu=True, ff_swish=True, ff_no_bias=True)
```

Shapes: `t` tokens, `E` routed experts, `k` experts per token, `G` groups, `D` width.

## Differences from the paper

* V3 adds a tiny sequence-wise balance loss ($\alpha = 10^{-4}$); here `ff_balance_loss` is the
  batch-wise loss of the [Switch page](switch.md), and 0 turns it off.
* The bias is updated at the end of every training forward pass, from that pass's loads (under
  data parallelism, the loads summed over the processes), rather than once per optimiser step.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..keywords import Keyword, declare
from .mixtral import Routing

KEYWORDS = declare(__name__, "ff",
    Keyword("router", "softmax", "how experts are scored: softmax (Switch, Mixtral) or sigmoid (DeepSeek-V3)",
            choices=("softmax", "sigmoid"), xtransformers=False),
    Keyword("num_shared_experts", 0, "experts every token goes through (DeepSeekMoE)", type=int, minimum=0,
            example=1, xtransformers=False),
    Keyword("shared_inner_dim", None, "hidden width of the shared experts (default: the number of shared "
            "experts times ff_expert_inner_dim)", type=int, minimum=1, example=48, xtransformers=False),
    Keyword("shared_expert_gate", False, "scale the shared experts by a learned sigmoid gate (Qwen2-MoE)",
            xtransformers=False),
    Keyword("routed_scale", 1.0, "factor on the routed experts' gates (DeepSeek-V3's 2.5)", type=float,
            minimum=0, example=2.5, xtransformers=False),
    Keyword("expert_groups", 1, "groups of experts for group-limited routing (DeepSeek-V3)", type=int,
            minimum=1, example=2, xtransformers=False),
    Keyword("expert_groups_top_k", None, "groups a token may use (default: all)", type=int, minimum=1,
            example=1, xtransformers=False),
    Keyword("bias_update_rate", 0.0, "step of the balancing bias per training pass (DeepSeek-V3's 1e-3)",
            type=float, minimum=0, example=1e-3, xtransformers=False))


def group_limited_top_k(choice: Tensor, k: int, groups: int, groups_top_k: int) -> Tensor:
    r"""The top-$k$ experts of `choice` `(t, E)` among the best `groups_top_k` of `groups` groups.

    A group's score is the sum of its two largest entries.

    >>> s = torch.tensor([[0.9, 0.1, 0.5, 0.6]])   # groups (0.9, 0.1) = 1.0 and (0.5, 0.6) = 1.1
    >>> group_limited_top_k(s, 2, 2, 1).sort().values.tolist()
    [[2, 3]]
    """
    t, e = choice.shape
    if groups > 1 and groups_top_k < groups:
        # The score of each group: the sum of its top two (its only one, for one-expert groups)
        per_group = choice.view(t, groups, e // groups)  # (t, G, E/G)
        group_score = per_group.topk(min(2, e // groups), dim=-1).values.sum(-1)  # (t, G)
        kept = group_score.topk(groups_top_k, dim=-1).indices  # (t, M)
        keep = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, kept, True)  # (t, G)
        # Experts of the other groups cannot be chosen
        choice = per_group.masked_fill(~keep[..., None], float("-inf")).view(t, e)
    return choice.topk(k, dim=-1).indices  # (t, k)


class SigmoidRouter(nn.Module):
    r"""$s = \sigma(x W_r)$; experts chosen by $s + b$ (group-limited), gates $\lambda s / \sum s$.

    Args:
        dim: model width $D$.
        num_experts: $E$.
        top_k: $k$.
        norm_gates: renormalise the chosen scores (`None`: when $k > 1$).
        routed_scale: $\lambda$.
        groups: $G$; `groups_top_k`: $M$ (`None`: all groups).
        bias_update_rate: $\gamma$, the step of the balancing bias in training (0: fixed bias).
    """

    def __init__(self, dim: int, num_experts: int, top_k: int, *, norm_gates: Optional[bool] = None,
                 routed_scale: float = 1.0, groups: int = 1, groups_top_k: Optional[int] = None,
                 bias_update_rate: float = 0.0):
        super().__init__()
        if num_experts % groups:
            raise ValueError(f"ff_expert_groups: expected a divisor of ff_num_experts ({num_experts}), got {groups}")
        groups_top_k = groups if groups_top_k is None else groups_top_k
        if groups_top_k > groups or top_k > groups_top_k * (num_experts // groups):
            raise ValueError(f"ff_expert_groups_top_k: {groups_top_k} of {groups} groups leave fewer than "
                             f"ff_top_k={top_k} experts to choose from")
        self.num_experts, self.top_k = num_experts, top_k
        self.norm_gates = top_k > 1 if norm_gates is None else norm_gates
        self.routed_scale, self.groups, self.groups_top_k = routed_scale, groups, groups_top_k
        self.bias_update_rate = bias_update_rate
        self.proj = nn.Linear(dim, num_experts, bias=False)
        # $b$: chooses, never weighs; learned by the rule above, not by gradients.
        self.register_buffer("expert_bias", torch.zeros(num_experts))

    def forward(self, x: Tensor) -> Routing:
        # $s = \sigma(x W_r)$ in float32
        logits = self.proj(x)  # (t, E)
        scores = logits.float().sigmoid()  # (t, E)
        # $\mathcal{T} = \operatorname{TopK}(s + b)$ within the best groups
        experts = group_limited_top_k(scores + self.expert_bias, self.top_k, self.groups, self.groups_top_k)
        gates = scores.gather(1, experts)  # (t, k)
        if self.norm_gates:
            # $s_e / \sum_{e' \in \mathcal{T}} s_{e'}$ (the small constant guards an all-zero row)
            gates = gates / (gates.sum(dim=-1, keepdim=True) + 1e-20)
        # The distribution the balance loss reads: the scores normalised over all experts
        probs = scores / scores.sum(dim=-1, keepdim=True)
        return Routing(experts, gates * self.routed_scale, logits, probs)

    @torch.no_grad()
    def update_bias(self, experts: Tensor) -> None:
        r"""$b_e \leftarrow b_e + \gamma \operatorname{sign}(\bar c - c_e)$ from the chosen `experts`."""
        if not self.bias_update_rate:
            return
        load = torch.bincount(experts.flatten(), minlength=self.num_experts).float()  # (E,)
        if dist.is_available() and dist.is_initialized():
            # Every process applies the same step, from the loads of the global batch
            dist.all_reduce(load)
        self.expert_bias += self.bias_update_rate * torch.sign(load.mean() - load)
