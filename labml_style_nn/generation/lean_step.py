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

Measured on the converted LLaMA of the [benchmark](../../experiments/benchmarks/hf_llama.md); the
tests (`tests/generation/test_lean_step.py`) check that generation with and without it gives
identical logits and tokens, and that stacks with any extra step stay on the general path.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

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


def lean_step(layers: Any, x: Tensor, key_mask: Optional[Tensor], shared, cache,
              hiddens: list[Tensor], memory_inputs: list[Tensor]) -> Tensor:
    """The stack's blocks on one new token `x` `(b, 1, D)`; returns the stream before the final norm.

    `hiddens` receives the stream before each attention layer's pre-norm and `memory_inputs` what its
    keys read, as the general path records them.
    """
    for block, block_cache in zip(layers.blocks, cache.blocks, strict=True):
        h = block.pre_norm(x)  # (b, 1, D)
        if block.kind == "a":
            hiddens.append(x)
            memory_inputs.append(h)
            # $x + \operatorname{Attn}(\operatorname{Norm}(x))$ over the cached keys
            out = block.fn._cached_step(h, key_mask, shared, block_cache.attn)
        else:
            # $x + \operatorname{FF}(\operatorname{Norm}(x))$
            out = block.fn(h)
        x = out + x  # the order of `Residual`: branch + residual
    return x
