"""The keyword reference lists every keyword the code accepts, and nothing else (it is generated from options.py)."""

import inspect
import pathlib
import pydoc
import re

import pytest

import labml_style_nn
from labml_style_nn import AttentionLayers, Decoder, Encoder, XTransformer, keyword_reference, options

ROOT = pathlib.Path(__file__).resolve().parents[2]


def listed() -> set[str]:
    return {r.keyword for r in keyword_reference.stack_rows()}


def test_every_accepted_stack_keyword_is_listed_with_a_description():
    accepted = set(options.valid_layer_keywords())
    # `cross_attn_<name>` is one row for every attention keyword (a stack keyword may start with it too:
    # `cross_attn_tokens_dropout`).
    stack = set(options.declared("stack"))
    plain = {k for k in accepted if not k.startswith("cross_attn_") or k in stack}
    assert plain - listed() == set(), "keywords the stacks accept but the reference does not list"
    assert all(k[len("cross_"):] in listed() for k in accepted - plain)
    assert keyword_reference.missing_descriptions() == [], "add a line to keyword_reference.py for each"


def test_no_listed_keyword_is_unknown():
    accepted = set(options.valid_layer_keywords())
    assert {k for k in listed() if "<" not in k} - accepted == set()
    assert keyword_reference.unknown_descriptions() == []


def test_every_wrapper_keyword_is_listed():
    rows = {r.keyword: r for r in keyword_reference.wrapper_rows()}
    for name in keyword_reference.WRAPPER_CLASSES:
        cls = getattr(labml_style_nn, name)
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                assert rows[p.name].description, (name, p.name)
                assert name in rows[p.name].where


def test_every_generate_keyword_is_listed():
    rows = {r.keyword: r for r in keyword_reference.generate_rows()}
    for cls in (labml_style_nn.AutoregressiveWrapper, XTransformer):
        for p in list(inspect.signature(cls.generate).parameters.values())[1:]:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                assert rows[p.name].description, (cls.__name__, p.name)


def test_every_page_exists():
    for row in keyword_reference.all_rows():
        assert (ROOT / "labml_style_nn" / f"{row.page}.py").is_file(), (row.keyword, row.page)


def test_relations_are_what_the_stack_refuses():
    rel = keyword_reference.relations()
    assert "use_rmsnorm" in rel["use_scalenorm"][0] and "use_scalenorm" in rel["use_rmsnorm"][0]
    assert rel["alibi_num_heads"][1] == ("alibi_pos_emb",)
    assert "sandwich_norm" in rel["pre_norm"][0]
    # Every exclusion listed is refused by the stack itself, with a ValueError naming both keywords.
    for keyword, (excludes, _) in rel.items():
        for other in excludes:
            name = other.split("=")[0]
            value = False if other.endswith("=False") else keyword_reference.EXAMPLES.get(name, True)
            mine = False if keyword == "pre_norm" else keyword_reference.EXAMPLES.get(keyword, True)
            with pytest.raises(ValueError) as info:
                # The probes run without `causal` (some keywords exclude a causal stack), so the plain stack.
                AttentionLayers(dim=64, depth=2, **{keyword: mine, name: value})
            message = str(info.value)
            assert keyword.removeprefix("attn_").removeprefix("ff_") in message or name in message, message


def test_help_and_signature_show_every_keyword():
    text = pydoc.render_doc(Decoder, renderer=pydoc.plaintext)
    for keyword in listed() - {"causal"}:
        assert keyword in text, keyword
    assert re.search(r"Excludes [a-z_, ]*use_rmsnorm", text) and "Page: positional/rotary" in text
    params = inspect.signature(Encoder).parameters
    assert "rotary_pos_emb" in params and params["attn_dim_head"].default == 64 and "causal" not in params
    # An instance's signature is still its forward's.
    assert "rotary_pos_emb" not in str(inspect.signature(Encoder(dim=8, depth=1, heads=2)))
    assert "enc_<name>" in pydoc.render_doc(XTransformer, renderer=pydoc.plaintext)


def test_markdown_page_lists_every_keyword():
    page = keyword_reference.markdown()
    for row in keyword_reference.all_rows():
        assert f"| `{row.keyword}` |" in page, row.keyword
    assert "(../labml_style_nn/positional/rotary.md)" in page
