r"""
# The keyword API, parsed in one place

x-transformers configures a whole stack with flat keywords:
`Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True, attn_num_mem_kv=16, ff_glu=True)`.
This file turns that keyword soup into validated option objects, so that no technique module ever
sees it.  The keywords themselves are not listed here: each technique declares its own beside its
code ([keywords](keywords.md) explains how), and this file reads those declarations.

* `attn_*` keywords configure every attention layer (`attn_num_mem_kv` is `AttentionOptions.num_mem_kv`),
  `cross_attn_*` override them for cross-attention layers only.
* `ff_*` keywords configure every feed-forward layer.
* The rest configure the stack itself (`LayerOptions`).
* `XTransformer` routes `enc_*` and `dec_*` keywords to its encoder and decoder (see
  `models/xtransformer.py`).

An unknown keyword is a `TypeError` that names the closest valid ones; a value of the wrong type or
range is a `ValueError` that names the argument and what was expected.  A few older or newer
spellings are accepted as aliases.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, ClassVar, Optional

from .checks import check_int, check_number, check_probability, unknown_keyword_error
from .keywords import RULES, Keyword, declare, declared
from .positional.rope_scaling import RopeScaling

# The stack's own keywords; every other keyword is declared by the file of its technique.
declare(__name__, "stack",
        Keyword("dim", None, "model width D", type=int, required=True, page="models/layers"),
        Keyword("depth", None, "number of layers (an attention and a feed-forward block each)", type=int,
                required=True, page="models/layers"),
        Keyword("heads", 8, "attention heads", example=4, page="attention/attention"),
        Keyword("causal", False, "token i sees only tokens j <= i (`Decoder` sets it; `AttentionLayers` only)",
                page="attention/attention"),
        Keyword("cross_attend", False, "add a cross-attention block after each self-attention block",
                page="models/layers"),
        Keyword("only_cross", False, "cross-attention instead of self-attention (`CrossAttender` sets it)",
                page="models/layers"),
        Keyword("dim_context", None, "width of the cross-attention context, when it differs from dim", type=int,
                example=32, xtransformers=False, page="attention/attention"),
        Keyword("norm_eps", None, "epsilon of every norm of the stack (None: each norm's own default)", type=float,
                example=1e-6, xtransformers=False, page="models/build"),
        Keyword("gradient_checkpointing", False,
                "recompute each block in the backward pass instead of keeping activations", xtransformers=False,
                page="models/layers"),
        Keyword("verbose", True, "warn (warnings.warn, never print) where x-transformers logs a diagnostic: "
                "rotary embeddings on fewer than 32 features", page="models/layers"))

#
# ## Where the keywords are declared
#
# Each module below declares its technique's keywords when it is imported; adding a technique adds
# its line here.  (A technique module never imports this file, so there is no import circle.)
KEYWORD_MODULES = (
    "attention.attention", "attention.grouped_query", "attention.sliding_window", "attention.sparse_topk",
    "attention.entmax15", "attention.talking_heads", "attention.collaborative", "attention.attention_on_attention",
    "attention.gate_values", "attention.head_scale", "attention.qk_norm", "attention.residual_attention",
    "attention.fast_attention", "attention.head_gate", "attention.qk_rmsnorm", "residual.branch_output",
    "feedforward.solu", "feedforward.softclamp",
    "attention.latent_attention",
    "memory.persistent_memory",
    "positional.rotary", "positional.rope_scaling", "positional.alibi", "positional.t5_bias",
    "positional.position_infused",
    "feedforward.feedforward", "feedforward.glu", "feedforward.relu_squared", "feedforward.activations",
    "norms.scale_norm", "norms.rms_norm",
    # layers-a: the stack's norms, LayerScale, layouts, regularisation and positions
    "norms.layer_norm", "norms.dynamic_tanh", "norms.derf", "norms.adaptive_norm", "residual.layer_scale",
    "residual.residual", "residual.rezero", "residual.gated_residual", "residual.scale_residual",
    "residual.token_shift", "residual.reversible",
    "models.layout", "models.layer_sharing", "models.layer_dropout", "models.context_dropout",
    "models.softclamp_output", "positional.xpos", "positional.dynamic_position_bias", "positional.absolute",
    "positional.polar",
    # Scoring functions, positions inside attention, hybrid heads and values (x-transformers' `Attention`).
    "attention.sigmoid_attention", "attention.gumbel_softmax", "attention.hard_attention", "attention.l2_distance",
    "attention.selective", "attention.cog_attention", "attention.inverted_attention", "attention.softclamp",
    "attention.laser", "attention.zero_kv", "attention.learned_sink", "attention.hybrid",
    "attention.orthogonal_values", "positional.cope", "positional.forgetting", "positional.relative_projection",
    "positional.partial_rotary_heads",
    "moe.mixture", "moe.mixtral", "moe.switch", "moe.deepseek",
    # layers-b: the residual stream
    "residual.value_residual", "residual.residual_constant", "residual.zero_init_branch",
    "residual.depth_scale_residual", "residual.input_injection", "models.unet_skips", "residual.hyper_connections",
    "residual.orthogonal_residual", "models.layer_integration", "models.aggregated_residuals",
    "residual.mv_split_residual", "residual.gated_multi_residual",
)
for _module in KEYWORD_MODULES:
    importlib.import_module(f"{__package__}.{_module}")


#
# ## Option objects
#
# One object per group holds a value for every declared keyword of the group: the user's, or the
# declared default.  Reading an undeclared name is an `AttributeError`.
class Options:
    """The values of one group of keywords (`stack`, `attn` or `ff`), defaults filled in."""

    group: ClassVar[str] = ""

    def __init__(self, **values: Any):
        keywords = declared(self.group)
        for name in values:
            if name not in keywords:
                raise TypeError(f"{type(self).__name__}() got an unexpected option {name!r}")
        # A mutable default (a dict) is copied, so no two stacks share it.
        self.__dict__.update({name: copy.copy(k.default) for name, k in keywords.items()})
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not set: every declared keyword is.
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")

    def replace(self, **changes: Any):
        """A copy with `changes` applied."""
        new = copy.copy(self)
        new.__dict__.update(changes)
        return new

    def changed(self) -> dict[str, Any]:
        """The options whose values differ from the declared defaults."""
        keywords = declared(self.group)
        return {n: v for n, v in self.__dict__.items() if n in keywords and v != keywords[n].default}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.changed().items())})"


class AttentionOptions(Options):
    """Options of every attention layer (keywords `attn_*`)."""

    group = "attn"

    def num_kv_heads(self, heads: int) -> int:
        """Key/value heads: `kv_heads`, 1 for multi-query, else one per query head."""
        return 1 if self.one_kv_head else (self.kv_heads or heads)

    def key_width(self, dim: int) -> int:
        """Width of queries and keys per head: `dim_head`, or the shared width of collaborative heads."""
        if self.collab_heads:
            return max(1, int((self.collab_compression or 0.3) * dim))
        return self.dim_head


class FeedForwardOptions(Options):
    """Options of every feed-forward layer (keywords `ff_*`)."""

    group = "ff"

    def activation_name(self) -> str:
        """The activation of the hidden layer: `activation`, or the one the older flags choose."""
        if self.activation is not None:
            return self.activation
        return "relu_squared" if self.relu_squared else "silu" if self.swish else "gelu"


class LayerOptions(Options):
    """Options of a stack of attention and feed-forward blocks."""

    group = "stack"
    attn: AttentionOptions
    cross_attn: Optional[AttentionOptions]
    ff: FeedForwardOptions

    def __init__(self, dim: int, depth: int, attn: Optional[AttentionOptions] = None,
                 cross_attn: Optional[AttentionOptions] = None, ff: Optional[FeedForwardOptions] = None,
                 **values: Any):
        super().__init__(dim=dim, depth=depth, **values)
        self.attn = attn if attn is not None else AttentionOptions()
        self.cross_attn = cross_attn
        self.ff = ff if ff is not None else FeedForwardOptions()

    @property
    def has_relative_positions(self) -> bool:
        """True when a scheme gives positions inside attention (the absolute embedding can go)."""
        return self.rel_pos_bias or self.rotary_pos_emb or self.alibi_pos_emb or self.dynamic_pos_bias \
            or self.polar_pos_emb


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
    # x-transformers' `Attention` keyword; in a stack the three inputs come from hyper-connections.
    "attn_qkv_receive_diff_residuals": "qkv_receive_diff_residuals",
}


def valid_layer_keywords() -> list[str]:
    """Every keyword `AttentionLayers` accepts, as a user would spell it."""
    attn = declared("attn")
    return sorted(
        set(declared("stack")) | {"attn_" + k for k in attn} | {"cross_attn_" + k for k in attn}
        | {"ff_" + k for k in declared("ff")} | set(ALIASES)
    )


# Techniques of self-attention only: the `attn_` keyword leaves cross-attention layers alone.
SELF_ATTENTION_ONLY = ("selective", "use_cope", "data_dependent_alibi", "use_rel_proj_pos_bias", "hybrid_module",
                       "orthog_projected_values", "orthog_projected_values_per_head", "rotate_num_heads")


#
# ## Parsing
def parse_layer_options(owner: str, dim: int, depth: int, kwargs: dict[str, Any]) -> LayerOptions:
    """Turn the flat keywords of `Encoder`/`Decoder`/... into a validated `LayerOptions`."""
    stack_keys, attn_keys, ff_keys = declared("stack"), declared("attn"), declared("ff")
    layer: dict[str, Any] = {}
    attn: dict[str, Any] = {}
    cross: dict[str, Any] = {}
    ff: dict[str, Any] = {}
    for name, value in kwargs.items():
        key = ALIASES.get(name, name)
        # A stack keyword may itself start with `attn_` (`attn_aggregated_residuals`): it is matched first.
        if key in stack_keys and key not in ("dim", "depth"):
            stack_keys[key].validate(value)
            layer[key] = value
        elif key.startswith("cross_attn_") and key[len("cross_attn_"):] in attn_keys:
            attn_keys[key[len("cross_attn_"):]].validate(value, "cross_attn_")
            cross[key[len("cross_attn_"):]] = value
        elif key.startswith("attn_") and key[len("attn_"):] in attn_keys:
            attn_keys[key[len("attn_"):]].validate(value)
            attn[key[len("attn_"):]] = value
        elif key.startswith("ff_") and key[len("ff_"):] in ff_keys:
            ff_keys[key[len("ff_"):]].validate(value)
            ff[key[len("ff_"):]] = value
        else:
            raise unknown_keyword_error(owner, name, valid_layer_keywords())
    if "max_attend_past" in cross:
        raise ValueError("cross_attn_max_attend_past: cross-attention keys have no position relative to the "
                         "queries; a sliding window (attn_max_attend_past) applies to self-attention only")
    for name in SELF_ATTENTION_ONLY:
        if cross.get(name) not in (None, False):
            raise ValueError(f"cross_attn_{name}: it reads positions, the layer's own tokens or their values, "
                             f"so it applies to self-attention only (attn_{name})")
    # One way of giving the key/value heads of cross-attention overrides the other way inherited from `attn_*`.
    if "one_kv_head" in cross:
        cross.setdefault("kv_heads", None)
    if "kv_heads" in cross:
        cross.setdefault("one_kv_head", False)
    attn_opts = AttentionOptions(**attn)
    cross_opts = attn_opts.replace(**cross) if cross else None
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
