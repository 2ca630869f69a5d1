r"""
# A lean one-token step for plain pre-norm stacks

At batch 1 a decoding step of a small model is a few hundred small operations, and the Python
around them costs as much as the arithmetic: each block goes through the general path of the
stack, which asks at every step whether this block has hyper-connections, a token shift,
LayerScale, a sandwich norm, ReZero, a value residual, an XL memory, ... and passes a dozen
arguments down to the sublayer, which checks its inputs again.  For the most common stack (LLaMA,
Mistral, Qwen, GPT-style pre-norm decoders) every answer is "no", and the step is just

$$x \leftarrow x + \operatorname{Attn}(\operatorname{Norm}(x)), \qquad
x \leftarrow x + \operatorname{FF}(\operatorname{Norm}(x))$$

for each layer, with the attention's own cached step (one projection for $q, k, v$, one rotation,
the cache written in place, the fused kernel; see [making attention fast](../attention/fast_attention.md)).

`lean_blocks(layers)` answers the questions once per generation (the answer is kept on the cache,
which lives for one generation); `lean_step` is the loop above.  Every operation on the numbers is
the one the general path runs, in the same order, so the two give identical results; the only
difference is the Python that decides what to run.  The stack takes this path only for a one-token
step with a cache and no per-call extras (memories, a context, a condition vector, additional keys,
attention records), at inference.

**The plan: operators, not modules.**  Once the questions are answered, what is left is mostly
calling modules, and for one token a module call costs about as much as the operator inside it
(on the benchmark's CPU about 3 µs for `nn.Module.__call__` against 2 µs for `F.linear` of a
$16 \times 16$ layer).  A LLaMA layer's step called 12 modules: the two norms; in the attention the
projections of $q, k, v$ and of the output, and the dropout after it; the feed-forward itself, its
gated unit with that unit's projection and activation, the output projection, and two dropouts
that return their input at inference.  `StepPlan` looks at each block once per generation and keeps, for the modules it
knows, the functional call that their `forward` makes on the same parameters; a module it does not
know, or one with a hook, stays a module (and its hooks run).

Measured on the converted models of the [benchmark](../../experiments/benchmarks/hf_llama.md)
(4 layers of width 256, vocabulary 1000, greedy generation of 128 tokens, CPU time, one thread,
against `transformers`' `generate`): the lean loop over modules gave 0.95x-1.17x for the LLaMA
and 1.39x for the GPT-2, the plan 1.61x and 1.71x ([benchmarks](../../docs/benchmarks.md)).  Tests
(`tests/generation/test_lean_step.py`): generation with and without the lean step gives identical
logits and tokens (LLaMA-, GPT-2- and ALiBi-style stacks, a mixture of experts), stacks with any
extra step stay on the general path, the plan holds operators for plain modules and keeps a module
with a hook (whose hook then runs at every step) or a dropout left in training mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks

from ..feedforward.activations import GELUTanh
from ..feedforward.feedforward import FeedForward
from ..feedforward.glu import GatedLinearUnit
from ..norms.layer_norm import LayerNorm
from ..norms.rms_norm import RMSNorm, constant_tensor, rms_norm_eager
from ..residual.residual import Residual

# A block whose sublayer's output is simply added: nothing between the norm, the sublayer and the sum.
_NOT_PLAIN = ("post_norm", "branch_norm", "branch_scale", "shift", "layer_scale")


def _plain_block(block: Any) -> bool:
    if block.kind not in ("a", "f") or type(block.residual) is not Residual or block.step != 1.0:
        return False
    if block.pre_norm is None or getattr(block.pre_norm, "needs_condition", False):
        return False
    if any(getattr(block, name) is not None for name in _NOT_PLAIN):
        return False
    fn = block.fn
    # Self-attention that takes its own one-token shortcut (`Attention._cached_step`)
    return block.kind == "f" or (fn._plain_self_attention and not fn._per_layer_steps)


def lean_blocks(layers: Any) -> bool:
    """Whether every block of the stack `layers` is plain and the stack adds nothing between them."""
    o = layers.options
    stack_extras = (layers.streams, layers.unet_skips, layers.integrations, layers.input_injection,
                    layers.reversible_pairs)
    if any(extra is not None for extra in stack_extras) or layers.needs_condition:
        return False
    if o.residual_attn or o.cross_residual_attn or o.add_value_residual or o.softclamp_output:
        return False
    return all(_plain_block(block) for block in layers.blocks)


def lean_applies(layers: Any, cache, n: int) -> bool:
    """Whether this step of `n` tokens with `cache` may take the lean path (decided once per cache)."""
    if n != 1 or cache is None or layers.training:
        return False
    verdict: Optional[bool] = getattr(cache, "lean", None)
    if verdict is None:
        verdict = lean_blocks(layers)
        cache.lean = verdict
    return verdict


#
# ## The step's plan: each module's function, looked up once
#
# Calling a module costs more than the operator inside it when the operator works on one token:
# `nn.Module.__call__` looks for hooks, `RMSNorm` checks its input, `FeedForward` calls five
# modules, two of them dropouts that return their input at inference.  `plan_step` looks at each
# block once per generation and, for the modules it knows (a linear layer, RMSNorm and LayerNorm,
# the common activations, the feed-forward with or without a gate), keeps the functional call that
# the module's `forward` makes, with the same parameters, in the same order: the same numbers.
# Anything else, or any module with a hook, is called as a module.  The plan lives on the cache,
# for one generation: parameters replaced (not changed in place) during it would not be seen.


def _hookless(module: nn.Module) -> bool:
    """No forward hook on `module` or on every module: its `forward` is all that a call runs."""
    return not (module._forward_hooks or module._forward_pre_hooks or module_hooks._global_forward_hooks
                or module_hooks._global_forward_pre_hooks)


def _inactive(dropout: nn.Module) -> bool:
    """A dropout that returns its input: off (evaluation) or of rate 0."""
    return type(dropout) is nn.Dropout and (not dropout.training or dropout.p == 0) and _hookless(dropout)


def linear_fn(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """`nn.Linear`'s own `F.linear` on its parameters, or the module."""
    if type(module) is nn.Linear and _hookless(module):
        weight, bias = module.weight, module.bias
        return lambda x: F.linear(x, weight, bias)
    return module


def activation_fn(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The functional form of the common activation modules, or the module."""
    if not _hookless(module):
        return module
    if type(module) is nn.SiLU and not module.inplace:
        return F.silu
    if type(module) is nn.GELU:
        approximate = module.approximate
        return lambda x: F.gelu(x, approximate=approximate)
    if type(module) is GELUTanh:
        return lambda x: F.gelu(x, approximate="tanh")
    if type(module) is nn.ReLU and not module.inplace:
        return F.relu
    return module


def norm_fn(module: nn.Module, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """The norm's functional form on its parameters for inputs of `dtype`, or the module."""
    if not _hookless(module):
        return module
    if type(module) is RMSNorm and dtype == module.gamma.dtype == torch.float32 and not module.unit_offset:
        # `RMSNorm.forward`'s float32 branch (its input check holds: the stream has the norm's width),
        # its constants looked up here (the plan is not used while compiling)
        gamma = module.gamma
        eps, dim = constant_tensor(module.eps, gamma), constant_tensor(gamma.shape[0], gamma)
        return lambda x: rms_norm_eager(x, gamma, eps, dim)
    if isinstance(module, nn.LayerNorm) and type(module) in (nn.LayerNorm, LayerNorm) \
            and not getattr(module, "unit_offset", 0):
        shape, weight, bias, eps = module.normalized_shape, module.weight, module.bias, module.eps
        return lambda x: F.layer_norm(x, shape, weight, bias, eps)
    return module


def ff_fn(ff: nn.Module) -> Callable[[Tensor], Tensor]:
    """`FeedForward.forward` without the modules around its operators (inactive dropouts and the
    identity dropped), or the module."""
    if type(ff) is not FeedForward or not _hookless(ff) or type(ff.post_act_norm) is not nn.Identity \
            or not (_inactive(ff.dropout) and _inactive(ff.sublayer_dropout)) or not _hookless(ff.proj_in):
        return ff
    proj_out = linear_fn(ff.proj_out)
    proj_in = ff.proj_in
    if type(proj_in) is GatedLinearUnit and proj_in.mult_bias is None and proj_in.up_softclamp is None:
        proj, act = linear_fn(proj_in.proj), activation_fn(proj_in.act)

        def glu(x: Tensor) -> Tensor:
            # $(\phi(x W) \odot x V) W_2$, as `GatedLinearUnit` and `FeedForward` compute it
            value, gate = proj(x).chunk(2, dim=-1)
            return proj_out(act(gate) * value)
        return glu
    if type(proj_in) is nn.Sequential and len(proj_in) == 2:
        proj, act = linear_fn(proj_in[0]), activation_fn(proj_in[1])
        return lambda x: proj_out(act(proj(x)))  # $\phi(x W_1 + b_1) W_2 + b_2$
    return ff


class StepPlan:
    """Per block: the pre-norm, and the attention's projections or the feed-forward, as functions; the final norm."""

    def __init__(self, layers: Any, dtype: torch.dtype):
        self.dtype = dtype
        self.final_norm = norm_fn(layers.final_norm, dtype)
        self.blocks: list[tuple[Any, Callable, Any]] = []
        for block in layers.blocks:
            norm = norm_fn(block.pre_norm, dtype)
            fn = block.fn
            if block.kind == "a":
                # `Attention._cached_step` with its two projections (and the inactive dropout after
                # `to_out`) as functions, when they are plain
                to_out = linear_fn(fn.to_out) if _inactive(fn.sublayer_dropout) else None
                self.blocks.append((block, norm, (linear_fn(fn.to_qkv), to_out)))
            else:
                self.blocks.append((block, norm, ff_fn(fn)))


def plan_step(layers: Any, cache, dtype: torch.dtype) -> StepPlan:
    """The plan of `layers` kept on `cache` (made at its first lean step, or again for another dtype)."""
    plan: Optional[StepPlan] = getattr(cache, "lean_plan", None)
    if plan is None or plan.dtype != dtype:
        plan = cache.lean_plan = StepPlan(layers, dtype)
    return plan


def lean_step(layers: Any, x: Tensor, key_mask: Optional[Tensor], shared, cache,
              hiddens: list[Tensor], memory_inputs: list[Tensor]) -> Tensor:
    """The stack's blocks and its final norm on one new token `x` `(b, 1, D)`.

    `hiddens` receives the stream before each attention layer's pre-norm and `memory_inputs` what its
    keys read, as the general path records them.
    """
    plan = plan_step(layers, cache, x.dtype)
    for (block, norm, fn), block_cache in zip(plan.blocks, cache.blocks, strict=True):
        h = norm(x)  # (b, 1, D)
        if block.kind == "a":
            hiddens.append(x)
            memory_inputs.append(h)
            # $x + \operatorname{Attn}(\operatorname{Norm}(x))$ over the cached keys
            out = block.fn._cached_step(h, key_mask, shared, block_cache.attn, *fn)
        else:
            # $x + \operatorname{FF}(\operatorname{Norm}(x))$
            out = fn(h)
        x = out + x  # the order of `Residual`: branch + residual
    return plan.final_norm(x)
