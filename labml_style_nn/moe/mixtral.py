r"""
# Top-$k$ routing with softmax gates (Mixtral)

*Papers:* [Mixtral of Experts](https://arxiv.org/abs/2401.04088) (Jiang et al., 2024),
[Outrageously Large Neural Networks](https://arxiv.org/abs/1701.06538) (Shazeer et al., 2017)

A router is one linear map from a token to a score per expert, $l = x W_r$, `(E,)`.  Mixtral sends
each token to the $k = 2$ experts with the largest scores and weighs their outputs by a softmax
over the chosen scores only:

$$\mathcal{T} = \operatorname{TopK}(l, k), \qquad
g_e = \frac{\exp l_e}{\sum_{e' \in \mathcal{T}} \exp l_{e'}} \;\; (e \in \mathcal{T}), \qquad
y = \sum_{e \in \mathcal{T}} g_e \operatorname{FFN}_e(x).$$

The softmax over the chosen $k$ equals the softmax over all $E$ followed by renormalising the
chosen probabilities, $g_e = p_e / \sum_{e' \in \mathcal{T}} p_{e'}$, which is how it is computed
here (and by Hugging Face): the full $p$ is also what the [load-balancing loss](switch.md) needs.
Qwen2-MoE keeps the unnormalised $p_e$ (`ff_norm_gates=False`), as does the Switch Transformer
with $k = 1$, where renormalising would make every gate 1 and leave the router without gradient.

A token's $k$ experts run in parallel, so the layer has $E$ experts' parameters but each token
costs only $k$ of them: Mixtral 8x7B has 47B parameters and uses 13B per token.  Each expert is a
SwiGLU feed-forward network ([GLU](../feedforward/glu.md)), computed for all tokens at once as on
the [experts page](experts.md).

```python
Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True,
        ff_num_experts=8, ff_top_k=2, ff_glu=True, ff_swish=True, ff_no_bias=True)
```

Shapes: `t` tokens, `E` experts, `k` experts per token, `D` width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "ff",
    Keyword("norm_gates", None, "renormalise the chosen experts' gates to sum to 1 (Mixtral); "
            "None: when ff_top_k > 1", type=bool, example=False, xtransformers=False))


@dataclass
class Routing:
    """Which experts each token goes to, with what gate, and the router's scores for the losses."""

    experts: Tensor  # (t, k) long
    gates: Tensor  # (t, k)
    logits: Tensor  # (t, E)
    # Each token's distribution over the experts (softmax, or normalised sigmoid scores), `(t, E)`;
    # `None` where inference skipped it.
    probs: Optional[Tensor]


def top_k_softmax(logits: Tensor, k: int, renormalise: bool) -> Routing:
    r"""The $k$ largest of $p = \operatorname{softmax}(l)$, renormalised over them if asked.

    >>> r = top_k_softmax(torch.tensor([[0.0, 2.0, 1.0, 2.0]]).log(), 2, True)  # p = (0, .4, .2, .4)
    >>> r.experts.tolist(), [round(g, 3) for g in r.gates[0].tolist()]
    ([[1, 3]], [0.5, 0.5])
    """
    # $p = \operatorname{softmax}(l)$ in float32, whatever the model's precision
    probs = logits.float().softmax(dim=-1)  # (t, E)
    gates, experts = probs.topk(k, dim=-1)  # (t, k)
    if renormalise:
        # $g_e = p_e / \sum_{e' \in \mathcal{T}} p_{e'}$
        gates = gates / gates.sum(dim=-1, keepdim=True)
    return Routing(experts, gates, logits, probs)


class SoftmaxRouter(nn.Module):
    r"""$l = x W_r$, then the top-$k$ experts of $\operatorname{softmax}(l)$.

    Args:
        dim: model width $D$.
        num_experts: $E$.
        top_k: $k$ experts per token.
        norm_gates: renormalise the $k$ gates (`None`: when $k > 1$).
    """

    def __init__(self, dim: int, num_experts: int, top_k: int, *, norm_gates: Optional[bool] = None):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.norm_gates = top_k > 1 if norm_gates is None else norm_gates
        self.proj = nn.Linear(dim, num_experts, bias=False)

    def forward(self, x: Tensor) -> Routing:
        if self.norm_gates and not torch.is_grad_enabled():
            # Inference needs no full $p$ (it is for the losses): the softmax over the chosen logits
            # directly.  (`linear` called directly: at a decoding step the module call costs more
            # than the product.)
            logits = F.linear(x, self.proj.weight)  # (t, E)
            top, experts = logits.topk(self.top_k, dim=-1)  # (t, k)
            return Routing(experts, top.float().softmax(dim=-1), logits, None)
        # $l = x W_r$
        logits = self.proj(x)  # (t, E)
        return top_k_softmax(logits, self.top_k, self.norm_gates)
