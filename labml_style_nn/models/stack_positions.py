r"""
# Positions, once per forward pass

Every self-attention layer of a stack reads the same positions.  Rotary angles, the T5 or ALiBi
bias, position-infused sinusoids and PoPE's phases depend only on where the queries and keys are,
not on the layer, so the [layer stack](layers.md) builds one positional module of each kind and
computes its output once per forward pass; each layer receives it in `SharedAttentionInputs`
(`attention/extension_points.py`).

Queries are at positions $m \dots m + n - 1$ after $m$ earlier tokens.  The keys computed in a pass
depend on where those earlier tokens are kept:

| earlier tokens | keys computed in this pass | their positions |
|---|---|---|
| none | the $n$ tokens | $0 \dots n - 1$ |
| a Transformer-XL memory | the memory and the tokens | $0 \dots m + n - 1$ |
| a key/value cache | the $n$ new tokens (the rest are cached, already rotated) | $m \dots m + n - 1$ |

A bias of the scores covers every key, $B_{ij}$ for $i \in [m, m + n)$, $j \in [0, m + n)$.

Given positions (x-transformers' `pos=`) replace $m \dots m + n - 1$: one row for all sequences
`(n,)`, one per sequence `(b, n)` for rotary and ALiBi, or one per sequence and ALiBi head
`(b, h, n)` ([custom positions](../positional/custom_positions.md)).

Shapes: `b` batch, `h` heads, `n` tokens, `m` earlier tokens, `r` rotated features per head.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from ..attention.extension_points import SharedAttentionInputs
from ..option_objects import LayerOptions, rope_scaling
from ..positional.alibi import AlibiPositionalBias
from ..positional.custom_positions import check_custom_positions, per_row_angles
from ..positional.dynamic_position_bias import DynamicPositionBias
from ..positional.polar import PolarEmbedding
from ..positional.position_infused import PositionInfusedAttention
from ..positional.rotary import RotaryEmbedding
from ..positional.t5_bias import T5RelativePositionBias
from ..positional.xpos import XPosEmbedding

if TYPE_CHECKING:
    from .layers import AttentionLayers


def positional_modules(o: LayerOptions, dim: int, heads: int) -> tuple:
    """The stack's positional modules `(rotary, rel_pos, alibi, pia, polar)`, each `None` when not asked for."""
    rotary = None
    if o.rotary_pos_emb:
        # By default half of each head is rotated, as in x-transformers (an odd half rounds down to even).
        dim_key = o.attn.key_width(dim)
        rot = o.rotary_emb_dim or min(o.attn.dim_head // 2 // 2 * 2, dim_key - dim_key % 2)
        if o.attn.latent_rope_dim is not None:
            rot = o.rotary_emb_dim or o.attn.latent_rope_dim  # DeepSeek's rotated features, all of them
        if rot < 2:
            raise ValueError(f"rotary_pos_emb: the key width {dim_key} is too small to rotate")
        if o.verbose and rot < 32:
            # x-transformers logs this with `verbose=True`; the library never prints, so it is a warning
            # (pointing at the code that built the stack: this function, the stack, its caller).
            warnings.warn(f"rotary_pos_emb: {rot} rotated features per head; language models train better "
                          "with at least 32 (verbose=False silences this)", stacklevel=3)
        rotary = XPosEmbedding(rot, base=o.rotary_theta, scale_base=o.rotary_xpos_scale_base,
                               scaling=rope_scaling(o)) if o.rotary_xpos \
            else RotaryEmbedding(rot, base=o.rotary_theta, scaling=rope_scaling(o))
    # One relative bias of the scores: T5's buckets or the dynamic (MLP) bias; ALiBi below.
    rel_pos = T5RelativePositionBias(heads, o.causal, o.rel_pos_num_buckets, o.rel_pos_max_distance) \
        if o.rel_pos_bias else None
    if o.dynamic_pos_bias:
        rel_pos = DynamicPositionBias(dim // 4, heads=heads, depth=o.dynamic_pos_bias_mlp_depth,
                                      log_distance=o.dynamic_pos_bias_log_distance, norm=o.dynamic_pos_bias_norm)
    alibi = AlibiPositionalBias(heads, o.alibi_num_heads, **o.rel_pos_kwargs) if o.alibi_pos_emb else None
    pia = PositionInfusedAttention(dim) if o.position_infused_attn else None
    # PoPE: phases from positions, shared by every self-attention layer (`positional/polar.py`).
    polar = PolarEmbedding(o.attn.dim_head, heads, o.polar_bias_uniform_init) if o.polar_pos_emb else None
    return rotary, rel_pos, alibi, pia, polar


#
# ## The shared inputs of one pass
#
# Queries are at positions $m \dots m + n - 1$.  With a memory the keys computed in this pass are
# the memory and the tokens, positions $0 \dots m + n - 1$; with a cache, only the tokens.
def position_inputs(stack: AttentionLayers, n: int, offset: int, keys_from_zero: bool, device,
                    positions: Optional[Tensor] = None, batch: int = 1) -> SharedAttentionInputs:
    """Rotary angles, score bias and position-infused sinusoids of `stack` for one forward pass."""
    q_pos = torch.arange(offset, offset + n, device=device)
    all_k = torch.arange(offset + n, device=device)
    if positions is not None:
        # Given positions (x-transformers' `pos=`): queries and keys are the same tokens, `(n,)`,
        # one row per sequence `(b, n)` or, for ALiBi alone, per sequence and head `(b, h, n)`
        # ([custom positions](../positional/custom_positions.md)).
        check_positions(stack, positions, n, batch)
        q_pos = all_k = positions.to(device)
    new_k = all_k if keys_from_zero else q_pos
    bias = None
    if stack.rel_pos is not None:
        bias = stack.rel_pos(q_pos, all_k)
    elif stack.alibi is not None:
        bias = stack.alibi(q_pos, all_k)
    return SharedAttentionInputs(
        rotary=per_row_angles(stack.rotary(new_k)) if stack.rotary is not None else None,
        attn_bias=bias,
        qk_pos=stack.pia(new_k) if stack.pia is not None else None,
        polar=(stack.polar(new_k), stack.polar.key_phase()) if stack.polar is not None else None,
    )


def check_positions(stack: AttentionLayers, pos, n: int, batch: int) -> None:
    """`pos` is `(n,)`, `(b, n)` (rotary, xPos, ALiBi) or `(b, h, n)` (ALiBi alone) integer positions."""
    per_row = tuple(name for name, on in (("rotary_pos_emb", stack.rotary is not None),
                                           ("alibi_pos_bias", stack.alibi is not None)) if on)
    shared_only = tuple(name for name, on in (
        ("rel_pos_bias", stack.options.rel_pos_bias), ("dynamic_pos_bias", stack.options.dynamic_pos_bias),
        ("position_infused_attn", stack.pia is not None), ("polar_pos_emb", stack.polar is not None)) if on)
    per_head = stack.alibi.alibi_heads if stack.alibi is not None and stack.rotary is None else None
    check_custom_positions(pos, n, batch, per_row=per_row, per_head=per_head, shared_only=shared_only)
