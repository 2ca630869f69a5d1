r"""
# The mixture-of-experts layer for inference, as one function

*Papers:* [Mixtral of Experts](https://arxiv.org/abs/2401.04088) (Jiang et al., 2024),
[DeepSeek-V3 Technical Report](https://arxiv.org/abs/2412.19437) (DeepSeek-AI, 2024),
[Switch Transformers](https://arxiv.org/abs/2101.03961) (Fedus et al., 2021)

The [mixture-of-experts layer](mixture.md) is written as three modules, each on its own page: a
router ([Mixtral](mixtral.md), [DeepSeek](deepseek.md), [Switch](switch.md)) returns a routing
record, the [experts](experts.md) pick a way to compute for the size of the step, and the layer adds
the shared experts.  That is the right shape to read and to train.  For inference on a CPU it costs:
a layer of Mixtral's shape at width 128 spends a third of a 256-token forward outside its two matrix
products, in a dozen small operators and the Python between them (module calls, the routing record,
helpers, decisions), each slower than it would be alone because the experts' weights have just gone
through the cache.

This page is **the same computation written as one function**, the way lean generation code
(gpt-fast, a hand-written decoding step) writes a layer it only ever runs forward: it reads the
layer's parameters directly, calls no module, builds no record, and runs the fewest operators each
router and each size of step needs.  Nothing new is computed:

$$y_t = \sum_{e \in \mathcal{T}_t} g_{t,e} \operatorname{FFN}_e(x_t)
\;+\; \big[\sigma(x_t w_s)\big]\operatorname{FFN}^{(s)}(x_t),$$

with $\mathcal{T}_t$ and $g$ as each router defines them:

| router | choice $\mathcal{T}_t$ | gates $g$ | page |
|---|---|---|---|
| softmax, renormalised (Mixtral, $k > 1$) | $\operatorname{TopK}(l_t, k)$ | softmax over the chosen logits | [Mixtral](mixtral.md) |
| softmax, not renormalised (Switch, Qwen2-MoE) | $\operatorname{TopK}(p_t, k)$ | $p_{t,e}$, $p = \operatorname{softmax}(l)$ | [Switch](switch.md) |
| sigmoid (DeepSeek-V3) | $\operatorname{TopK}(s_t + b, k)$, within the best groups | $\lambda s_{t,e} / \sum_{\mathcal{T}_t} s$ | [DeepSeek](deepseek.md) |

and the experts computed one of the four ways of the [experts page](experts.md#speed-on-a-cpu),
chosen by the same size rules: one token loops over its $k$ experts, a handful of assignments
gathers its experts' weights, a step of a few tokens runs every expert densely, anything larger is
sorted and grouped (`grouped_mm`).

**How the layer uses it.**  `inference_step(layer)` reads everything once (the parameters, the
router's kind and constants, the activation) and returns a function of the input alone, as a
compiled decoding step would; the layer keeps it and calls it from `forward` whenever it runs
without gradients in evaluation.  It builds a new one after anything that may replace a tensor the
step holds: a change of mode (`train`, `eval`), of device or precision (`to`, `double`), loading a
state dict, a copy or a pickle; and at every call it compares what it took from the layer
(`step_key`: which tensors, `top_k`, the experts' limits), so a parameter replaced by hand or a new
setting builds a new step too.  `layer.fused = False` keeps the modules.

**What it covers** (`fused_covers`): a `SoftmaxRouter` or `SigmoidRouter` (groups, bias and scale
included), routed `Experts` (any activation, with or without biases and gating), and shared experts
that are a plain feed-forward network (a linear map, an activation or a gated unit, a linear map),
with or without the sigmoid gate of Qwen2-MoE.  No capacity is involved: capacity applies in
training only, so a Switch layer with `ff_capacity_factor` is covered in evaluation too.  **What
falls back** to the modular `infer`: another kind of router or experts (a user's own module, expert
parallelism), shared experts with extra parts (a post-activation norm, soft clamping, a learned GLU
multiplier), a layer in training mode (where no-grad passes drop by capacity and use dropout), and
a layer with a forward hook on any of its parts (the router, its projection, the experts, the
shared experts) or a global one: the step calls no module, so the hook would not run.  The step
looks at the hooks at every call, so one registered after it was built is seen too; once the
hooks are removed the step comes back.
Tests check the step against the modular layer for each router and each way of computing, with an
expert that gets no tokens, and check which way ran (`tests/moe/test_fused_inference.py`).

**What it gains** on the [benchmark](../../experiments/benchmarks/moe.md)'s Mixtral layers against
`transformers`' `grouped_mm` block (one thread, CPU time; the figures are on the
[benchmarks page](../../docs/benchmarks.md#the-mixture-of-experts-layer-against-hugging-faces-mixtral)):
at width 128 the 8-token decoding step went from 1.21-1.26x to 1.40-1.44x, the 1-token step from
2.3-2.4x to 3.0-3.1x, the 256-token forward from 1.38-1.39x to 1.41-1.43x (short of the 1.5x goal
by about 5%).  The forward's two grouped products are about
0.7 ms of its 1.05 ms; the rest is the router, the sort, the gathers, the activation and the
combination, each an operator `transformers` runs too.

## Differences from the modular layer

* No routing record: `probs` and the logits are not kept, and the sigmoid router skips the
  normalised scores that only the balance loss reads.  The layer still records which experts were
  chosen (`MixtureOfExperts.chosen`, `load`).
* The dense way runs up to $t E P \le 2^{23}$ multiply-adds, twice the experts' limit (below);
  like the experts, never in float16, where an expert that got no token could overflow and give
  $0 \cdot \infty$.
* The grouped way sorts without keeping ties in order (the order of rows within an expert's block
  changes nothing), and combines by putting the rows back in the order of the assignments (the
  inverse permutation, one gather) and adding each token's $k$ rows with their gates,
  $y_t = \sum_i g_{t,i} Y_{t,i}$: at width 128 over 256 tokens 25 to 35 µs less than scaling the
  rows and adding them into their tokens with `index_add_`.
* So the outputs agree with the modular layer's to float32 rounding, not bit for bit (the tests
  allow $10^{-6}$).

Shapes: `t` tokens, `k` experts per token, `S` = `t k` assignments, `E` experts, `D` width, `H`
hidden width of one expert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import (
    _global_forward_hooks,
    _global_forward_pre_hooks,
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from ..feedforward.feedforward import FeedForward
from ..feedforward.glu import GatedLinearUnit
from .deepseek import SigmoidRouter, group_limited_top_k
from .experts import _GROUPED_MM, Experts, _grouped_mm_pays, grouped_linear
from .mixtral import SoftmaxRouter

if TYPE_CHECKING:
    from .mixture import MixtureOfExperts


def fused_covers(layer: MixtureOfExperts) -> bool:
    """Whether `inference_step` can compute this `MixtureOfExperts` (otherwise the modular `infer` runs)."""
    if layer.training or type(layer.router) not in (SoftmaxRouter, SigmoidRouter):
        return False
    if any(hook_dicts(layer)):
        # Forward hooks on a part of the layer run only if that part is called: the modules do
        return False
    if type(layer.experts) is not Experts:
        return False
    return layer.shared is None or _plain_feedforward(layer.shared) is not None


def hook_dicts(layer: nn.Module) -> list[dict]:
    """The forward hooks and pre-hooks of every module inside `layer`, and PyTorch's global ones (empty: none).

    The step calls no module, so a hook on the router, its projection, the experts or the shared
    experts would not run; while any is registered the layer runs its modules instead.  The step
    holds these dictionaries and looks at them at every call: a hook registered later is seen too.
    """
    parts = [m for m in layer.modules() if m is not layer]
    return [*(m._forward_hooks for m in parts), *(m._forward_pre_hooks for m in parts),
            _global_forward_hooks, _global_forward_pre_hooks]


def has_hooks(module: nn.Module) -> bool:
    """Whether calling `module` would run forward hooks (its own or PyTorch's global ones)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or _global_forward_hooks
                or _global_forward_pre_hooks)


def _plain_feedforward(ff: nn.Module) -> Optional[tuple[Tensor, Optional[Tensor], nn.Module, bool, Tensor,
                                                      Optional[Tensor]]]:
    r"""`(W_1, b_1, act, gated, W_2, b_2)` of a feed-forward network with nothing else in it; `None` otherwise."""
    if type(ff) is not FeedForward or not isinstance(ff.post_act_norm, nn.Identity):
        return None
    proj_in = ff.proj_in
    if type(proj_in) is GatedLinearUnit and proj_in.mult_bias is None and proj_in.up_softclamp is None:
        linear, act, gated = proj_in.proj, proj_in.act, True
    elif type(proj_in) is nn.Sequential and len(proj_in) == 2 and type(proj_in[0]) is nn.Linear:
        linear, act, gated = cast(nn.Linear, proj_in[0]), proj_in[1], False
    else:
        return None
    return linear.weight, linear.bias, act, gated, ff.proj_out.weight, ff.proj_out.bias


def _activate(h: Tensor, act: nn.Module, silu: bool, hidden: int, gated: bool) -> Tensor:
    r"""$\phi(h)$, or $\phi(h_g) \odot h_u$ over the halves of `h`; in place where $\phi$ is SiLU (`silu`)."""
    if not gated:
        return F.silu(h, inplace=True) if silu else act(h)
    value, g = h.narrow(-1, 0, hidden), h.narrow(-1, hidden, hidden)
    return (F.silu(g, inplace=True) if silu else act(g)).mul_(value)


#
# ### The step, built once per layer
#
# Everything the step needs is read from the layer here, once; inside the step only the input
# changes (see "How the layer uses it" above).
#
# The size rules are the [experts'](experts.md#speed-on-a-cpu), but one: the dense way is taken up
# to $t E P \le 2^{23}$ multiply-adds, twice the experts' limit.  Written as one function the
# grouped way keeps its sort, gathers and scatter while the dense way has none, which moves the
# point where they cross.  Measured with this step both ways (the benchmark's layers, one thread,
# thread CPU time, two runs each): at $6.3$M multiply-adds, 8 tokens at width 128, dense 264 to
# 273 µs against 286 to 301 grouped; but 32 tokens at width 64, also $6.3$M, dense 148 to 157 µs
# against 142 to 150, the price of one simple rule; at $12.6$M (16 tokens at width 128) grouped,
# 334 to 341 µs against 358 to 361.
dense_limit = 1 << 23


# Parameters, buffers and submodules set on any module since this page was imported, counted by
# PyTorch's global registration hooks (one integer added to per assignment): a step built before the
# count moved may hold a tensor that has since been replaced.
_registrations = [0]


def _count_registration(*_args) -> None:
    _registrations[0] += 1


register_module_parameter_registration_hook(_count_registration)
register_module_buffer_registration_hook(_count_registration)
register_module_module_registration_hook(_count_registration)


def step_key(layer: MixtureOfExperts) -> tuple:
    """What a step takes from `layer` other than tensor values: the tensors, and the settings.

    A step built from `layer` checks the same at every call, and `infer` compares it to build a new
    step (or find the layer covered) when it changed: a parameter, buffer or submodule replaced by
    hand (anywhere: the count of registrations moved), `top_k` and the experts' limits set anew, or
    a forward hook registered on a part of the layer or removed (`hook_dicts`).  In-place changes to
    the tensors need nothing: the step reads the tensors themselves.
    """
    router, experts = layer.router, layer.experts
    return (_registrations[0], getattr(router, "top_k", None), getattr(experts, "grouped_mm", None),
            getattr(experts, "gather_limit", None), any(hook_dicts(layer)))


def inference_step(layer: MixtureOfExperts, *, dense: int = dense_limit,
                   gather: Optional[int] = None) -> Optional[Callable[[Tensor], Optional[tuple[Tensor, Tensor]]]]:
    r"""The no-grad forward of `layer` as one function `x -> (y, chosen)`; `None` where `fused_covers` says no.

    The function returns `None` instead when what it took from the layer changed since it was built
    (`step_key`): the caller then builds a new one.
    `dense`, `gather`: the sizes up to which the dense and the gathered ways run (`gather=None`:
    the experts' `gather_limit`).
    """
    if not fused_covers(layer):
        return None
    router = cast(Union[SoftmaxRouter, SigmoidRouter], layer.router)
    experts = cast(Experts, layer.experts)
    # The router: $W_r$, its kind and constants
    w_r, k = router.proj.weight, router.top_k
    sigmoid, norm_gates = isinstance(router, SigmoidRouter), router.norm_gates
    if isinstance(router, SigmoidRouter):
        bias, scale = router.expert_bias, router.routed_scale
        groups, groups_top_k = router.groups, router.groups_top_k
    else:
        # (only the sigmoid router has a bias)
        bias, scale, groups, groups_top_k = cast(Tensor, None), 1.0, 1, 1
    # The experts
    E, D, hidden, glu, act = experts.num_experts, experts.dim, experts.hidden, experts.glu, experts.act
    silu = type(act) is nn.SiLU
    w_in, w_out, b_in, b_out, ids = experts.w_in, experts.w_out, experts.b_in, experts.b_out, experts.expert_ids
    # (a limit given here is the step's own; one taken from the experts is checked at every call)
    P, gather_taken = experts.expert_numbers, gather is None
    gather = experts.gather_limit if gather is None else gather
    grouped_choice, grouped_mm = experts._grouped_choice, experts.grouped_mm
    # The shared experts, if any
    shared = None if layer.shared is None else _plain_feedforward(layer.shared)
    shared_silu = shared is not None and type(shared[2]) is nn.SiLU
    shared_gate = cast(Optional[nn.Linear], layer.shared_gate)
    w_s = None if shared_gate is None else shared_gate.weight
    b_s = None if shared_gate is None else shared_gate.bias
    # The device's kind, for the grouped way's choice; what the step took, to see that it still holds
    device, registrations, hooks = w_in.device, _registrations[0], hook_dicts(layer)

    def step(x: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        # `step_key` at every call, read from the router and experts the step holds (cheaper than from
        # the layer: `layer.router` goes through `Module.__getattr__`)
        if (_registrations[0] != registrations or router.top_k != k or experts.grouped_mm is not grouped_mm
                or (gather_taken and experts.gather_limit != gather) or any(hooks)):
            return None
        tokens = x.reshape(-1, D)  # (t, D)
        t = len(tokens)
        S = t * k
        # 1. Route.
        # $l = x W_r$
        logits = F.linear(tokens, w_r)  # (t, E)
        if sigmoid:
            # $s = \sigma(l)$; $\mathcal{T} = \operatorname{TopK}(s + b)$ within the best groups
            scores = logits.float().sigmoid()  # (t, E)
            if groups_top_k < groups:
                chosen = group_limited_top_k(scores + bias, k, groups, groups_top_k)  # (t, k)
            else:
                chosen = (scores + bias).topk(k, dim=-1).indices  # (t, k)
            gate = scores.gather(1, chosen)  # (t, k)
            if norm_gates:
                # $s_e / \sum_{\mathcal{T}} s$
                gate = gate / (gate.sum(dim=-1, keepdim=True) + 1e-20)
            if scale != 1.0:
                gate = gate * scale  # $\lambda$
        elif norm_gates:
            # Softmax over the chosen logits only (Mixtral)
            top, chosen = logits.topk(k, dim=-1)  # (t, k)
            gate = top.softmax(dim=-1, dtype=torch.float32)
        else:
            # $p = \operatorname{softmax}(l)$, the chosen $p_e$ as they are (Switch)
            gate, chosen = logits.softmax(dim=-1, dtype=torch.float32).topk(k, dim=-1)  # (t, k)
        expert = chosen.flatten()  # (S,)
        # 2. Compute the experts, the way the size of the step asks.
        if E <= S and t * E * P <= dense and tokens.dtype is not torch.float16:
            # Every expert on every token; $G_{te}$ the gate where token $t$ chose $e$, else 0
            G = tokens.new_zeros(t, E).scatter_add_(1, chosen, gate.to(tokens.dtype))  # (t, E)
            h = torch.bmm(tokens.expand(E, t, D), w_in)  # (E, t, width)
            if b_in is not None:
                h += b_in[:, None]
            h = _activate(h, act, silu, hidden, glu)  # (E, t, H)
            y = torch.bmm(h, w_out)  # (E, t, D)
            if b_out is not None:
                y += b_out[:, None]
            # $\sum_e G_{te} y_{et}$
            y = torch.bmm(G.unsqueeze(1), y.transpose(0, 1)).view(t, D)  # (t, D)
        elif t == 1 and tokens.device.type == "cpu":
            # One token: its $k$ experts' weights read where they lie
            y = tokens.new_zeros(1, D)
            for i, e in enumerate(expert.tolist()):
                h = torch.mm(tokens, w_in[e])  # (1, width)
                if b_in is not None:
                    h += b_in[e]
                h = _activate(h, act, silu, hidden, glu)  # (1, H)
                g = gate[0, i:i + 1].to(tokens.dtype)  # (1,)
                if b_out is not None:
                    y.add_(b_out[e] * g)
                # $y \mathrel{+}= (g_i h) W^{(e_i)}_2$
                y.addmm_(h.mul_(g), w_out[e])
        elif 0 < t and S * P <= gather:
            # A handful of assignments: their experts' weights gathered, one batched product each
            h = torch.bmm(tokens[:, None, :].expand(t, k, D).reshape(S, 1, D), w_in.index_select(0, expert))
            if b_in is not None:
                h = h + b_in[expert, None]
            h = _activate(h, act, silu, hidden, glu)  # (S, 1, H)
            y = torch.bmm(h, w_out.index_select(0, expert)).view(t, k, D)  # (t, k, D)
            if b_out is not None:
                y = y + b_out[chosen]
            # $\sum_i g_{t,i} y_{t,i}$
            y = torch.bmm(gate[:, None, :].to(y.dtype), y).view(t, D)  # (t, D)
        else:
            # Sorted by expert (the order within a block does not matter); block $e$ ends after its last row
            sorted_expert, order = torch.sort(expert)  # (S,)
            # Where each assignment's row will be in the sorted order (the inverse permutation), found
            # now, among the small operators, rather than after the products have gone through the cache
            back = torch.empty_like(order).scatter_(0, order, torch.arange(S, device=device))  # (S,)
            ends = torch.searchsorted(sorted_expert, ids, right=True, out_int32=True)  # (E,)
            token = order // k  # (S,)
            grouped = grouped_mm
            if grouped is None:
                # Decided once per kind of input, as the experts do
                key = (tokens.dtype, device.type)
                grouped = grouped_choice.get(key)
                if grouped is None:
                    grouped = grouped_choice[key] = _grouped_mm_pays(tokens, (D, w_in.shape[2], hidden), False)
            mm = _GROUPED_MM if grouped else None
            # $X_s = x_{t_s}$; $H = \phi(X W^{(e)}_1)$; $Y = H W^{(e)}_2$, block by block
            xs = tokens.index_select(0, token)  # (S, D)
            h = mm(xs, w_in, offs=ends) if mm else grouped_linear(xs, w_in, None, grouped_mm=False,
                                                                   ends=ends)  # (S, width)
            if b_in is not None:
                h += b_in[sorted_expert]
            h = _activate(h, act, silu, hidden, glu)  # (S, H)
            y = mm(h, w_out, offs=ends) if mm else grouped_linear(h, w_out, None, grouped_mm=False,
                                                                  ends=ends)  # (S, D)
            if b_out is not None:
                y += b_out[sorted_expert]
            # Back in the order of the assignments, each token's $k$ rows together
            y = y.index_select(0, back).view(t, k, D)  # (t, k, D)
            # $\sum_i g_{t,i} Y_{t,i}$, one multiply-add per expert of a token
            g = gate.to(y.dtype)  # (t, k)
            out = y[:, 0] * g[:, :1]  # (t, D)
            for i in range(1, k):
                out.addcmul_(y[:, i], g[:, i:i + 1])
            y = out
        # 3. The shared experts.
        if shared is not None:
            w1, b1, shared_act, gated, w2, b2 = shared
            s = F.linear(tokens, w1, b1)  # (t, H_s) or (t, 2 H_s)
            s = F.linear(_activate(s, shared_act, shared_silu, w2.shape[1], gated), w2, b2)  # (t, D)
            if w_s is not None:
                # $\sigma(x w_s) \operatorname{FFN}^{(s)}(x)$
                s = torch.sigmoid(F.linear(tokens, w_s, b_s)) * s
            y = y + s
        return y.view(x.shape), expert

    return step
