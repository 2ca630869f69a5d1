r"""
# The stack's inputs: checked at the door, routed to the layers

A forward pass of the [layer stack](layers.md) takes more than embeddings: a padding mask, a
context for cross-attention, Transformer-XL memories with their masks, a query-by-key mask, keys
and values to prepend to some layers, residuals for the context.  Two things happen to them before
any block runs, and this page holds both.

1. **Checks.**  Each argument is checked against the stack's shape once, and a bad one is a
   `ValueError` that names the argument and the shape expected, instead of an error deep inside a
   matmul of the third layer.
2. **Routing.**  An argument given for the stack as a whole becomes one value per layer: a memory
   mask joined to the tokens' mask, a boolean mask turned into an additive bias of the scores, the
   last $L'$ of a list of key/value pairs sent to the top $L'$ self-attention layers.

Keys with a Transformer-XL memory are the $m$ memory tokens followed by the $n$ new ones, so a
layer's key mask is

$$\text{mask}^{\text{keys}} = [\,\text{mem\_mask};\ \text{mask}\,] \in \{0, 1\}^{b \times (m + n)},$$

and a boolean query-by-key mask $M$ enters the scores as the bias

$$B_{ij} = \begin{cases} 0 & M_{ij} \\ -\infty & \text{otherwise} \end{cases}$$

(the most negative half of the float range stands in for $-\infty$, so that a sum with another
bias cannot overflow).

Shapes: `b` batch, `n` tokens, `D` model width, `m` memory tokens, `j` context tokens, `h` heads,
`a` prepended keys, `L` layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from ..generation.intermediates import LayerIntermediates, cached_kvs

if TYPE_CHECKING:
    from .layers import AttentionLayers


#
# ## Checks
#
# Errors name the argument and the expected shape, instead of failing deep inside a matmul.
def check_stack_inputs(stack: AttentionLayers, x, mask, context, context_mask, mems, cache=None) -> None:
    """Raise `ValueError`, naming the argument, for an input of the wrong type or shape for `stack`."""
    if not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != stack.dim or not x.is_floating_point():
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x: expected a float tensor of shape (batch, seq_len, {stack.dim}), got {got}")
    b, n = x.shape[:2]
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (b, n)):
        raise ValueError(f"mask: expected a bool tensor of shape ({b}, {n}), "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    if stack.has_cross:
        cross = stack.options.cross_attn
        dim_context = (cross.dim_context if cross is not None else None) or stack.options.dim_context or stack.dim
        if context is None:
            raise ValueError("context: this stack has cross-attention layers and needs "
                             f"context of shape (batch, context_len, {dim_context})")
        if context.dim() != 3 or context.shape[0] != b or context.shape[-1] != dim_context:
            raise ValueError(f"context: expected shape ({b}, context_len, {dim_context}), "
                             f"got {tuple(context.shape)}")
        if context_mask is not None and (context_mask.dtype != torch.bool
                                         or tuple(context_mask.shape) != tuple(context.shape[:2])):
            raise ValueError(f"context_mask: expected a bool tensor of shape {tuple(context.shape[:2])}, "
                             f"got {context_mask.dtype} {tuple(context_mask.shape)}")
    elif context is not None:
        raise ValueError("context: this stack has no cross-attention layers (set cross_attend=True)")
    if stack.options.mv_split_residual and stack.causal and (mems is not None or cache is not None):
        # The causal token mean reads every earlier token (`residual/mv_split_residual.py`).
        raise ValueError(f"{'mems' if mems is not None else 'cache'} and mv_split_residual cannot be combined: "
                         "the causal token mean needs every earlier token's stream, which neither keeps")
    if mems is not None and stack.options.reversible:
        raise ValueError("mems and reversible cannot be combined: a reversible stack keeps no layer "
                         "inputs, and Transformer-XL memories are those inputs")
    if mems is not None:
        if len(mems) != stack.num_self_attn:
            raise ValueError(f"mems: expected one tensor per self-attention layer "
                             f"({stack.num_self_attn}), got {len(mems)}")
        lengths = {m.shape[1] for m in mems}
        if len(lengths) != 1 or any(m.shape[0] != b or m.shape[-1] != stack.dim for m in mems):
            raise ValueError(f"mems: expected tensors of one shape (batch={b}, mem_len, {stack.dim}), "
                             f"got {[tuple(m.shape) for m in mems]}")


def check_mem_masks(mem_masks: Optional[list[Tensor]], mems: Optional[list[Tensor]]) -> None:
    """`mem_masks` must come with `mems`: one `(b, m)` bool tensor per memory."""
    if mem_masks is None:
        return
    if not mems:
        raise ValueError("mem_masks: given without mems; they mask the Transformer-XL memories")
    if len(mem_masks) != len(mems) or any(
            not torch.is_tensor(mm) or mm.dtype != torch.bool or tuple(mm.shape) != tuple(m.shape[:2])
            for mm, m in zip(mem_masks, mems, strict=False)):
        raise ValueError(f"mem_masks: expected one bool tensor of shape (batch, mem_len) per memory, "
                         f"{[tuple(m.shape[:2]) for m in mems]}, got "
                         f"{[tuple(mm.shape) if torch.is_tensor(mm) else type(mm).__name__ for mm in mem_masks]}")


#
# ## Masks
def with_memory_mask(mem_mask: Tensor, mask: Optional[Tensor], n: int) -> Tensor:
    """The keys' mask of a layer with a Transformer-XL memory: `[mem_mask; mask]` `(b, m + n)`."""
    tokens = mask if mask is not None else mem_mask.new_ones(mem_mask.shape[0], n)
    return torch.cat((mem_mask, tokens), dim=1)


def mask_as_bias(attn_mask: Tensor, bias: Optional[Tensor], n: int) -> Tensor:
    r"""A boolean query-by-key mask as an additive bias: $0$ where visible, the most negative number where not."""
    if not torch.is_tensor(attn_mask) or attn_mask.dtype != torch.bool or attn_mask.dim() not in (2, 3) \
            or tuple(attn_mask.shape[-2:]) != (n, n):
        raise ValueError(f"attn_mask: expected a bool tensor of shape ({n}, {n}) or (batch, {n}, {n}), got "
                         f"{tuple(attn_mask.shape) if torch.is_tensor(attn_mask) else type(attn_mask).__name__}")
    dtype = bias.dtype if bias is not None else torch.float32
    extra = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill(
        ~attn_mask, torch.finfo(dtype).min / 2)
    extra = extra[None, None] if extra.dim() == 2 else extra[:, None]  # (1|b, 1, i, j)
    return extra if bias is None else bias + extra


#
# ## One value per layer
def additional_kvs(given) -> list:
    """`self_attn_additional_kv` as a list of `(k, v)`: given so, or read from another stack's intermediates."""
    if given is None:
        return []
    if isinstance(given, LayerIntermediates):
        return cached_kvs(given)
    if not isinstance(given, (list, tuple)) or any(p is not None and (not isinstance(p, (list, tuple)) or len(p) != 2)
                                                   for p in given):
        raise ValueError("self_attn_additional_kv: expected a list of (keys, values) pairs or intermediates")
    return list(given)


def route_to_top(pairs: list, num_layers: int) -> list:
    """One entry per self-attention layer: the last pairs go to the top layers, the lowest get none.

    >>> route_to_top(["p", "q"], 3)
    [None, 'p', 'q']
    """
    pairs = pairs[-num_layers:] if num_layers else []
    return [None] * (num_layers - len(pairs)) + pairs


def per_layer(residuals: Optional[Tensor], num_layers: int) -> list:
    """`cross_attn_kv_residuals` as one tensor (or none) per cross-attention layer."""
    if residuals is None:
        return [None] * num_layers
    if residuals.dim() == 3:
        return [residuals] * num_layers
    if residuals.dim() != 4 or residuals.shape[0] != num_layers:
        raise ValueError(f"cross_attn_kv_residuals: expected (b, j, dim_context) or ({num_layers}, b, j, "
                         f"dim_context), one per cross-attention layer, got {tuple(residuals.shape)}")
    return list(residuals.unbind(0))
