r"""
# Keyword reference

Every keyword of the API in one table: the layer stacks (`Encoder`, `Decoder`, `CrossAttender`,
`AttentionLayers`), their `attn_*`, `cross_attn_*` and `ff_*` keywords, the wrappers, and the
`enc_*`/`dec_*` prefixes of `XTransformer`.  For each: its type and default, what it does, the page
that explains it, and the keywords it cannot be combined with or needs.

Nothing here is typed twice.  The keywords, their types and defaults are read from the option
dataclasses of [options.py](options.md) (the one place keywords are parsed) and from the wrappers'
signatures; which keywords exclude or need each other is found by asking `options.validate` about
every pair.  Only the one-line descriptions below are written by hand, and a test fails when a
keyword has none (or a description has no keyword).  The same table is the `help()` of the stacks
and the *Keyword reference* page of the API reference.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import MISSING, dataclass, fields

from . import options

# ## The descriptions
#
# keyword -> (what it does, the page that explains it).  Stack keywords are spelt as the user spells
# them; attention and feed-forward ones with their `attn_`/`ff_` prefix.
STACK = {
    "dim": ("model width D", "models/layers"),
    "depth": ("number of layers (an attention and a feed-forward block each)", "models/layers"),
    "heads": ("attention heads", "attention/attention"),
    "causal": ("token i sees only tokens j <= i (`Decoder` sets it; `AttentionLayers` only)", "attention/attention"),
    "cross_attend": ("add a cross-attention block after each self-attention block", "models/layers"),
    "only_cross": ("cross-attention instead of self-attention (`CrossAttender` sets it)", "models/layers"),
    "dim_context": ("width of the cross-attention context, when it differs from dim", "attention/attention"),
    "pre_norm": ("normalise each branch's input (True) or the residual sum (False: post-norm)", "residual/residual"),
    "use_scalenorm": ("ScaleNorm instead of LayerNorm everywhere", "norms/scale_norm"),
    "use_rmsnorm": ("RMSNorm instead of LayerNorm everywhere", "norms/rms_norm"),
    "use_rezero": ("no norms; each branch is scaled by a learned scalar that starts at 0", "residual/rezero"),
    "sandwich_norm": ("also normalise each branch's output", "residual/residual"),
    "gate_residual": ("a GRU gate instead of the residual sum", "residual/gated_residual"),
    "scale_residual": ("a learned per-feature scale on the residual", "residual/scale_residual"),
    "sandwich_coef": ("sandwich transformer: k attention blocks first, k feed-forward blocks last", "models/layout"),
    "macaron": ("a half-step feed-forward block before and after each attention block", "models/layout"),
    "shift_tokens": ("shift feature chunks by 1..s tokens (int s, or one amount per chunk)", "residual/token_shift"),
    "residual_attn": ("add each layer's attention scores to the next layer's", "attention/residual_attention"),
    "cross_residual_attn": ("residual attention between the cross-attention layers", "attention/residual_attention"),
    "rel_pos_bias": ("T5's learned relative position bias on the scores", "positional/t5_bias"),
    "rel_pos_num_buckets": ("T5 bias: number of distance buckets", "positional/t5_bias"),
    "rel_pos_max_distance": ("T5 bias: distance beyond which buckets stop growing", "positional/t5_bias"),
    "rotary_pos_emb": ("rotary position embedding of queries and keys", "positional/rotary"),
    "rotary_emb_dim": ("features per head that rotate (default: half of dim_head, at least 32)", "positional/rotary"),
    "rotary_theta": ("rotary base b of the frequencies b^(-2k/r)", "positional/rotary"),
    "rotary_interpolation_factor": ("position interpolation: divide positions by s >= 1", "positional/rope_scaling"),
    "rotary_base_rescale_factor": ("NTK-aware scaling: raise the rotary base for s times longer contexts",
                                   "positional/rope_scaling"),
    "rotary_yarn_factor": ("YaRN: extend the context s times, per-frequency interpolation and a temperature "
                           "(needs rotary_yarn_original_max_len)", "positional/rope_scaling"),
    "rotary_yarn_original_max_len": ("YaRN: the training length it extends", "positional/rope_scaling"),
    "alibi_pos_emb": ("ALiBi: a linear distance penalty per head on the scores", "positional/alibi"),
    "alibi_num_heads": ("ALiBi on the first k heads only (the others have no position bias)", "positional/alibi"),
    "position_infused_attn": ("add sinusoidal positions to the queries' and keys' input, not the values'",
                              "positional/position_infused"),
    "norm_eps": ("epsilon of every norm of the stack (None: each norm's own default)", "models/build"),
    "gradient_checkpointing": ("recompute each block in the backward pass instead of keeping activations",
                               "models/layers"),
    "reversible": ("reversible layers: inputs recomputed from outputs, activation memory independent of depth",
                   "residual/reversible"),
}
ATTENTION = {
    "attn_dim_head": ("width of each head", "attention/attention"),
    "attn_dropout": ("dropout on the attention weights", "attention/attention"),
    "attn_num_mem_kv": ("learned key/value slots that every query can attend to", "memory/persistent_memory"),
    "attn_sparse_topk": ("keep only the k largest scores of each query", "attention/sparse_topk"),
    "attn_use_entmax15": ("entmax-1.5 instead of softmax (sparse weights)", "attention/entmax15"),
    "attn_talking_heads": ("mix the heads' scores before and after the softmax", "attention/talking_heads"),
    "attn_collab_heads": ("collaborative heads: shared query/key projections, mixed per head",
                          "attention/collaborative"),
    "attn_collab_compression": ("collaborative heads: shared width as a fraction of dim (default 0.3)",
                                "attention/collaborative"),
    "attn_on_attn": ("attention on attention: a gated linear unit on the attended values",
                     "attention/attention_on_attention"),
    "attn_gate_values": ("gate each head's output with a sigmoid of the input", "attention/gate_values"),
    "attn_head_scale": ("a learned scale per head (NormFormer)", "attention/head_scale"),
    "attn_qk_norm": ("l2-normalise queries and keys; a learned temperature replaces 1/sqrt(d)", "attention/qk_norm"),
    "attn_qk_norm_seq_len": ("qk-norm: the sequence length its temperature is initialised for", "attention/qk_norm"),
    "attn_kv_heads": ("grouped-query attention: key/value heads (must divide heads)", "attention/grouped_query"),
    "attn_one_kv_head": ("multi-query attention: one key/value head shared by all heads", "attention/grouped_query"),
    "attn_max_attend_past": ("sliding window: query i sees keys j with 0 <= i - j <= W", "attention/sliding_window"),
    "attn_qkv_bias": ("biases on the query, key and value projections", "attention/attention"),
    "attn_out_bias": ("a bias on the output projection", "attention/attention"),
    "attn_scale": ("the logit scale (None: 1/sqrt(dim_head); T5 uses 1.0)", "attention/attention"),
}
FEEDFORWARD = {
    "ff_mult": ("hidden width as a multiple of dim", "feedforward/feedforward"),
    "ff_glu": ("a gated linear unit as the hidden layer (GEGLU; SwiGLU with ff_swish)", "feedforward/glu"),
    "ff_relu_squared": ("ReLU squared as the activation (Primer)", "feedforward/relu_squared"),
    "ff_post_act_ln": ("a LayerNorm after the activation (NormFormer)", "feedforward/feedforward"),
    "ff_dropout": ("dropout on the hidden layer", "feedforward/feedforward"),
    "ff_swish": ("SiLU (Swish) as the activation; with ff_glu, SwiGLU", "feedforward/activations"),
    "ff_activation": ("the activation by name: gelu, gelu_tanh, relu, silu, sigmoid, identity, relu_squared",
                      "feedforward/activations"),
    "ff_inner_dim": ("hidden width, overriding ff_mult", "feedforward/feedforward"),
    "ff_no_bias": ("no biases in the feed-forward projections", "feedforward/feedforward"),
}
# Keywords of the wrappers, by name (a name means the same in every wrapper that takes it).
WRAPPERS = {
    "num_tokens": ("vocabulary size", "models/wrappers"),
    "max_seq_len": ("longest sequence the learned absolute positions cover", "models/wrappers"),
    "attn_layers": ("the stack: an Encoder, Decoder or AttentionLayers", "models/wrappers"),
    "emb_dim": ("token embedding width, projected to dim if different", "models/wrappers"),
    "emb_dropout": ("dropout after the embedding", "models/wrappers"),
    "num_memory_tokens": ("learned memory tokens prepended to every sequence", "memory/memory_tokens"),
    "max_mem_len": ("Transformer-XL memory length (0: no memory)", "memory/xl_recurrence"),
    "shift_mem_down": ("enhanced recurrence: layer l reads the memory of layer l + k", "memory/xl_recurrence"),
    "tie_embedding": ("the token embedding matrix is also the output projection", "models/wrappers"),
    "tie_embedding_scale": ("with tie_embedding: scale the hidden states before the tied projection (T5: D^-1/2)",
                            "models/wrappers"),
    "use_abs_pos_emb": ("absolute positions (None: off when the stack has relative ones)", "positional/absolute"),
    "sinusoidal_pos_emb": ("fixed sinusoids instead of learned absolute positions", "positional/absolute"),
    "logits_dim": ("output width (default: num_tokens)", "models/wrappers"),
    "logits_bias": ("a bias on the untied output projection (LLaMA-style heads have none)", "models/wrappers"),
    "dim_in": ("input feature width (default: dim)", "models/wrappers"),
    "dim_out": ("output feature width (default: dim)", "models/wrappers"),
    "image_size": ("height and width of the (square) images", "models/vit"),
    "patch_size": ("height and width of each patch (divides image_size)", "models/vit"),
    "channels": ("image channels", "models/vit"),
    "num_classes": ("classes of the linear head (None: return the patch embeddings)", "models/vit"),
    "use_cls_token": ("prepend a learned [class] token and classify from it (the paper's head)", "models/vit"),
    "patch_norm": ("LayerNorms before and after the patch projection (False: the paper's plain projection)",
                   "models/vit"),
    "net": ("the causal TransformerWrapper (or FeedbackTransformer) to train and sample", "generation/autoregressive"),
    "ignore_index": ("target value the loss skips", "generation/autoregressive"),
    "pad_value": ("token that fills ended rows and left padding", "generation/autoregressive"),
    "tie_token_emb": ("XTransformer: one token embedding for encoder and decoder", "models/xtransformer"),
}
# Example values for keywords that are not booleans, used to find which keywords exclude or need others.
EXAMPLES = {
    "heads": 4, "dim_context": 32, "sandwich_coef": 1, "shift_tokens": 1, "rel_pos_num_buckets": 16,
    "rel_pos_max_distance": 64, "rotary_emb_dim": 16, "rotary_theta": 500000.0, "rotary_interpolation_factor": 2.0,
    "rotary_base_rescale_factor": 2.0, "rotary_yarn_factor": 2.0, "alibi_num_heads": 2, "norm_eps": 1e-6,
    "attn_dim_head": 32, "attn_dropout": 0.1, "attn_num_mem_kv": 4, "attn_sparse_topk": 4,
    "attn_collab_compression": 0.5, "attn_qk_norm_seq_len": 64, "attn_kv_heads": 2, "attn_max_attend_past": 16,
    "attn_scale": 1.0, "ff_mult": 2, "ff_dropout": 0.1, "ff_activation": "relu", "ff_inner_dim": 96,
}
WRAPPER_CLASSES = ("TransformerWrapper", "ContinuousTransformerWrapper", "ViTransformerWrapper",
                   "AutoregressiveWrapper", "XTransformer")


@dataclass
class Row:
    """One keyword of the reference."""

    keyword: str
    type: str
    default: str
    description: str
    page: str
    excludes: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    where: str = ""


def _type_name(annotation) -> str:
    """`Optional[int]` -> `int | None`, as a user would write it."""
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    text = re.sub(r"\btyping\.", "", text)
    m = re.fullmatch(r"Optional\[(.*)\]", text)
    if m:
        return f"{_type_name(m.group(1))} | None"
    m = re.fullmatch(r"Union\[(.*)\]", text)
    if m:
        return " | ".join(part.strip() for part in m.group(1).split(","))
    return text


def _default(value) -> str:
    return "required" if value is MISSING or value is inspect.Parameter.empty else repr(value)


def _dataclass_keywords() -> list[tuple[str, object, str]]:
    """`(keyword, default, type)` of every stack, `attn_*` and `ff_*` keyword, from options.py."""
    out = []
    for f in fields(options.LayerOptions):
        if f.name in ("attn", "cross_attn", "ff"):
            continue
        out.append((f.name, f.default, _type_name(f.type)))
    for prefix, cls in (("attn_", options.AttentionOptions), ("ff_", options.FeedForwardOptions)):
        out += [(prefix + f.name, f.default, _type_name(f.type)) for f in fields(cls)]
    return out


#
# ## Which keywords exclude or need each other
#
# A keyword is switched on (a boolean flipped, or its example value) alone and together with every
# other one; `options.parse_layer_options` decides.  A pair refused although each alone is fine
# excludes each other; a keyword refused alone needs any partner that makes it valid.
def _accepted(kwargs: dict) -> bool:
    try:
        options.parse_layer_options("probe", 64, 2, dict(kwargs))
        return True
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def relations() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """keyword -> (the keywords it excludes, the keywords one of which it needs)."""
    probes = {}
    for keyword, default, _ in _dataclass_keywords():
        if keyword in ("dim", "depth"):
            continue
        value = EXAMPLES.get(keyword, (not default) if isinstance(default, bool) else None)
        if value is not None:
            probes[keyword] = value
    alone = {k: _accepted({k: v}) for k, v in probes.items()}
    # A boolean whose default is True is named with the value that matters: `pre_norm=False`.
    spelt = {k: f"{k}={v!r}" if v is False else k for k, v in probes.items()}
    out = {}
    for k, v in probes.items():
        pairs = {p: _accepted({k: v, p: w}) for p, w in probes.items() if p != k}
        if alone[k]:
            out[k] = (tuple(spelt[p] for p, ok in pairs.items() if alone[p] and not ok), ())
        else:
            out[k] = ((), tuple(spelt[p] for p, ok in pairs.items() if ok))
    return out


#
# ## The table
def stack_rows() -> list[Row]:
    """Every keyword of the layer stacks, with the aliases that spell them differently."""
    described = {**STACK, **ATTENTION, **FEEDFORWARD}
    rel = relations()
    rows = []
    for keyword, default, kind in _dataclass_keywords():
        description, page = described.get(keyword, ("", ""))
        excludes, needs = rel.get(keyword, ((), ()))
        rows.append(Row(keyword, kind, _default(default), description, page, excludes, needs, "stack"))
    by_name = {r.keyword: r for r in rows}
    for alias, target in options.ALIASES.items():
        t = by_name[target]
        rows.append(Row(alias, t.type, t.default, f"another spelling of {target}", t.page, where="alias"))
    rows.append(Row("cross_attn_<name>", "as attn_<name>", "attn_<name>'s value",
                    "any attn_ keyword, for the cross-attention layers only", "models/layers",
                    needs=("cross_attend", "only_cross"), where="stack"))
    return rows


def wrapper_rows() -> list[Row]:
    """The keywords of the wrappers (read from their signatures), one row per name."""
    import labml_style_nn as package

    rows: dict[str, Row] = {}
    for cls_name, cls in ((name, getattr(package, name)) for name in WRAPPER_CLASSES):
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if p.name in rows:
                rows[p.name].where += f", {cls_name}"
                continue
            description, page = WRAPPERS.get(p.name, ("", ""))
            if cls_name == "XTransformer" and p.name == "dim":
                description, page = "model width of encoder and decoder", "models/xtransformer"
            rows[p.name] = Row(p.name, _type_name(p.annotation), _default(p.default), description, page, where=cls_name)
    rows["enc_<name>"] = Row("enc_<name>", "", "", "XTransformer: any TransformerWrapper or Encoder keyword, for the "
                             "encoder (enc_num_tokens and enc_max_seq_len are required)", "models/xtransformer",
                             where="XTransformer")
    rows["dec_<name>"] = Row("dec_<name>", "", "", "XTransformer: any TransformerWrapper or Decoder keyword, for the "
                             "decoder (cross_attend=True by default)", "models/xtransformer", where="XTransformer")
    return list(rows.values())


def missing_descriptions() -> list[str]:
    """Keywords the code accepts that have no description here (a test keeps this empty)."""
    return [r.keyword for r in stack_rows() + wrapper_rows() if not r.description]


def unknown_descriptions() -> list[str]:
    """Descriptions of keywords the code does not accept (a test keeps this empty)."""
    accepted = {r.keyword for r in stack_rows() + wrapper_rows()}
    return sorted((set(STACK) | set(ATTENTION) | set(FEEDFORWARD) | set(WRAPPERS) | set(EXAMPLES)) - accepted)


#
# ## Text for `help()` and Markdown for the site
def _relation_text(r: Row) -> str:
    parts = []
    if r.excludes:
        parts.append("excludes " + ", ".join(r.excludes))
    if r.needs:
        parts.append("needs " + " or ".join(r.needs))
    # A boolean that is on by default relates to others when it is turned off.
    if parts and r.type == "bool" and r.default == "True":
        parts[0] = f"{r.keyword}=False {parts[0]}"
    return "; ".join(parts)


def help_text(rows: list[Row] | None = None, skip: tuple[str, ...] = ()) -> str:
    """The reference as plain text, one keyword per entry (the `help()` of the stacks)."""
    lines = ["Keywords (generated from labml_style_nn/options.py; the site's API reference has the same table):", ""]
    for r in rows if rows is not None else stack_rows():
        if r.keyword in skip:
            continue
        head = f"    {r.keyword}: {r.type} = {r.default}" if r.type else f"    {r.keyword}"
        lines.append(head)
        lines.append(f"        {r.description}.  Page: {r.page}.")
        relation = _relation_text(r)
        if relation:
            lines.append(f"        {relation[0].upper() + relation[1:] if relation.startswith(('ex', 'ne')) else relation}.")
    return "\n".join(lines)


def markdown() -> str:
    """The *Keyword reference* page of the site."""
    def table(rows: list[Row], where: bool) -> list[str]:
        out = ["| keyword | type | default | what it does | page | " + ("taken by |" if where else "excludes / needs |"),
               "|---|---|---|---|---|---|"]
        for r in rows:
            link = f"[{r.page.split('/')[-1]}](../labml_style_nn/{r.page}.md)"
            last = r.where if where else _relation_text(r)
            cells = [f"`{r.keyword}`", f"`{r.type}`" if r.type else "", f"`{r.default}`" if r.default else "",
                     r.description, link, last]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return out + [""]

    rows = stack_rows()
    page = ["# Keyword reference", "",
            "Every keyword of the API, generated from `labml_style_nn/options.py` (the one place keywords are "
            "parsed) and the wrappers' signatures, so it cannot drift from the code.  *Excludes* lists the "
            "keywords a stack refuses together with this one; *needs* the keywords one of which it requires.  "
            "`help(Decoder)` prints the same table.", "",
            "## Layer stacks: `Encoder`, `Decoder`, `CrossAttender`, `AttentionLayers`", ""]
    page += table([r for r in rows if not r.keyword.startswith(("attn_", "ff_")) and r.where != "alias"], False)
    page += ["## Attention: `attn_*` (and `cross_attn_*` for cross-attention layers)", ""]
    page += table([r for r in rows if r.keyword.startswith("attn_") and r.where != "alias"], False)
    page += ["## Feed-forward: `ff_*`", ""]
    page += table([r for r in rows if r.keyword.startswith("ff_")], False)
    page += ["## Other spellings", ""]
    page += table([r for r in rows if r.where == "alias"], False)
    page += ["## Wrappers and `XTransformer`", ""]
    page += table(wrapper_rows(), True)
    return "\n".join(page)


class KeywordDoc:
    """A class's `__doc__` with a keyword reference appended, computed when `help()` first asks for it."""

    def __init__(self, doc: str | None, make_text):
        self.doc, self.make_text, self.text = doc, make_text, None

    def __get__(self, obj, owner=None) -> str:
        if self.text is None:
            self.text = (self.doc or "").rstrip() + "\n\n" + self.make_text() + "\n"
        return self.text


class KeywordSignature:
    """The signature `help()` and editors show for a class that takes `**kwargs`: every keyword, typed."""

    def __init__(self, skip: tuple[str, ...]):
        self.skip, self.signature = skip, None

    def __get__(self, obj, owner=None):
        if obj is not None:
            return None  # an instance's signature is its `forward`'s
        if self.signature is None:
            kw = inspect.Parameter.KEYWORD_ONLY
            params = [inspect.Parameter(r.keyword, kw, annotation=r.type,
                                        default=inspect.Parameter.empty if r.default == "required"
                                        else _DEFAULTS.get(r.keyword))
                      for r in stack_rows() if r.where == "stack" and "<" not in r.keyword and r.keyword not in self.skip]
            params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
            self.signature = inspect.Signature(params)
        return self.signature


_DEFAULTS = {keyword: default for keyword, default, _ in _dataclass_keywords()}


def attach_doc(cls: type, make_text) -> None:
    """Append `make_text()` to `help(cls)`, computed on first use."""
    # typeshed declares `type.__doc__` as `str | None`; a descriptor in its place serves `help()` a `str`.
    cls.__doc__ = KeywordDoc(cls.__dict__.get("__doc__"), make_text)  # pyright: ignore[reportAttributeAccessIssue]


def attach(cls: type, skip: tuple[str, ...] = ()) -> type:
    """Make `help(cls)` show every stack keyword (computed on first use, so importing stays fast)."""
    attach_doc(cls, lambda: help_text(skip=skip))
    cls.__signature__ = KeywordSignature(skip)
    return cls


def xtransformer_text() -> str:
    """`help(XTransformer)`: its own keywords, then the stack and wrapper keywords its prefixes route."""
    own = [r for r in wrapper_rows() if "XTransformer" in r.where]
    wrappers = [r for r in wrapper_rows() if "TransformerWrapper" in r.where.split(", ")]
    return (help_text(own) + "\n\nWith enc_ or dec_ in front, every TransformerWrapper keyword:\n\n"
            + help_text(wrappers).split("\n", 2)[2] + "\n\nand every stack keyword:\n\n"
            + help_text(skip=("dim", "causal", "only_cross")).split("\n", 2)[2])
