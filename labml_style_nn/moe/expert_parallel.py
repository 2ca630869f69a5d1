r"""
# Expert parallelism: the experts split across processes

*Paper:* [GShard: Scaling Giant Models with Conditional Computation and Automatic Sharding](https://arxiv.org/abs/2006.16668) (Lepikhin et al., 2020)

When the $E$ experts of a layer outgrow one device, each of $P$ processes keeps $E / P$ of them,
the contiguous range $[pE/P, (p+1)E/P)$, while everything else (attention, the router) stays
data-parallel: each process routes its own tokens.  The [grouped layout](experts.md) is exactly
what the exchange needs, because rows sorted by expert are also sorted by the process that owns
the expert:

1. sort the local assignments by expert and count the rows per expert, $c_e$;
2. exchange the counts (`all_to_all_single` of $E$ numbers): process $p$ learns how many rows each
   process sends to each of its experts;
3. `all_to_all_single` sends every process its rows, split by $\sum_{e \in p} c_e$;
4. each process runs its experts over the rows it received ([`Experts`](experts.md), with gate 1
   and each row its own token);
5. a second `all_to_all_single`, with the split sizes swapped, returns every result to the process
   its token came from, where the gates and `index_add_` combine them as on one device:

$$y_t = \sum_{s : t_s = t} g_s \operatorname{FFN}_{e_s}(x_t).$$

The backward of an all-to-all is the all-to-all with the split sizes swapped; `_AllToAll` says so
to autograd, so the layer trains.  The test (`tests/moe/test_expert_parallel.py`) forks two
processes on the CPU (the `gloo` backend) and checks that outputs and gradients equal those of
one `Experts` holding all the experts.

Shapes: `t` tokens of this process, `S` its assignments, `R` rows received, `E` experts,
`P` processes, `D` width.

## Differences from GShard

GShard bounds every expert's rows by a capacity, so that the buffers of the exchange have fixed
sizes (a requirement of its compiler); here the sizes are exchanged first and may differ per step.
Combining this with `ff_capacity_factor` (Switch's dropping) is the same code with fewer
assignments.  The keyword API does not build this layer: it is a module for a training loop that
owns its process group (the [experiment](../../experiments/moe_lm.md) is data-parallel only).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .experts import Experts, group_by_expert


class _AllToAll(torch.autograd.Function):
    """`all_to_all_single` whose backward is the reverse exchange (split sizes swapped)."""

    @staticmethod
    def forward(ctx, x: Tensor, out_splits: list[int], in_splits: list[int], group) -> Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty(sum(out_splits), *x.shape[1:])
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out_splits, in_splits = ctx.splits
        back = grad.new_empty(sum(in_splits), *grad.shape[1:])
        dist.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: Tensor, out_splits: list[int], in_splits: list[int], group=None) -> Tensor:
    """Send rows `x[in_splits[p]]` to process `p`; receive `out_splits[p]` rows from each (differentiable)."""
    return _AllToAll.apply(x, out_splits, in_splits, group)


class ExpertParallel(nn.Module):
    r"""The experts of a mixture split over the processes of `group`; the interface of `Experts`.

    Args:
        local: this process's experts, `Experts` of $E / P$ experts (global numbers
            $[pE/P, (p+1)E/P)$ for process $p$).
        num_experts: $E$, over all processes.
        group: the process group (`None`: the default one).
    """

    def __init__(self, local: Experts, num_experts: int, group=None):
        super().__init__()
        self.world = dist.get_world_size(group)
        if num_experts % self.world or local.num_experts != num_experts // self.world:
            raise ValueError(f"num_experts: expected {local.num_experts} local experts times {self.world} processes, "
                             f"got num_experts={num_experts}")
        self.local, self.num_experts, self.group = local, num_experts, group

    def forward(self, x: Tensor, expert: Tensor, gate: Tensor, token: Optional[Tensor] = None) -> Tensor:
        r"""$y_t = \sum_{s: t_s = t} g_s \operatorname{FFN}_{e_s}(x_t)$ for `x` `(t, D)`, experts anywhere."""
        per = self.num_experts // self.world
        if token is None:
            # Each token's $k$ choices in turn: $t_s = \lfloor s / k \rfloor$
            token = torch.arange(len(x), device=x.device).repeat_interleave(len(expert) // max(1, len(x)))
        # 1. Sorted by expert, hence by the process that owns it
        order, counts = group_by_expert(expert, self.num_experts)  # (S,), (E,)
        token = token[order]
        # 2. How many rows each process sends to each of our experts, `(P, E/P)`
        received = torch.empty_like(counts)
        dist.all_to_all_single(received, counts, group=self.group)
        received = received.view(self.world, per)
        send = counts.view(self.world, per).sum(1).tolist()  # rows to each process
        recv = received.sum(1).tolist()  # rows from each process
        # 3. The rows to their experts' processes
        rows = all_to_all(x[token], recv, send, self.group)  # (R, D)
        # 4. Our experts on them: grouped by source, then by local expert; each row is its own token
        local_expert = torch.arange(per, device=x.device).repeat(self.world).repeat_interleave(received.flatten())
        ones = torch.ones(len(rows), dtype=gate.dtype, device=x.device)
        out = self.local(rows, local_expert, ones, torch.arange(len(rows), device=x.device))  # (R, D)
        # 5. Back to where the tokens came from, in the order they were sent
        y = all_to_all(out, send, recv, self.group)  # (S, D)
        y = y * gate[order, None].to(y.dtype)
        return torch.zeros_like(x).index_add_(0, token, y)  # (t, D)
