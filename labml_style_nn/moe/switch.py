r"""
# Switch Transformer: one expert per token, capacity and balance

*Paper:* [Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity](https://arxiv.org/abs/2101.03961) (Fedus, Zoph and Shazeer, 2021);
the router z-loss is from [ST-MoE](https://arxiv.org/abs/2202.08906) (Zoph et al., 2022)

The Switch Transformer routes each token to a single expert ($k = 1$), the one with the largest
router probability $p_e = \operatorname{softmax}(x W_r)_e$, and scales that expert's output by
$p_e$ itself, so that the router learns through the gate.  Three more pieces keep the experts in
use and the training stable.

**Capacity.**  On accelerators each expert gets a buffer of fixed size, its capacity

$$C = \left\lceil \text{capacity factor} \cdot \frac{t k}{E} \right\rceil.$$

Tokens routed to a full expert are *dropped*: the layer outputs zero for them, and the residual
connection carries them to the next layer unchanged.  Here tokens claim places in the order of
their position, all rows of the batch at position 0 first, so that whether a token is dropped
depends only on tokens at earlier or equal positions: the layer stays causal while training.
Capacity applies in training only (`ff_capacity_factor`); at evaluation and in generation no token
is dropped, which keeps a cached decoding step equal to the full pass.  The number of dropped
assignments of the last pass is kept in `MixtureOfExperts.dropped`.

**The load-balancing loss.**  With $f_e$ the fraction of assignments sent to expert $e$ and $P_e$
the mean router probability of $e$ over the tokens,

$$\mathcal{L}_{\text{balance}} = \alpha \, E \sum_{e=1}^{E} f_e P_e,$$

which is 1 at a uniform routing and larger when a few experts take most tokens.  $f$ counts
discrete choices and has no gradient; $P$ carries it (`ff_balance_loss` is $\alpha$, $10^{-2}$ in
the paper).

**The router z-loss.**  Large router logits make the softmax brittle in low precision; ST-MoE
penalises their log-partition function,

$$\mathcal{L}_z = \beta \, \frac{1}{t} \sum_{t} \Big(\log \sum_{e} e^{l_{t,e}}\Big)^2$$

(`ff_router_z_loss` is $\beta$, $10^{-3}$ in ST-MoE).  The layer records both losses in training;
[`moe_aux_loss`](mixture.md) sums them over a model and `AutoregressiveWrapper` adds them to its
loss.

```python
Decoder(dim=512, depth=6, heads=8, ff_num_experts=8, ff_top_k=1,
        ff_capacity_factor=1.25, ff_balance_loss=0.01, ff_router_z_loss=0.001)
```

Shapes: `t` tokens, `S` assignments, `E` experts, `k` experts per token.

## Differences from the paper

* The paper applies capacity at evaluation too (with a larger factor); here evaluation never drops.
* Tokens claim capacity in position order rather than in the order of the flattened batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "ff",
    Keyword("capacity_factor", None, "expert capacity as a multiple of an even share of the tokens; "
            "tokens beyond it are dropped in training (Switch)", type=float, minimum=0, example=1.25,
            xtransformers=False),
    Keyword("balance_loss", 0.01, "weight of the load-balancing loss (Switch)", type=float, minimum=0,
            example=0.0, xtransformers=False),
    Keyword("router_z_loss", 0.0, "weight of the router z-loss (ST-MoE)", type=float, minimum=0, example=1e-3,
            xtransformers=False))


def capacity(num_assignments: int, num_experts: int, capacity_factor: float) -> int:
    r"""$C = \lceil \text{factor} \cdot S / E \rceil$ (at least 1).

    >>> capacity(64, 8, 1.25)
    10
    """
    return max(1, math.ceil(capacity_factor * num_assignments / num_experts))


def within_capacity(experts: Tensor, num_experts: int, cap: int) -> Tensor:
    """`(S,)` bool: the assignment is among the first `cap` to its expert, in the given order.

    >>> within_capacity(torch.tensor([0, 1, 0, 0, 1]), 2, 2).tolist()
    [True, True, True, False, True]
    """
    # The place of each assignment in its expert's queue: $1 + $ earlier assignments to the same expert
    one_hot = torch.nn.functional.one_hot(experts, num_experts)  # (S, E)
    place = (one_hot.cumsum(0) * one_hot).sum(-1)  # (S,)
    return place <= cap


def load_balancing_loss(probs: Tensor, experts: Tensor, num_experts: int) -> Tensor:
    r"""$E \sum_e f_e P_e$ for router probabilities `probs` `(t, E)` and chosen `experts` `(t, k)`.

    >>> load_balancing_loss(torch.full((4, 2), 0.5), torch.tensor([[0], [1], [0], [1]]), 2).item()
    1.0
    """
    # $f_e$: the fraction of assignments to expert $e$ (no gradient: discrete choices)
    f = torch.bincount(experts.flatten(), minlength=num_experts).to(probs.dtype) / experts.numel()  # (E,)
    # $P_e$: the mean probability of expert $e$
    p = probs.mean(dim=0)  # (E,)
    return num_experts * (f * p).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    r"""$\frac1t \sum_t (\log \sum_e e^{l_{t,e}})^2$ for `logits` `(t, E)`.

    >>> round(router_z_loss(torch.zeros(3, 4)).item(), 4)   # (log 4)^2
    1.9218
    """
    return torch.logsumexp(logits.float(), dim=-1).square().mean()
