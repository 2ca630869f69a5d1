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

Three pages make the parser: this one routes each keyword to its group (`attn_num_mem_kv` to
`attn.num_mem_kv`), resolves aliases and refuses unknown keywords; the
[option objects](option_objects.md) hold the values with their defaults; and
[validation](option_validation.md) checks them once, naming the keyword, and runs the rules each
technique declares.  Every name of the other two can still be imported from here
(`from labml_style_nn.options import LayerOptions`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .checks import unknown_keyword_error as unknown_keyword_error  # re-exported: models/xtransformer.py
from .keywords import Keyword, declare, declared

# The option objects and their validation have pages of their own; their names stay importable from here.
from .option_objects import AttentionOptions as AttentionOptions
from .option_objects import FeedForwardOptions as FeedForwardOptions
from .option_objects import LayerOptions as LayerOptions
from .option_objects import Options as Options
from .option_objects import rope_scaling as rope_scaling
from .option_validation import FF_ACTIVATIONS as FF_ACTIVATIONS
from .option_validation import validate as validate
from .option_validation import validate_attention as validate_attention
from .option_validation import validate_feedforward as validate_feedforward
from .option_validation import validate_reversible as validate_reversible

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
