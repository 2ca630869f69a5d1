r"""
# Building the blocks of a stack from its options

This file turns the validated `LayerOptions` into modules: an attention layer with the technique
modules plugged into its extension points, a feed-forward layer, the norms and the residual
connections.  It is the only place where options meet modules, so each technique file stays free of
keyword handling, and adding a technique means one line here.
"""

from __future__ import annotations

import copy
from typing import Optional

from torch import nn

from ..attention.attention import Attention, needs_output_projection
from ..attention.attention_on_attention import AttentionOnAttention
from ..attention.collaborative import CollaborativeQK
from ..attention.entmax15 import Entmax15
from ..attention.extension_points import ScoreTransforms
from ..attention.fast_attention import FusedKernel
from ..attention.gate_values import ValueGate
from ..attention.head_gate import HeadGate
from ..attention.head_scale import HeadScale, OutputGates
from ..attention.latent_attention import make_latent_qkv
from ..attention.qk_norm import QKNorm
from ..attention.qk_rmsnorm import MultiheadRMSNorm, QKRMSNorm
from ..attention.sparse_topk import SparseTopK
from ..attention.talking_heads import TalkingHeads, TalkingHeadsXT
from ..feedforward.feedforward import FeedForward
from ..feedforward.softclamp import SoftClampedGate
from ..feedforward.solu import SoLU
from ..memory.persistent_memory import PersistentMemory
from ..moe.mixture import mixture_from_options
from ..norms.adaptive_norm import AdaptiveLayerScale, AdaptiveNorm, condition_width
from ..norms.derf import Derf
from ..norms.dynamic_tanh import DynamicTanh
from ..norms.layer_norm import LayerNorm
from ..norms.rms_norm import RMSNorm, SimpleRMSNorm
from ..norms.scale_norm import ScaleNorm
from ..options import LayerOptions
from ..residual.branch_output import init_branch_output, output_linear
from ..residual.depth_scale_residual import branch_multiplier
from ..residual.gated_residual import GatedResidual
from ..residual.layer_scale import LayerScale
from ..residual.mv_split_residual import mv_split_residual
from ..residual.orthogonal_residual import OrthogonalResidual
from ..residual.residual import Block, Residual
from ..residual.residual_constant import scaled_residual
from ..residual.rezero import ReZero
from ..residual.scale_residual import ScaledResidual
from ..residual.token_shift import ShiftTokens
from .build_attention_extras import attention_extras, extra_score_transforms


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
    dim_context = (a.dim_context or o.dim_context or o.dim) if cross else None
    dim_value = a.value_dim_head or a.dim_head
    # Score transforms: x-transformers' talking heads act on the raw scores, this library's talking heads
    # mix the biased scores, then top-$k$ selects among them.
    transforms = []
    if a.pre_talking_heads or a.post_talking_heads or a.pre_scale_post_talking_heads:
        transforms.append(TalkingHeadsXT(o.heads, pre=a.pre_talking_heads, post=a.post_talking_heads,
                                         pre_scale_post=a.pre_scale_post_talking_heads))
    if a.talking_heads:
        transforms.append(TalkingHeads(o.heads))
    # Soft-capping, cog attention, CoPE and selective attention (build_attention_extras.py).
    transforms += extra_score_transforms(o, a, cross)
    if a.sparse_topk and not a.sparse_topk_straight_through:
        transforms.append(SparseTopK(a.sparse_topk))
    score_transform = transforms[0] if len(transforms) == 1 else ScoreTransforms(transforms) if transforms else None
    dim_key = a.key_width(o.dim)
    kv_heads = None if cross and a.collab_heads else a.num_kv_heads(o.heads)
    qk_proj = CollaborativeQK(o.dim, o.heads, a.collab_compression or 0.3, dim_context) if a.collab_heads else None
    # The score scale: a learned qk-norm temperature (scale 1), qk-norm's fixed scale, or $1/\sqrt d$.
    learned_qk_temperature = a.qk_norm and a.qk_norm_seq_len is not None
    if learned_qk_temperature:
        scale = 1.0
    elif a.qk_norm and not a.qk_norm_dim_scale:
        scale = float(a.qk_norm_scale)
    else:
        # DeepSeek's decoupled rotary features widen each query and key (latent attention).
        scale = a.scale if a.scale is not None else (dim_key + (a.latent_rope_dim or 0)) ** -0.5
    qk_transform = None
    if a.qk_norm:
        qk_transform = QKNorm(a.qk_norm_seq_len, groups=a.qk_norm_groups,
                              dim_scale=(o.heads, kv_heads or o.heads, dim_key) if a.qk_norm_dim_scale else None)
    elif a.qk_rmsnorm or a.k_rmsnorm:
        qk_transform = QKRMSNorm(o.heads if a.qk_rmsnorm else None, kv_heads or o.heads, dim_key)
    # Output gates, in x-transformers' order: head scale, the head gate, then gated attention.
    gates = ([HeadScale(o.heads)] if a.head_scale else []) + \
            ([HeadGate(o.dim, o.heads)] if a.gate_value_heads else []) + \
            ([ValueGate(o.dim, o.heads, dim_value, from_input=a.gate_values, input_rank=a.gate_values_rank,
                        input_headwise=a.gate_values_headwise, from_output=a.output_gate,
                        output_rank=a.output_gate_rank, output_headwise=a.output_gate_headwise,
                        low_rank_silu=a.low_rank_silu_gates, silu=a.swiglu_values, input_bias=a.gate_values_bias)]
             if a.gate_values or a.output_gate else [])
    to_out = None
    if a.on_attn:
        to_out = AttentionOnAttention(o.heads * dim_value, o.dim)
    elif not needs_output_projection(a.project_out, o.heads, dim_value, o.dim, a.on_attn):
        to_out = nn.Identity()
    parts = dict(
        qk_transform=qk_transform,
        memory_kv=PersistentMemory(a.num_kv_heads(o.heads), dim_key, dim_value, a.num_mem_kv) if a.num_mem_kv else None,
        normaliser=Entmax15() if a.use_entmax15 else a.custom_attn_fn,
        to_out=to_out,
    )
    attention = Attention(
        o.dim,
        heads=o.heads,
        dim_head=a.dim_head,
        kv_heads=kv_heads,
        causal=o.causal and not cross,
        max_attend_past=None if cross else a.max_attend_past,
        qkv_bias=a.qkv_bias,
        out_bias=a.out_bias,
        dim_context=dim_context,
        dropout=a.dropout,
        scale=scale,
        qk_proj=qk_proj,
        score_transform=score_transform,
        output_gate=OutputGates(gates) if len(gates) > 1 else (gates[0] if gates else None),
        value_dim_head=a.value_dim_head,
        value_norm=MultiheadRMSNorm(kv_heads or o.heads, dim_value) if a.value_rmsnorm else None,
        dim_out=a.dim_out,
        sublayer_dropout=a.sublayer_dropout,
        fused=FusedKernel.from_keywords(a.flash, a.attend_sdp_kwargs, a.onnxable),
        # Normalisers, extra key/value slots, value transforms, biases, hybrid heads (build_attention_extras.py).
        **attention_extras(o, a, cross, parts),
        latent_qkv=make_latent_qkv(a, o, dim_context),
    )
    if a.zero_init_output or a.output_proj_depth is not None:
        init_branch_output(output_linear(attention.to_out), zero=a.zero_init_output, depth=a.output_proj_depth)
    return attention


def ff_activation(o: LayerOptions) -> str | nn.Module:
    """The hidden layer's activation (or a GLU's gate): a name, or a module built for this layer."""
    f = o.ff
    if f.custom_activation is not None:
        return copy.deepcopy(f.custom_activation)  # each layer its own copy (and its own parameters)
    if f.solu:
        return SoLU(f.inner_dim if f.inner_dim is not None else int(o.dim * f.mult))
    if f.glu_softclamp:
        return SoftClampedGate(f.activation_name(), f.glu_gate_softclamp_value)
    return f.activation_name()


def make_feedforward(o: LayerOptions, ff_index: int = 0) -> nn.Module:
    """The feed-forward layer: a mixture of experts with `ff_num_experts` (past the first `ff_first_dense`)."""
    f = o.ff
    if f.num_experts and ff_index >= f.first_dense:
        return mixture_from_options(o)
    ff = FeedForward(o.dim, mult=f.mult, inner_dim=f.inner_dim, glu=f.glu, activation=ff_activation(o),
                     bias=not f.no_bias, post_act_ln=f.post_act_ln, dropout=f.dropout, dim_out=f.dim_out,
                     softclamp=f.softclamp_value, glu_mult_bias=f.glu_mult_bias,
                     glu_up_softclamp=f.glu_up_softclamp_value if f.glu_softclamp else None,
                     sublayer_dropout=f.sublayer_dropout)
    if f.zero_init_output or f.output_proj_depth is not None:
        init_branch_output(ff.proj_out, zero=f.zero_init_output, depth=f.output_proj_depth)
    return ff


def make_block(o: LayerOptions, kind: str, step: float, shift: int, ff_index: int = 0) -> Block:
    """One block: the sublayer, its norms and its residual connection (`ff_index`: feed-forward blocks before it)."""
    fn = make_feedforward(o, ff_index) if kind == "f" else make_attention(o, cross=kind == "c")
    normed = not o.use_rezero
    if o.gate_residual:
        residual = GatedResidual(o.dim)
    elif o.orthog_residual:
        residual = OrthogonalResidual(o.dim, o.scale_residual)
    elif o.mv_split_residual:
        residual = mv_split_residual(o)
    elif o.scale_residual:
        residual = ScaledResidual(o.dim)
    else:
        residual = Residual()
    return Block(
        kind, fn,
        # Gated multi residuals normalise what they read: no pre-norm, each stream normalised after the sum.
        pre_norm=make_norm(o) if normed and (o.pre_norm or o.pre_and_post_norm) and not o.gated_multi_residual
        else None,
        post_norm=make_norm(o) if normed and (not o.pre_norm or o.pre_and_post_norm or o.gated_multi_residual)
        else None,
        branch_norm=make_norm(o) if o.sandwich_norm else None,
        residual=scaled_residual(residual, o),  # $\alpha x + F$ with `scale_residual_constant`
        branch_scale=ReZero() if o.use_rezero else None,
        step=step * branch_multiplier(o),  # $s F$ with a numeric `depth_scale_residual`
        shift=ShiftTokens(shift) if shift else None,
        layer_scale=make_layer_scale(o),
    )
