r"""
# Validating the options: each value once, with its keyword's name

After [parsing](options.md), the [option objects](option_objects.md) hold a value for every
keyword; this page checks them, once, before anything is built.  A bad value or a combination
that has no meaning is a `ValueError` whose message names the keyword as the user spelt it
(`cross_attn_kv_heads`, not `kv_heads`) and says what was expected or why the two cannot meet:

```python
Decoder(dim=512, depth=6, heads=8, attn_kv_heads=3)
# ValueError: attn_kv_heads: expected a divisor of heads (8), got 3
```

The checks come in three layers: those of one kind of layer (`validate_attention`, run for
self-attention and again for cross-attention's overrides, and `validate_feedforward`), those of
the whole stack (`validate`, `validate_reversible`), and then the rules each technique declares
beside its own code (`@rule` in [keywords](keywords.md)), which this page runs last.  A check that
concerns one technique belongs with that technique; the checks here are the ones of the core
keywords and of the pairs of them that predate the rules.
"""

from __future__ import annotations

from .checks import check_int, check_number, check_probability
from .keywords import RULES
from .option_objects import (
    ROPE_SCALING_DEFAULTS,
    AttentionOptions,
    FeedForwardOptions,
    LayerOptions,
    rope_scaling,
)


#
# ## Validation
#
# Every value is checked here, once, with a message that names the keyword.  Combinations that
# have no meaning are refused with the reason.
def validate_attention(a: AttentionOptions, prefix: str) -> None:
    """Check the options of one kind of attention layer; `prefix` is how the user spelt them."""
    check_int(prefix + "dim_head", a.dim_head)
    check_probability(prefix + "dropout", a.dropout)
    check_int(prefix + "num_mem_kv", a.num_mem_kv, minimum=0)
    check_int(prefix + "sparse_topk", a.sparse_topk, allow_none=True)
    if a.collab_compression is not None:
        if not a.collab_heads:
            raise ValueError(f"{prefix}collab_compression: only meaningful with {prefix}collab_heads=True")
        if check_number(prefix + "collab_compression", a.collab_compression) and not 0 < a.collab_compression <= 1:
            raise ValueError(f"{prefix}collab_compression: expected a number in (0, 1], got {a.collab_compression!r}")
    if a.qk_norm_seq_len is not None:
        if not a.qk_norm:
            raise ValueError("qk_norm_attn_seq_len: only meaningful with use_qk_norm_attn=True")
        check_int("qk_norm_attn_seq_len", a.qk_norm_seq_len)
        if a.qk_norm_seq_len < 2:
            raise ValueError("qk_norm_attn_seq_len: expected at least 2 (the temperature is log2(L^2 - L))")
    if a.use_entmax15 and a.sparse_topk:
        raise ValueError(f"{prefix}use_entmax15 and {prefix}sparse_topk both sparsify the weights; choose one")
    for flag in ("one_kv_head", "qkv_bias", "out_bias"):
        if not isinstance(getattr(a, flag), bool):
            raise ValueError(f"{prefix}{flag}: expected True or False, got {getattr(a, flag)!r}")
    check_int(prefix + "kv_heads", a.kv_heads, allow_none=True)
    if a.kv_heads is not None and a.one_kv_head:
        raise ValueError(f"{prefix}kv_heads and {prefix}one_kv_head both set the key/value heads; choose one")
    if (a.kv_heads is not None or a.one_kv_head) and a.collab_heads:
        raise ValueError(f"{prefix}kv_heads (or {prefix}one_kv_head) and {prefix}collab_heads both replace the "
                         "key projections; choose one")
    check_int(prefix + "max_attend_past", a.max_attend_past, minimum=0, allow_none=True)
    if a.scale is not None:
        if check_number(prefix + "scale", a.scale) and not a.scale > 0:
            raise ValueError(f"{prefix}scale: expected a positive number, got {a.scale!r}")
        if a.qk_norm:
            raise ValueError(f"{prefix}scale and {prefix}qk_norm both set the logit scale (qk-norm learns it); "
                             "choose one")


# The activations `ff_activation` accepts (feedforward/activations.py).
FF_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "sigmoid", "identity", "relu_squared")


def validate_feedforward(f: FeedForwardOptions) -> None:
    """Check the `ff_*` options."""
    check_probability("ff_dropout", f.dropout)
    if check_number("ff_mult", f.mult) and not f.mult > 0:
        raise ValueError(f"ff_mult: expected a positive number, got {f.mult!r}")
    check_int("ff_inner_dim", f.inner_dim, allow_none=True)
    for flag in ("glu", "swish", "relu_squared", "no_bias", "post_act_ln"):
        if not isinstance(getattr(f, flag), bool):
            raise ValueError(f"ff_{flag}: expected True or False, got {getattr(f, flag)!r}")
    if f.activation is not None and f.activation not in FF_ACTIVATIONS:
        raise ValueError(f"ff_activation: expected one of {', '.join(FF_ACTIVATIONS)} (or None), got {f.activation!r}")
    chosen = [name for name, on in (("ff_swish", f.swish), ("ff_relu_squared", f.relu_squared),
                                    ("ff_activation", f.activation is not None)) if on]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} each choose the activation; choose one")


#
# ## The whole stack
#
# The options of each layer are valid on their own; here, the stack's values and the combinations
# that have no meaning.
def validate(o: LayerOptions) -> None:
    """Raise `ValueError` for any bad value or meaningless combination in `o`."""
    check_int("dim", o.dim)
    check_int("depth", o.depth)
    check_int("heads", o.heads)
    check_int("dim_context", o.dim_context, allow_none=True)
    validate_attention(o.attn, "attn_")
    if o.cross_attn is not None:
        if not (o.cross_attend or o.only_cross):
            raise ValueError("cross_attn_*: options for cross-attention layers, but this stack has none "
                             "(set cross_attend=True)")
        validate_attention(o.cross_attn, "cross_attn_")
    validate_feedforward(o.ff)
    if o.attn.kv_heads is not None and o.heads % o.attn.kv_heads:
        raise ValueError(f"attn_kv_heads: expected a divisor of heads ({o.heads}), got {o.attn.kv_heads}")
    if o.cross_attn is not None and o.cross_attn.kv_heads is not None and o.heads % o.cross_attn.kv_heads:
        raise ValueError(f"cross_attn_kv_heads: expected a divisor of heads ({o.heads}), got {o.cross_attn.kv_heads}")
    if o.norm_eps is not None and check_number("norm_eps", o.norm_eps) and not o.norm_eps > 0:
        raise ValueError(f"norm_eps: expected a positive number, got {o.norm_eps!r}")
    if check_number("rotary_theta", o.rotary_theta) and not o.rotary_theta > 0:
        raise ValueError(f"rotary_theta: expected a positive number, got {o.rotary_theta!r}")
    if o.rotary_theta != 10000.0 and not o.rotary_pos_emb:
        raise ValueError("rotary_theta: only meaningful with rotary_pos_emb=True")
    if o.use_scalenorm and o.use_rmsnorm:
        raise ValueError("use_scalenorm and use_rmsnorm: choose one normalisation, not both")
    if o.use_rezero and (o.use_scalenorm or o.use_rmsnorm or o.sandwich_norm):
        raise ValueError("use_rezero removes normalisation; it cannot be combined with "
                         "use_scalenorm, use_rmsnorm or sandwich_norm")
    if o.sandwich_norm and not o.pre_norm:
        raise ValueError("sandwich_norm adds a norm to pre-norm branches; it needs pre_norm=True")
    if o.gate_residual and (o.scale_residual or o.use_rezero):
        raise ValueError("gate_residual replaces the residual sum with a GRU gate; it cannot be combined with "
                         "scale_residual or use_rezero (a gated ReZero stack is not the identity at initialisation)")
    if o.ff.glu and o.ff.relu_squared:
        raise ValueError("ff_glu and ff_relu_squared choose different activations; choose one")
    if o.sandwich_coef is not None:
        if isinstance(o.sandwich_coef, bool) or not isinstance(o.sandwich_coef, int) \
                or not 1 <= o.sandwich_coef <= o.depth:
            raise ValueError(f"sandwich_coef: expected an integer in 1..depth ({o.depth}), got {o.sandwich_coef!r}")
        if o.macaron:
            raise ValueError("sandwich_coef and macaron both reorder the sublayers; choose one")
    # `only_cross=True, cross_attend=True` is x-transformers' own spelling of a cross-attention-only
    # stack (its `CrossAttender` and the Free Transformer's encoder pass both): the same layout.
    if o.alibi_pos_emb:
        check_int("alibi_num_heads", o.alibi_num_heads, allow_none=True)
        if o.alibi_num_heads is not None and o.alibi_num_heads > o.heads:
            raise ValueError(f"alibi_num_heads: expected at most heads ({o.heads}), got {o.alibi_num_heads}")
    elif o.alibi_num_heads is not None:
        raise ValueError("alibi_num_heads: only meaningful with alibi_pos_emb=True")
    if o.rotary_emb_dim is not None:
        if not o.rotary_pos_emb:
            raise ValueError("rotary_emb_dim: only meaningful with rotary_pos_emb=True")
        if isinstance(o.rotary_emb_dim, bool) or not isinstance(o.rotary_emb_dim, int) \
                or o.rotary_emb_dim < 2 or o.rotary_emb_dim % 2:
            raise ValueError(f"rotary_emb_dim: expected an even integer >= 2, got {o.rotary_emb_dim!r}")
        if o.rotary_emb_dim > o.attn.key_width(o.dim):
            raise ValueError(f"rotary_emb_dim: expected at most the key width per head "
                             f"({o.attn.key_width(o.dim)}), got {o.rotary_emb_dim}")
    scaled = [k for k, default in ROPE_SCALING_DEFAULTS.items() if getattr(o, k) != default]
    if scaled and not o.rotary_pos_emb:
        raise ValueError(f"{scaled[0]}: only meaningful with rotary_pos_emb=True")
    rope_scaling(o)  # each value checked once, with the keyword's name
    if o.rel_pos_bias:
        check_int("rel_pos_num_buckets", o.rel_pos_num_buckets)
        check_int("rel_pos_max_distance", o.rel_pos_max_distance)
    if o.rel_pos_bias and o.alibi_pos_emb:
        raise ValueError("rel_pos_bias and alibi_pos_emb are both additive position biases; choose one")
    if o.position_infused_attn and o.has_relative_positions:
        raise ValueError("position_infused_attn adds absolute positions to queries and keys; it cannot be "
                         "combined with rel_pos_bias, rotary_pos_emb or alibi_pos_emb")
    if o.cross_residual_attn and not (o.cross_attend or o.only_cross):
        raise ValueError("cross_residual_attn needs cross-attention layers (cross_attend=True)")
    if isinstance(o.shift_tokens, bool) or not isinstance(o.shift_tokens, (int, tuple, list)):
        raise ValueError(f"shift_tokens: expected an int >= 0 or a tuple of them, got {o.shift_tokens!r}")
    shifts = o.shift_tokens if isinstance(o.shift_tokens, (tuple, list)) else (o.shift_tokens,)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shifts):
        raise ValueError(f"shift_tokens: expected integers >= 0, got {o.shift_tokens!r}")
    validate_reversible(o)
    # The rules each technique declares beside its code (keywords.py).
    for check in RULES["attn"]:
        check(o.attn, "attn_", o)
        if o.cross_attn is not None:
            check(o.cross_attn, "cross_attn_", o)
    for check in RULES["ff"]:
        check(o.ff, o)
    for check in RULES["stack"]:
        check(o)


# A reversible stack pairs an attention half $F$ with a feed-forward half $G$ and adds each to one
# half of the residual stream (`residual/reversible.py`): anything that is not such a sum, or that
# carries state from one layer to the next outside the stream, cannot be inverted.
_NOT_REVERSIBLE = {
    "macaron": "its half-step feed-forward before attention breaks the attention/feed-forward pairs",
    "sandwich_coef": "its runs of attention and of feed-forward break the attention/feed-forward pairs",
    "gate_residual": "the GRU gate mixes the residual into the branch, so the input cannot be subtracted back out",
    "scale_residual": "the residual is no longer added unchanged",
    "residual_attn": "the scores passed from layer to layer would have to be kept for the backward pass",
    "cross_residual_attn": "the scores passed from layer to layer would have to be kept for the backward pass",
    "gradient_checkpointing": "reversible layers already recompute activations; use one or the other",
    # layers-a: the stack keywords a reversible stack cannot run (the others compose with it: every norm
    # kind, norm_add_unit_offset, norm_bias, pre_norm_has_final_norm, LayerScale, weight tying and any
    # layout that pairs attention with feed-forward blocks, softclamp_output and the position keywords).
    "pre_and_post_norm": "it normalises the residual sum, so the block input cannot be subtracted back out",
    "use_adaptive_layernorm": "the coupling functions take no condition vector",
    "use_adaptive_rmsnorm": "the coupling functions take no condition vector",
    "use_adaptive_layerscale": "the coupling functions take no condition vector",
    "layer_dropout": "a block skipped at random would have to be skipped again, identically, in the backward pass",
    "cross_attn_tokens_dropout": "the recomputed backward pass would draw other context tokens",
    "only_attn": "a reversible layer pairs an attention block with a feed-forward block",
}


def validate_reversible(o: LayerOptions) -> None:
    """Refuse, naming both keywords, what a reversible stack cannot run."""
    if not isinstance(o.reversible, bool):
        raise ValueError(f"reversible: expected True or False, got {o.reversible!r}")
    if not o.reversible:
        return
    if not o.pre_norm:
        raise ValueError("reversible and pre_norm=False: post-norm normalises the residual sum, so the "
                         "block input cannot be subtracted back out; use pre-norm")
    for name, why in _NOT_REVERSIBLE.items():
        if getattr(o, name) not in (None, False):
            raise ValueError(f"reversible and {name} cannot be combined: {why}")
