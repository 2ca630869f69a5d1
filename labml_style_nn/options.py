r"""
# The keyword API, parsed in one place

x-transformers configures a whole stack with flat keywords:
`Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True, attn_num_mem_kv=16, ff_glu=True)`.
This file turns that keyword soup into typed, validated option objects, so that no technique module
ever sees it.

* `attn_*` keywords configure every attention layer (`attn_num_mem_kv` is `AttentionOptions.num_mem_kv`),
  `cross_attn_*` override them for cross-attention layers only.
* `ff_*` keywords configure every feed-forward layer.
* The rest configure the stack itself (`LayerOptions`).
* `XTransformer` routes `enc_*` and `dec_*` keywords to its encoder and decoder (see
  `models/xtransformer.py`).

An unknown keyword is a `TypeError` that names the closest valid ones; a bad value is a
`ValueError` that names the argument and what was expected.  A few older or newer spellings are
accepted as aliases.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional, Union

from .checks import check_int, check_number, check_probability
from .positional.rope_scaling import RopeScaling


@dataclass
class AttentionOptions:
    """Options of every attention layer (keywords `attn_*`)."""

    dim_head: int = 64
    dropout: float = 0.0
    num_mem_kv: int = 0
    sparse_topk: Optional[int] = None
    use_entmax15: bool = False
    talking_heads: bool = False
    collab_heads: bool = False
    collab_compression: Optional[float] = None  # 0.3 when collab_heads is on
    on_attn: bool = False
    gate_values: bool = False
    head_scale: bool = False
    qk_norm: bool = False
    qk_norm_seq_len: Optional[int] = None
    # grouped-query / multi-query attention (attention/grouped_query.py)
    kv_heads: Optional[int] = None
    one_kv_head: bool = False
    # sliding-window attention (attention/sliding_window.py)
    max_attend_past: Optional[int] = None
    # biases of the projections, and the logit scale (None: $1/\sqrt{d}$)
    qkv_bias: bool = False
    out_bias: bool = False
    scale: Optional[float] = None

    def num_kv_heads(self, heads: int) -> int:
        """Key/value heads: `kv_heads`, 1 for multi-query, else one per query head."""
        return 1 if self.one_kv_head else (self.kv_heads or heads)

    def key_width(self, dim: int) -> int:
        """Width of queries and keys per head: `dim_head`, or the shared width of collaborative heads."""
        if self.collab_heads:
            return max(1, int((self.collab_compression or 0.3) * dim))
        return self.dim_head


@dataclass
class FeedForwardOptions:
    """Options of every feed-forward layer (keywords `ff_*`)."""

    mult: float = 4
    glu: bool = False
    relu_squared: bool = False
    post_act_ln: bool = False
    dropout: float = 0.0
    swish: bool = False
    activation: Optional[str] = None
    inner_dim: Optional[int] = None
    no_bias: bool = False

    def activation_name(self) -> str:
        """The activation of the hidden layer: `activation`, or the one the older flags choose."""
        if self.activation is not None:
            return self.activation
        return "relu_squared" if self.relu_squared else "silu" if self.swish else "gelu"


@dataclass
class LayerOptions:
    """Options of a stack of attention and feed-forward blocks."""

    dim: int
    depth: int
    heads: int = 8
    causal: bool = False
    cross_attend: bool = False
    only_cross: bool = False
    dim_context: Optional[int] = None
    # normalisation and residual
    pre_norm: bool = True
    use_scalenorm: bool = False
    use_rmsnorm: bool = False
    use_rezero: bool = False
    sandwich_norm: bool = False
    gate_residual: bool = False
    scale_residual: bool = False
    # layout
    sandwich_coef: Optional[int] = None
    macaron: bool = False
    shift_tokens: Union[int, tuple] = 0
    # scores across layers
    residual_attn: bool = False
    cross_residual_attn: bool = False
    # positions
    rel_pos_bias: bool = False
    rel_pos_num_buckets: int = 32
    rel_pos_max_distance: int = 128
    rotary_pos_emb: bool = False
    rotary_emb_dim: Optional[int] = None
    # RoPE scaling for contexts beyond the training length (positional/rope_scaling.py)
    rotary_interpolation_factor: float = 1.0
    rotary_base_rescale_factor: float = 1.0
    rotary_yarn_factor: Optional[float] = None
    rotary_yarn_original_max_len: Optional[int] = None
    alibi_pos_emb: bool = False
    alibi_num_heads: Optional[int] = None
    position_infused_attn: bool = False
    rotary_theta: float = 10000.0
    # epsilon of every norm of the stack (None: each norm's own default)
    norm_eps: Optional[float] = None
    # memory efficiency
    gradient_checkpointing: bool = False
    reversible: bool = False
    attn: AttentionOptions = field(default_factory=AttentionOptions)
    cross_attn: Optional[AttentionOptions] = None
    ff: FeedForwardOptions = field(default_factory=FeedForwardOptions)

    @property
    def has_relative_positions(self) -> bool:
        """True when a scheme gives positions inside attention (the absolute embedding can go)."""
        return self.rel_pos_bias or self.rotary_pos_emb or self.alibi_pos_emb


_ROPE_SCALING_DEFAULTS = dict(rotary_interpolation_factor=1.0, rotary_base_rescale_factor=1.0,
                              rotary_yarn_factor=None, rotary_yarn_original_max_len=None)


def rope_scaling(o: LayerOptions) -> RopeScaling:
    """The RoPE scaling settings of a stack (`ValueError` naming the keyword for a bad value)."""
    return RopeScaling(interpolation_factor=o.rotary_interpolation_factor,
                       base_rescale_factor=o.rotary_base_rescale_factor,
                       yarn_factor=o.rotary_yarn_factor, yarn_original_max_len=o.rotary_yarn_original_max_len)


# Spellings of the same option from other versions of the keyword API.
ALIASES = {
    "gate_values": "attn_gate_values",
    "alibi_pos_bias": "alibi_pos_emb",
    "use_qk_norm_attn": "attn_qk_norm",
    "qk_norm_attn_seq_len": "attn_qk_norm_seq_len",
    "attn_qk_norm_attn_seq_len": "attn_qk_norm_seq_len",
}

_LAYER_KEYS = {f.name for f in fields(LayerOptions)} - {"attn", "cross_attn", "ff", "dim", "depth"}
_ATTN_KEYS = {f.name for f in fields(AttentionOptions)}
_FF_KEYS = {f.name for f in fields(FeedForwardOptions)}


def valid_layer_keywords() -> list[str]:
    """Every keyword `AttentionLayers` accepts, as a user would spell it."""
    return sorted(
        {"dim", "depth"} | _LAYER_KEYS | {"attn_" + k for k in _ATTN_KEYS}
        | {"cross_attn_" + k for k in _ATTN_KEYS} | {"ff_" + k for k in _FF_KEYS} | set(ALIASES)
    )


def unknown_keyword_error(owner: str, name: str, valid: list[str]) -> TypeError:
    """A `TypeError` that names the unknown keyword and the closest valid ones."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    # Nothing close: a short list of valid keywords is shown whole (`top_p` takes only `p`).
    hint = f"; did you mean {' or '.join(close)}?" if close else \
        f"; it takes {', '.join(valid)}" if 0 < len(valid) <= 8 else ""
    return TypeError(f"{owner}() got an unexpected keyword argument '{name}'{hint}")


#
# ## Parsing
def parse_layer_options(owner: str, dim: int, depth: int, kwargs: dict[str, Any]) -> LayerOptions:
    """Turn the flat keywords of `Encoder`/`Decoder`/... into a validated `LayerOptions`."""
    layer, attn, cross, ff = {}, {}, {}, {}
    valid = valid_layer_keywords()
    for name, value in kwargs.items():
        key = ALIASES.get(name, name)
        if key.startswith("cross_attn_") and key[len("cross_attn_"):] in _ATTN_KEYS:
            cross[key[len("cross_attn_"):]] = value
        elif key.startswith("attn_") and key[len("attn_"):] in _ATTN_KEYS:
            attn[key[len("attn_"):]] = value
        elif key.startswith("ff_") and key[len("ff_"):] in _FF_KEYS:
            ff[key[len("ff_"):]] = value
        elif key in _LAYER_KEYS:
            layer[key] = value
        else:
            raise unknown_keyword_error(owner, name, valid)
    if "max_attend_past" in cross:
        raise ValueError("cross_attn_max_attend_past: cross-attention keys have no position relative to the "
                         "queries; a sliding window (attn_max_attend_past) applies to self-attention only")
    # One way of giving the key/value heads of cross-attention overrides the other way inherited from `attn_*`.
    if "one_kv_head" in cross:
        cross.setdefault("kv_heads", None)
    if "kv_heads" in cross:
        cross.setdefault("one_kv_head", False)
    attn_opts = AttentionOptions(**attn)
    cross_opts = replace(attn_opts, **cross) if cross else None
    opts = LayerOptions(dim=dim, depth=depth, attn=attn_opts, cross_attn=cross_opts,
                        ff=FeedForwardOptions(**ff), **layer)
    validate(opts)
    return opts


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
    if o.attn.max_attend_past is not None and not o.causal:
        raise ValueError("attn_max_attend_past: a sliding window looks back from each query; it needs a causal "
                         "stack (Decoder), not causal=False")
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
    if o.only_cross and o.cross_attend:
        raise ValueError("only_cross already makes every attention layer a cross-attention; drop cross_attend")
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
    scaled = [k for k, default in _ROPE_SCALING_DEFAULTS.items() if getattr(o, k) != default]
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
