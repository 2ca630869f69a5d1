r"""
# Building the blocks of a stack from its options

This file turns the validated `LayerOptions` into modules: an attention layer with the technique
modules plugged into its extension points, a feed-forward layer, the norms and the residual
connections.  It is the only place where options meet modules, so each technique file stays free of
keyword handling, and adding a technique means one line here.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from ..attention.attention import Attention
from ..attention.attention_on_attention import AttentionOnAttention
from ..attention.collaborative import CollaborativeQK
from ..attention.entmax15 import Entmax15
from ..attention.extension_points import ScoreTransforms
from ..attention.gate_values import ValueGate
from ..attention.head_scale import HeadScale, OutputGates
from ..attention.qk_norm import QKNorm
from ..attention.sparse_topk import SparseTopK
from ..attention.talking_heads import TalkingHeads
from ..feedforward.feedforward import FeedForward
from ..memory.persistent_memory import PersistentMemory
from ..norms.adaptive_norm import AdaptiveLayerScale, AdaptiveNorm, condition_width
from ..norms.derf import Derf
from ..norms.dynamic_tanh import DynamicTanh
from ..norms.layer_norm import LayerNorm
from ..norms.rms_norm import RMSNorm, SimpleRMSNorm
from ..norms.scale_norm import ScaleNorm
from ..options import LayerOptions
from ..residual.depth_scale_residual import branch_multiplier
from ..residual.gated_residual import GatedResidual
from ..residual.layer_scale import LayerScale
from ..residual.orthogonal_residual import OrthogonalResidual
from ..residual.residual import Block, Residual
from ..residual.residual_constant import scaled_residual
from ..residual.rezero import ReZero
from ..residual.scale_residual import ScaledResidual
from ..residual.token_shift import ShiftTokens


def make_norm(o: LayerOptions) -> nn.Module:
    """LayerNorm, or the norm the options ask for; `norm_eps` overrides each one's epsilon, and
    `norm_add_unit_offset` stores the gains as offsets from their initial values."""
    eps = {} if o.norm_eps is None else dict(eps=o.norm_eps)
    offset = o.norm_add_unit_offset
    if o.use_scalenorm:
        return ScaleNorm(o.dim, unit_offset=offset, **eps)
    if o.use_rmsnorm:
        return RMSNorm(o.dim, unit_offset=offset, **eps)
    if o.use_simple_rmsnorm:
        return SimpleRMSNorm(o.dim, **eps)
    if o.use_dynamic_tanh:
        return DynamicTanh(o.dim, o.dynamic_tanh_init_alpha, unit_offset=offset)
    if o.use_derf:
        return Derf(o.dim, unit_offset=offset)
    if o.use_adaptive_layernorm or o.use_adaptive_rmsnorm:
        return AdaptiveNorm(o.dim, condition_width(o), rms=o.use_adaptive_rmsnorm, eps=o.norm_eps)
    return LayerNorm(o.dim, bias=o.norm_bias, unit_offset=offset, **eps)


def make_layer_scale(o: LayerOptions) -> Optional[nn.Module]:
    """CaiT's LayerScale or the adaptive (condition-gated) scale on each branch output, if asked for."""
    if o.use_layerscale:
        return LayerScale(o.dim, o.layerscale_init_value, unit_offset=o.norm_add_unit_offset)
    if o.use_adaptive_layerscale:
        return AdaptiveLayerScale(o.dim, condition_width(o))
    return None


def make_attention(o: LayerOptions, cross: bool) -> Attention:
    """An attention layer with every technique of `o.attn` (or `o.cross_attn`) plugged in."""
    a = (o.cross_attn or o.attn) if cross else o.attn
    dim_context = (o.dim_context or o.dim) if cross else None
    # Score transforms: talking heads mixes the raw scores, then top-$k$ selects among them.
    transforms = []
    if a.talking_heads:
        transforms.append(TalkingHeads(o.heads))
    if a.sparse_topk:
        transforms.append(SparseTopK(a.sparse_topk))
    score_transform = transforms[0] if len(transforms) == 1 else ScoreTransforms(transforms) if transforms else None
    dim_key = a.key_width(o.dim)
    qk_proj = CollaborativeQK(o.dim, o.heads, a.collab_compression or 0.3, dim_context) if a.collab_heads else None
    scale = 1.0 if a.qk_norm else a.scale if a.scale is not None else dim_key ** -0.5
    gates = ([ValueGate(o.dim, o.heads, a.dim_head)] if a.gate_values else []) + \
            ([HeadScale(o.heads)] if a.head_scale else [])
    return Attention(
        o.dim,
        heads=o.heads,
        dim_head=a.dim_head,
        kv_heads=None if cross and a.collab_heads else a.num_kv_heads(o.heads),
        causal=o.causal and not cross,
        max_attend_past=None if cross else a.max_attend_past,
        qkv_bias=a.qkv_bias,
        out_bias=a.out_bias,
        dim_context=dim_context,
        dropout=a.dropout,
        scale=scale,
        qk_proj=qk_proj,
        qk_transform=QKNorm(a.qk_norm_seq_len) if a.qk_norm else None,
        memory_kv=PersistentMemory(a.num_kv_heads(o.heads), dim_key, a.dim_head, a.num_mem_kv) if a.num_mem_kv else None,
        score_transform=score_transform,
        normaliser=Entmax15() if a.use_entmax15 else None,
        output_gate=OutputGates(gates) if len(gates) > 1 else (gates[0] if gates else None),
        to_out=AttentionOnAttention(o.heads * a.dim_head, o.dim) if a.on_attn else None,
    )


def make_feedforward(o: LayerOptions) -> FeedForward:
    f = o.ff
    return FeedForward(o.dim, mult=f.mult, inner_dim=f.inner_dim, glu=f.glu, activation=f.activation_name(),
                       bias=not f.no_bias, post_act_ln=f.post_act_ln, dropout=f.dropout)


def make_block(o: LayerOptions, kind: str, step: float, shift: int) -> Block:
    """One block: the sublayer, its norms and its residual connection."""
    fn = make_feedforward(o) if kind == "f" else make_attention(o, cross=kind == "c")
    normed = not o.use_rezero
    if o.gate_residual:
        residual = GatedResidual(o.dim)
    elif o.orthog_residual:
        residual = OrthogonalResidual(o.dim, o.scale_residual)
    elif o.scale_residual:
        residual = ScaledResidual(o.dim)
    else:
        residual = Residual()
    return Block(
        kind, fn,
        pre_norm=make_norm(o) if normed and (o.pre_norm or o.pre_and_post_norm) else None,
        post_norm=make_norm(o) if normed and (not o.pre_norm or o.pre_and_post_norm) else None,
        branch_norm=make_norm(o) if o.sandwich_norm else None,
        residual=scaled_residual(residual, o),  # $\alpha x + F$ with `scale_residual_constant`
        branch_scale=ReZero() if o.use_rezero else None,
        step=step * branch_multiplier(o),  # $s F$ with a numeric `depth_scale_residual`
        shift=ShiftTokens(shift) if shift else None,
        layer_scale=make_layer_scale(o),
    )
