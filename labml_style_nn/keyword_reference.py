r"""
# Keyword reference

Every keyword of the API in one table: the layer stacks (`Encoder`, `Decoder`, `CrossAttender`,
`AttentionLayers`), their `attn_*`, `cross_attn_*` and `ff_*` keywords, the wrappers, and the
`enc_*`/`dec_*` prefixes of `XTransformer`.  For each: its type and default, what it does, the page
that explains it, and the keywords it cannot be combined with or needs.

Nothing here is typed twice.  The keywords of the stacks, their types, defaults, descriptions and
pages are read from the declarations each technique makes beside its code ([keywords](keywords.md));
the wrappers' keywords from their signatures, with the one-line descriptions of
[keyword_descriptions.py](keyword_descriptions.md) (a test fails when a keyword has none, or a
description has no keyword).  Which keywords exclude or need each other is found by asking
[options.py](options.md), the one place keywords are parsed, about every pair.  The same table is
the `help()` of the stacks and the *Keyword reference* page of the API reference.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from dataclasses import MISSING, dataclass

from . import options
from .keyword_descriptions import GENERATE, WRAPPER_CLASSES, WRAPPERS, XTRANSFORMERS_2_31
from .keywords import GROUPS, Keyword, declared


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
    # x-transformers 2.31 has this keyword (stack keywords; wrappers are not marked).
    xtransformers: bool = True


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


def declared_keywords() -> list[tuple[str, Keyword]]:
    """`(spelt keyword, declaration)` of every stack, `attn_*` and `ff_*` keyword."""
    return [(k.spelt(), k) for group in GROUPS for k in declared(group).values()]


def _examples() -> dict[str, object]:
    """The example value each declaration gives (used to switch a keyword on when probing)."""
    return {spelt: k.example for spelt, k in declared_keywords() if k.example is not None}


#
# ## Which keywords exclude or need each other
#
# A keyword is switched on (a boolean flipped, or its example value) alone and together with every
# other one; `options.parse_layer_options` decides.  A pair refused although each alone is fine
# excludes each other; a keyword refused alone needs any partner that makes it valid.
def _accepted(kwargs: dict) -> bool:
    # A keyword accepted with a warning that it has no effect (as x-transformers ignores it) still needs a partner.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            options.parse_layer_options("probe", 64, 2, dict(kwargs))
        except (TypeError, ValueError):
            return False
    return not any("no effect" in str(w.message) for w in caught)


@functools.lru_cache(maxsize=1)
def relations() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """keyword -> (the keywords it excludes, the keywords one of which it needs)."""
    probes = {}
    for keyword, k in declared_keywords():
        if k.required:
            continue
        value = k.example if k.example is not None else (not k.default) if isinstance(k.default, bool) else None
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
    rel = relations()
    rows = []
    for keyword, k in declared_keywords():
        excludes, needs = rel.get(keyword, ((), ()))
        rows.append(Row(keyword, k.type_name(), "required" if k.required else repr(k.default), k.doc, k.page,
                        excludes, needs, "stack", k.xtransformers))
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


def generate_rows() -> list[Row]:
    """The keywords of `generate` (read from its signatures); any other keyword goes to the model's `forward`."""
    import labml_style_nn as package

    rows: dict[str, Row] = {}
    for cls_name in ("AutoregressiveWrapper", "XTransformer"):
        for p in list(inspect.signature(getattr(package, cls_name).generate).parameters.values())[1:]:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in rows:
                description, page = GENERATE.get(p.name, ("", ""))
                default = "top_k" if callable(p.default) else _default(p.default)
                rows[p.name] = Row(p.name, _type_name(p.annotation), default, description, page, where=cls_name)
    return list(rows.values())


def all_rows() -> list[Row]:
    return stack_rows() + wrapper_rows() + generate_rows()


def missing_descriptions() -> list[str]:
    """Keywords the code accepts that have no description here (a test keeps this empty)."""
    return [r.keyword for r in all_rows() if not r.description]


def unknown_descriptions() -> list[str]:
    """Descriptions of keywords the code does not accept (a test keeps this empty)."""
    described = set(WRAPPERS) | set(GENERATE)
    return sorted(described - {r.keyword for r in all_rows()})


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
    lines = ["Keywords (generated from the declarations beside each technique; the site's API reference has the "
             "same table):", ""]
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
        out = ["| keyword | type = default | what it does (page) | " + ("taken by |" if where else "excludes / needs |"),
               "|---|---|---|---|"]
        for r in rows:
            # Four columns fit a page; `|` inside a cell would split it, so unions are written with "or".
            kind = f"{r.type.replace(' | ', ' or ')} = {r.default}" if r.type else ""
            link = f"[{r.page.split('/')[-1]}](../labml_style_nn/{r.page}.md)"
            cells = [f"`{r.keyword}`", kind, f"{r.description} ({link})", r.where if where else _relation_text(r)]
            out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        return out + [""]

    rows = stack_rows()
    page = ["# Keyword reference", "",
            "Every keyword of the API, generated from the declarations each technique makes beside its code "
            "(see [keywords](../labml_style_nn/keywords.md)) and the wrappers' signatures, so it cannot drift from "
            "the code.  *Excludes* lists the "
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
    page += ["## `generate`", "", "Other keywords of `generate` (e.g. `context=`) go to the model's `forward`.", ""]
    page += table(generate_rows(), True)
    page += coverage_markdown()
    return "\n".join(page)


#
# ## How much of x-transformers 2.31 is accepted
#
# `Attention`'s `dim`, `heads` and `causal`, and `FeedForward`'s `dim`, are set by the stack, not by a
# keyword; every other constructor keyword counts, under the name a stack or wrapper user writes.
_SET_BY_THE_STACK = {"Attention": {"dim", "heads", "causal"}, "FeedForward": {"dim"}}


def xtransformers_coverage() -> dict[str, tuple[list[str], list[str]]]:
    """class -> (keywords of x-transformers 2.31 accepted here, those not yet), as users spell them."""
    import labml_style_nn as package

    stack = set(options.valid_layer_keywords())
    wrapper = set(inspect.signature(package.TransformerWrapper.__init__).parameters)
    spelling = {"Attention": "attn_", "FeedForward": "ff_", "AttentionLayers": "", "TransformerWrapper": ""}
    out = {}
    for cls, names in XTRANSFORMERS_2_31.items():
        spelt = [spelling[cls] + n for n in names if n not in _SET_BY_THE_STACK.get(cls, ())]
        accepted_here = wrapper if cls == "TransformerWrapper" else stack
        out[cls] = ([k for k in spelt if k in accepted_here], [k for k in spelt if k not in accepted_here])
    return out


def coverage_markdown() -> list[str]:
    """The coverage section of the reference page."""
    cov = xtransformers_coverage()
    total = sum(len(a) + len(m) for a, m in cov.values())
    accepted = sum(len(a) for a, _ in cov.values())
    out = ["## x-transformers 2.31 compatibility", "",
           f"Of the {total} constructor keywords of x-transformers 2.31.10 (`Attention` as `attn_*`, `FeedForward` "
           f"as `ff_*`, `AttentionLayers`, `TransformerWrapper`), {accepted} are accepted here with its meaning.  "
           "Not yet accepted:", ""]
    for cls, (_, missing) in cov.items():
        out.append(f"- `{cls}` ({len(missing)}): " + (", ".join(f"`{k}`" for k in missing) or "none"))
    return out + [""]


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


_DEFAULTS = {keyword: k.default for keyword, k in declared_keywords()}


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


# Example values for probing, read from the declarations (tests use them to switch keywords on).
EXAMPLES = _examples()
