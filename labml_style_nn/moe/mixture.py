r"""
# The mixture-of-experts feed-forward layer

*Papers:* [Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer](https://arxiv.org/abs/1701.06538) (Shazeer et al., 2017),
[Switch Transformers](https://arxiv.org/abs/2101.03961) (Fedus et al., 2021)

A mixture of experts replaces the feed-forward layer of a block with $E$ of them and a router that
sends each token to $k$.  Parameters grow with $E$, the compute per token only with $k$.  The
layer is three steps, each on its own page:

1. **route**: score the experts and pick $k$ per token, with gates
   ([Switch](switch.md): top-1 and capacity; [Mixtral](mixtral.md): softmax top-$k$;
   [DeepSeek](deepseek.md): sigmoid scores, a balancing bias, groups);
2. **compute**: run every expert on its tokens, grouped ([experts](experts.md));
3. **combine**: $y = \sum_{e \in \mathcal{T}} g_e \operatorname{FFN}_e(x)$, plus the shared experts
   if any.

In the keyword API `ff_num_experts=E` turns every feed-forward layer of a stack into this layer
(the first `ff_first_dense` stay dense, as in DeepSeek-V3).  Each expert is the layer the `ff_*`
keywords describe (`ff_glu`, `ff_activation`, `ff_no_bias`), of hidden width `ff_expert_inner_dim`
(by default the dense width):

```python
Decoder(dim=512, depth=6, heads=8, ff_num_experts=8, ff_top_k=2)
```

**Auxiliary losses.**  In training each layer keeps its weighted load-balancing and z-losses of
the last forward pass in `aux_loss`; `moe_aux_loss(model)` sums them, and `AutoregressiveWrapper`
adds that sum to the next-token loss it returns.  Each layer also keeps the tokens per expert of
its last pass (`load`, before dropping) and the number of dropped assignments (`dropped`), for
watching the balance.

## Evidence

* Measured: at the same active parameters per token, each of the three routings beats a dense
  feed-forward layer over three seeds (Mixtral-style by 0.093 bpc, ± 0.026), and the experts even
  out over training ([`moe_lm.py`](../../experiments/moe_lm.md);
  [results](../../docs/results.md#mixture-of-experts-against-a-dense-model)).
* Invariants: causal (in training with capacity too), padding changes no real token, cached
  decoding equals the full pass, dropped tokens accounted for (`tests/moe/test_moe_stack.py`,
  `tests/moe/test_moe_routing.py`); the grouped computation equals a loop over the assignments
  (`tests/moe/test_moe_experts.py`); Mixtral, Qwen2-MoE, Qwen3-MoE and DeepSeek-V3's layers equal
  Hugging Face's (`tests/pretrained/test_mixtral.py`, `tests/pretrained/test_qwen3_moe.py`,
  `tests/pretrained/test_deepseek_moe.py`); experts split over two processes
  ([expert parallelism](expert_parallel.md)) equal one process holding them all
  (`tests/moe/test_expert_parallel.py`).

**Inference.**  In evaluation without gradients (`torch.no_grad`, `torch.inference_mode`) the
layer runs the three steps as **one function** built once from its parameters
([fused inference](fused_inference.md)): no module calls, no routing record, no capacity, no
losses, and the fastest way for the size of the step (one token, a few, many: see
[experts](experts.md#speed-on-a-cpu)).  Layers that function does not cover (another router or
experts, shared experts with extra parts) run `infer`, the same steps through the modules; tests
check both against the recorded pass.

Shapes: `b` batch, `n` tokens, `t` = `b n` tokens flattened, `E` experts, `k` experts per token,
`D` width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Optional, Union, cast

import torch
from torch import Tensor, nn

from ..checks import check_tensor
from ..feedforward.feedforward import FeedForward
from ..keywords import Keyword, declare, rule
from .deepseek import SigmoidRouter
from .experts import Experts
from .fused_inference import has_hooks, inference_step, step_key
from .mixtral import SoftmaxRouter
from .switch import capacity, load_balancing_loss, router_z_loss, within_capacity

KEYWORDS = declare(__name__, "ff",
    Keyword("num_experts", 0, "experts per feed-forward layer (0: a dense layer)", type=int, minimum=0, example=4,
            xtransformers=False),
    Keyword("top_k", 2, "experts each token is sent to", type=int, minimum=1, example=1, xtransformers=False),
    Keyword("expert_inner_dim", None, "hidden width of each routed expert (default: the dense width)", type=int,
            minimum=1, example=32, xtransformers=False),
    Keyword("first_dense", 0, "the first feed-forward layers that stay dense (DeepSeek-V3's first_k_dense_replace)",
            type=int, minimum=0, example=1, xtransformers=False))


class MixtureOfExperts(nn.Module):
    r"""Route each token to $k$ of $E$ experts and combine their outputs by the gates.

    >>> moe = MixtureOfExperts(8, router=SoftmaxRouter(8, 4, 2), experts=Experts(4, 8, 16))
    >>> moe(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 8])

    Args:
        dim: model width $D$.
        router: a `SoftmaxRouter` or `SigmoidRouter` (anything returning a `Routing`).
        experts: the routed `Experts`.
        shared: the shared experts, one feed-forward network every token goes through.
        shared_gate: a `Linear(D, 1)` whose sigmoid scales the shared experts (Qwen2-MoE).
        capacity_factor: drop assignments beyond this capacity in training (Switch); `None`: never.
        balance_loss: weight $\alpha$ of the load-balancing loss.
        z_loss: weight $\beta$ of the router z-loss.
    """

    def __init__(self, dim: int, *, router: nn.Module, experts: Experts, shared: Optional[nn.Module] = None,
                 shared_gate: Optional[nn.Module] = None, capacity_factor: Optional[float] = None,
                 balance_loss: float = 0.0, z_loss: float = 0.0):
        super().__init__()
        self.dim, self.router, self.experts, self.shared, self.shared_gate = dim, router, experts, shared, shared_gate
        self.num_experts = experts.num_experts
        self.capacity_factor, self.balance_loss, self.z_loss = capacity_factor, balance_loss, z_loss
        # What the last forward pass saw (no gradient except `aux_loss`).
        # No loss outside training: one zero, kept on the layer's device.
        self.register_buffer("no_loss", torch.zeros(()), persistent=False)
        self.aux_loss: Tensor = cast(Tensor, self.no_loss)
        self.chosen: Optional[Tensor] = None
        self.dropped = 0
        # Inference as one function where it covers the layer (`fused_inference.py`); `False`: the modules
        self.fused = True
        self._step: Optional[Union[Callable[[Tensor], Optional[tuple[Tensor, Tensor]]], Literal[False]]] = None
        self._step_key: tuple = ()

    #
    # The inference step holds this layer's tensors, so the layer builds a new one after anything
    # that may replace them: a change of mode, device or precision, loading a state dict, a copy.
    def forget_step(self) -> None:
        """Build the inference step anew at the next call (the layer also does so itself when `step_key` changes)."""
        self._step = None

    def train(self, mode: bool = True) -> MixtureOfExperts:
        if mode != self.training:
            self._step = None
        if not mode:
            # Nothing dropped and no loss outside training (`forward`'s inference step keeps them so)
            self.dropped, self.aux_loss = 0, cast(Tensor, self.no_loss)
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._step = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._step = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        # A copy (or a pickle) builds its own step: a function holding this layer's tensors cannot be either
        return {**super().__getstate__(), "_step": None}

    @property
    def load(self) -> Optional[Tensor]:
        """Assignments per expert in the last pass, before dropping, `(E,)`."""
        return None if self.chosen is None else torch.bincount(self.chosen, minlength=self.num_experts)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training or torch.is_grad_enabled()):
            step = self._step
            if step and self.fused and x.shape[-1] == self.dim:
                # The inference step ([fused inference](fused_inference.md)), reached in as few lines as it can
                # be: at a decoding step every line here costs (the chosen experts written past
                # `Module.__setattr__`, a plain attribute).  `None`: the step is stale, `infer` builds another.
                out = step(x)
                if out is not None:
                    y, self.__dict__["chosen"] = out
                    return y
            return self.infer(x)
        if x.shape[-1] != self.dim:
            check_tensor("x", x, f"(..., {self.dim})", kind="float", sizes={-1: self.dim})
        shape = x.shape
        factor = self.capacity_factor if self.training else None
        drops = factor is not None
        if drops and x.dim() == 3:
            # Position-major, so that tokens claim capacity in the order of their position (causal)
            x = x.transpose(0, 1)  # (n, b, D)
        tokens = x.reshape(-1, self.dim)  # (t, D)
        r = self.router(tokens)  # experts and gates (t, k), logits and probs (t, E)
        # The assignments $(t_s, e_s, g_s)$, each token's $k$ choices in turn
        expert, gate = r.experts.flatten(), r.gates.flatten()  # (S,)
        self.chosen, self.dropped, token = expert, 0, None  # integer indices: never part of a graph
        if factor is not None:
            # Keep the first $C$ assignments of each expert
            keep = within_capacity(expert, self.num_experts, capacity(len(expert), self.num_experts, factor))
            self.dropped = int((~keep).sum())
            token = torch.arange(len(tokens), device=x.device).repeat_interleave(r.experts.shape[1])  # (S,)
            token, expert, gate = token[keep], expert[keep], gate[keep]
        y = self.experts(tokens, expert, gate, token)  # (t, D)
        if self.shared is not None:
            s = self.shared(tokens)  # (t, D)
            if self.shared_gate is not None:
                # $\sigma(x w_s) \operatorname{FFN}^{(s)}(x)$
                s = torch.sigmoid(self.shared_gate(tokens)) * s
            y = y + s
        if self.training and torch.is_grad_enabled():
            self.aux_loss = self._aux_loss(r)
            if isinstance(self.router, SigmoidRouter):
                self.router.update_bias(r.experts)
        else:
            self.aux_loss = cast(Tensor, self.no_loss)
        if drops and x.dim() == 3:
            return y.view(x.shape).transpose(0, 1)  # (b, n, D)
        return y.view(shape)

    def infer(self, x: Tensor) -> Tensor:
        r"""`forward` in evaluation without gradients: no capacity, no losses, the same output.

        A decoding step of a small model spends more time in this layer's Python than in its
        arithmetic, so inference takes the three steps straight: route, compute (the experts pick
        their fastest way, see [experts](experts.md)), add the shared experts.  Where it covers the
        layer, one function does all three from the parameters, no module called
        ([fused inference](fused_inference.md)); `fused = False` keeps the modules.
        """
        if x.shape[-1] != self.dim:
            check_tensor("x", x, f"(..., {self.dim})", kind="float", sizes={-1: self.dim})
        step, key = self._step, step_key(self)
        if step is None or key != self._step_key:
            # The same steps as one function, built once ([fused inference](fused_inference.md)); `False`: not
            # covered.  Built anew when what it took from the layer changed (`step_key`).
            step, self._step_key = inference_step(self) or False, key
            self._step = step
        if self.dropped:
            self.dropped = 0
        if self.aux_loss is not self.no_loss:
            self.aux_loss = cast(Tensor, self.no_loss)
        out = step(x) if step and self.fused else None
        if out is not None:
            y, self.chosen = out
            return y
        return self._modular_infer(x)

    def _modular_infer(self, x: Tensor) -> Tensor:
        """`infer` through the router and experts modules."""
        tokens = x.reshape(-1, self.dim)  # (t, D)
        r = self.router(tokens)
        self.chosen = expert = r.experts.flatten()  # (S,)
        experts = self.experts
        # `Experts.infer` directly: the module call would reach it through `forward`; but a module with
        # forward hooks is called as a module, so that they run
        direct = isinstance(experts, Experts) and not has_hooks(experts)
        y = (experts.infer if direct else experts)(tokens, expert, r.gates.flatten())  # (t, D)
        if self.shared is not None:
            s = self.shared(tokens)  # (t, D)
            y = y + (s if self.shared_gate is None else torch.sigmoid(self.shared_gate(tokens)) * s)
        return y.view(x.shape)

    def _aux_loss(self, r) -> Tensor:
        r"""$\alpha \mathcal{L}_{\text{balance}} + \beta \mathcal{L}_z$ of this pass."""
        loss = torch.zeros((), device=r.logits.device)
        if self.balance_loss:
            loss = loss + self.balance_loss * load_balancing_loss(r.probs, r.experts, self.num_experts)
        if self.z_loss:
            loss = loss + self.z_loss * router_z_loss(r.logits)
        return loss


def moe_aux_loss(model: nn.Module) -> Optional[Tensor]:
    """The sum of the auxiliary losses the mixture-of-experts layers of `model` kept in their last pass.

    `None` when `model` has no such layer.
    """
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MixtureOfExperts)]
    return torch.stack([loss.to(losses[0].device) for loss in losses]).sum() if losses else None


#
# ## From the keywords
#
# `models/build.py` calls this for the feed-forward layers of a stack with `ff_num_experts > 0`.
def mixture_from_options(o) -> MixtureOfExperts:
    """The layer the `ff_*` keywords of the stack options `o` describe."""
    f = o.ff
    dense_width = f.inner_dim if f.inner_dim is not None else int(o.dim * f.mult)
    width = f.expert_inner_dim or dense_width
    if f.router == "sigmoid":
        router = SigmoidRouter(o.dim, f.num_experts, f.top_k, norm_gates=f.norm_gates, routed_scale=f.routed_scale,
                               groups=f.expert_groups, groups_top_k=f.expert_groups_top_k,
                               bias_update_rate=f.bias_update_rate)
    else:
        router = SoftmaxRouter(o.dim, f.num_experts, f.top_k, norm_gates=f.norm_gates)
    act, bias = f.activation_name(), not f.no_bias
    experts = Experts(f.num_experts, o.dim, width, glu=f.glu, activation=act, bias=bias, dropout=f.dropout)
    shared = None
    if f.num_shared_experts or f.shared_inner_dim:
        shared = FeedForward(o.dim, inner_dim=f.shared_inner_dim or f.num_shared_experts * width, glu=f.glu,
                             activation=act, bias=bias, dropout=f.dropout)
    return MixtureOfExperts(o.dim, router=router, experts=experts, shared=shared,
                            shared_gate=nn.Linear(o.dim, 1, bias=False) if f.shared_expert_gate else None,
                            capacity_factor=f.capacity_factor, balance_loss=f.balance_loss,
                            z_loss=f.router_z_loss)


#
# ## Keywords that need each other
@rule("ff")
def check_mixture_keywords(f, o) -> None:
    """Expert keywords without experts, or combinations the layer cannot run, are refused by name."""
    if not f.num_experts:
        for name in ("capacity_factor", "expert_inner_dim", "shared_inner_dim", "expert_groups_top_k"):
            if getattr(f, name) is not None:
                raise ValueError(f"ff_{name}: only meaningful with ff_num_experts > 0")
        for name, default in (("num_shared_experts", 0), ("shared_expert_gate", False), ("router", "softmax"),
                              ("first_dense", 0), ("expert_groups", 1), ("bias_update_rate", 0.0),
                              ("routed_scale", 1.0)):
            if getattr(f, name) != default:
                raise ValueError(f"ff_{name}: only meaningful with ff_num_experts > 0")
        return
    if f.top_k > f.num_experts:
        raise ValueError(f"ff_top_k: expected at most ff_num_experts ({f.num_experts}), got {f.top_k}")
    if f.post_act_ln:
        raise ValueError("ff_post_act_ln and ff_num_experts: the experts have no post-activation norm; choose one")
    if f.router != "sigmoid":
        for name, default in (("expert_groups", 1), ("bias_update_rate", 0.0)):
            if getattr(f, name) != default:
                raise ValueError(f"ff_{name}: only meaningful with ff_router='sigmoid' (DeepSeek-V3)")
    if f.num_experts % f.expert_groups:
        raise ValueError(f"ff_expert_groups: expected a divisor of ff_num_experts ({f.num_experts}), "
                         f"got {f.expert_groups}")
    if f.expert_groups_top_k is not None and f.expert_groups_top_k > f.expert_groups:
        raise ValueError(f"ff_expert_groups_top_k: expected at most ff_expert_groups ({f.expert_groups}), "
                         f"got {f.expert_groups_top_k}")
    if f.shared_expert_gate and not (f.num_shared_experts or f.shared_inner_dim):
        raise ValueError("ff_shared_expert_gate: only meaningful with ff_num_shared_experts > 0")
