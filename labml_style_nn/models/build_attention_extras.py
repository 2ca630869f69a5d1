r"""
# Building the scoring functions, positions and hybrid heads of attention

[build.py](build.md) plugs the older techniques into the [attention module](../attention/attention.md);
this file plugs in x-transformers' newer `Attention` keywords, each from its own page:

| extension point | keywords |
|---|---|
| `score_transform` | `softclamp_logits`, `cog_signed`, `use_cope`, `selective` (after talking heads, before top-$k$) |
| `normaliser` | `sigmoid`, `gumbel_softmax`, `hard`, `sparse_topk_straight_through`, `inverted_attention`, then `head_learned_sink` around it |
| `qk_transform` | `l2_distance` |
| `memory_kv` | `add_zero_kv` (before the persistent slots) |
| `value_transform` | `laser` |
| `score_bias` | `data_dependent_alibi`, `use_rel_proj_pos_bias` |
| `hybrid` | `hybrid_module` |
| `to_out` | `orthog_projected_values(_per_head)` |
| `rotate_num_heads` | `rotate_num_heads`, `attn_rotate_num_heads` |

Techniques that read positions, the layer's own tokens or their values act in self-attention only
(`options.SELF_ATTENTION_ONLY`).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..attention.cog_attention import CogSigned
from ..attention.extension_points import softmax
from ..attention.gumbel_softmax import GumbelSoftmax
from ..attention.hard_attention import HardAttention
from ..attention.hybrid import HybridBranch
from ..attention.inverted_attention import InvertedSoftmax
from ..attention.l2_distance import L2DistanceQK
from ..attention.laser import Laser
from ..attention.learned_sink import LearnedSink
from ..attention.orthogonal_values import OrthogonalValuesOut
from ..attention.selective import SelectiveAttention
from ..attention.sigmoid_attention import SigmoidNormaliser
from ..attention.softclamp import SoftClampLogits
from ..attention.sparse_topk import SparseTopKSoftmax
from ..attention.zero_kv import ZeroKeyValue
from ..options import AttentionOptions, LayerOptions
from ..positional.cope import CoPE
from ..positional.forgetting import forget_gate_bias
from ..positional.partial_rotary_heads import rotated_heads
from ..positional.relative_projection import RelativeProjectionBias, SummedBias


def extra_score_transforms(o: LayerOptions, a: AttentionOptions, cross: bool) -> list:
    """The score transforms of these keywords, in the order x-transformers applies them."""
    transforms: list = []
    if a.softclamp_logits:
        transforms.append(SoftClampLogits(a.logit_softclamp_value))
    if a.cog_signed:
        transforms.append(CogSigned())
    if a.use_cope and not cross:
        transforms.append(CoPE(o.heads, a.dim_head, a.cope_max_pos, a.cope_soft_onehot_pos, a.cope_talking_heads))
    if a.selective and not cross:
        transforms.append(SelectiveAttention())
    return transforms


def _normaliser(o: LayerOptions, a: AttentionOptions, base):
    if a.sigmoid:
        base = SigmoidNormaliser()
    elif a.gumbel_softmax:
        base = GumbelSoftmax(a.gumbel_softmax_temp, a.gumbel_softmax_hard)
    elif a.hard:
        base = HardAttention()
    elif a.sparse_topk and a.sparse_topk_straight_through:
        base = SparseTopKSoftmax(a.sparse_topk)
    elif a.inverted_attention:
        base = InvertedSoftmax()
    if a.head_learned_sink:
        base = LearnedSink(o.heads, base or softmax, absolute=a.cog_signed)
    return base


def attention_extras(o: LayerOptions, a: AttentionOptions, cross: bool, parts: dict[str, Any]) -> dict[str, Any]:
    """`parts` (qk_transform, memory_kv, normaliser, to_out of build.py) with these keywords applied,
    plus the extension points only they use."""
    kv_heads = None if cross and a.collab_heads else a.num_kv_heads(o.heads)
    parts = dict(parts, normaliser=_normaliser(o, a, parts["normaliser"]))
    if a.l2_distance:
        parts["qk_transform"] = L2DistanceQK()
    if a.add_zero_kv:
        parts["memory_kv"] = ZeroKeyValue(kv_heads or o.heads, a.key_width(o.dim), a.dim_head, parts["memory_kv"])
    if a.laser:
        parts["value_transform"] = Laser(a.laser_softclamp_value)
    if cross:
        return parts
    biases: list[nn.Module] = []
    if a.data_dependent_alibi:
        biases.append(forget_gate_bias(o.dim, o.heads, o.causal, a.data_dependent_alibi_per_row,
                                       a.data_dependent_alibi_per_row_dim_head, a.data_dependent_alibi_kwargs))
    if a.use_rel_proj_pos_bias:
        biases.append(RelativeProjectionBias(o.dim, o.heads, a.rel_proj_num_distance_basis, a.rel_proj_max_dist))
    if biases:
        parts["score_bias"] = biases[0] if len(biases) == 1 else SummedBias(biases)
    if a.hybrid_module is not None:
        parts["hybrid"] = HybridBranch(copy.deepcopy(a.hybrid_module), dim=o.dim, heads=o.heads,
                                       dim_head=a.dim_head, causal=o.causal, fold_axial_dim=a.hybrid_fold_axial_dim,
                                       learned_mix=a.hybrid_learned_mix, mask_kwarg=a.hybrid_mask_kwarg)
    if a.orthog_projected_values or a.orthog_projected_values_per_head:
        parts["to_out"] = OrthogonalValuesOut(o.heads, a.dim_head, o.dim, a.orthog_projected_values,
                                              a.orthog_projected_values_per_head, bias=a.out_bias)
    if o.rotary_pos_emb:
        parts["rotate_num_heads"] = rotated_heads(o)
    return parts
