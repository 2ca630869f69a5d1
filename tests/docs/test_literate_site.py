"""The site: its structure from the source tree, and a strict MkDocs build of the real repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from literate import site
from literate.parser import parse
from literate.render import RenderOptions, highlight_lines, render_page

ROOT = Path(__file__).resolve().parents[2]


def test_relative_url():
    assert site.relative_url("api/attention/#x.Y", "labml_style_nn/attention/rotary/") == "../../../api/attention/#x.Y"
    assert site.relative_url("labml_style_nn/a/b/", "") == "labml_style_nn/a/b/"
    assert site.relative_url("labml_style_nn/a/b/#L3", "labml_style_nn/a/b/") == "./#L3"
    assert site.page_url("labml_style_nn/a/index.md") == "labml_style_nn/a/"
    assert site.page_url("index.md") == ""


def test_discover_and_exports_on_a_small_tree(tmp_path):
    pkg = tmp_path / "labml_style_nn"
    (pkg / "positional").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        'from .positional import Rotary as Rot, helper\n__all__ = ["Rot", "helper"]\n'
    )
    (pkg / "positional" / "__init__.py").write_text('"""Positions."""\nfrom .rotary import Rotary, helper\n')
    (pkg / "positional" / "rotary.py").write_text(
        'r"""\n# Rotary\n\n*Paper:* [R](https://r.org) (S, 2021)\n\nIt rotates. More.\n"""\n\n\nclass Rotary:\n    pass\n\n\ndef helper():\n    pass\n'
    )
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "train.py").write_text('"""# Train\n\nTrains."""\n')
    pages = site.discover(tmp_path)
    assert [p.path for p in pages] == [
        "labml_style_nn/__init__.py",
        "labml_style_nn/positional/__init__.py",
        "labml_style_nn/positional/rotary.py",
        "experiments/train.py",
    ]
    rotary = pages[2]
    assert (rotary.title, rotary.meta.summary, rotary.src_uri) == ("Rotary", "It rotates.", "labml_style_nn/positional/rotary.md")
    exports = site.find_exports(tmp_path)
    assert [(e.name, e.module, e.line, e.kind, e.identifier) for e in exports] == [
        ("Rot", "labml_style_nn.positional.rotary", 10, "class", "labml_style_nn.positional.rotary.Rotary"),
        ("helper", "labml_style_nn.positional.rotary", 14, "function", "labml_style_nn.positional.rotary.helper"),
    ]
    nav = site.build_nav(pages, exports, [], ["results.md"])
    titles = [next(iter(entry)) for entry in nav]
    assert titles == ["Home", "Core", "Positional information", "Experiments", "API reference", "Results"]
    positional = nav[2]["Positional information"]
    assert positional == ["labml_style_nn/positional/index.md", {"Rotary": "labml_style_nn/positional/rotary.md"}]
    landing = site.landing_markdown(pages, exports)
    assert "[Rotary](labml_style_nn/positional/rotary.md)" in landing and "[R](https://r.org) (S, 2021)" in landing
    assert "## Getting started" in landing


@pytest.mark.katex
def test_rendered_page_has_rows_anchors_and_links():
    src = 'r"""\n# T\n\nSee [other](other.py#L2), $x$.\n"""\n\nimport os\n\n\nclass A:\n    """Doc."""\n\n    x = 1\n'
    html, errors = render_page(
        parse(src),
        src,
        RenderOptions(source_path="pkg/t.py", source_url="../src/t.py", api_links={"A": "../api/#A"}, link_resolver=lambda h: "../other/#L2"),
    )
    assert not errors
    assert html.count('class="lit-row') == 3  # the introduction, the imports, the class
    assert 'class="lit-row lit-intro"' in html
    for n in range(1, src.count("\n") + 1):
        assert f'id="L{n}"' in html
    assert 'href="../other/#L2"' in html and 'href="../src/t.py"' in html
    assert 'class="lit-api-link" href="../api/#A"' in html
    assert "<math" in html


def test_highlighting_keeps_line_structure():
    src = 'x = """a\nb"""\n\n# c\ny = 1'
    lines = highlight_lines(src)
    assert len(lines) == 5
    assert "b" in lines[1] and lines[2] == "" and 'class="c1"' in lines[3]


@pytest.mark.slow
def test_strict_build_of_the_repository(built_site: Path):
    pages = site.discover(ROOT)
    for group in {p.group for p in pages}:
        for page in site.content_pages(pages, group):
            out = built_site / page.url / "index.html"
            assert out.is_file(), f"no page for {page.path}"
            html = out.read_text(encoding="utf-8")
            assert 'class="literate"' in html and page.path in html
    index = (built_site / "index.html").read_text(encoding="utf-8")
    assert "Getting started" in index
    for page in pages:
        if page.meta.title and not page.is_init and page.group != site.EXPERIMENTS:
            assert page.url in index, f"{page.path} missing from the landing page"
    # Math everywhere is rendered, never TeX (which stays only where it is kept on purpose: the
    # `data-tex` attribute and KaTeX's annotation for screen readers).
    for html_file in built_site.rglob("*.html"):
        text = re.sub(r' data-tex="[^"]*"', "", html_file.read_text(encoding="utf-8"))
        text = re.sub(r"<annotation[^>]*>.*?</annotation>", "", text, flags=re.S)
        text = re.sub(r"<code.*?</code>|<pre.*?</pre>", "", text, flags=re.S)
        assert "$$" not in text and "\\frac" not in text and 'class="arithmatex"' not in text, html_file
    # API reference and annotated pages link to each other.
    exports = site.find_exports(ROOT)
    for e in exports:
        api = (built_site / site.page_url(site.api_uri(e.group)) / "index.html").read_text(encoding="utf-8")
        assert f'id="{e.identifier}"' in api, e.identifier
        target = next(p for p in pages if p.path == e.path)
        assert f'href="{site.relative_url(target.url + f"#L{e.line}", site.page_url(site.api_uri(e.group)))}"' in api
        literate = (built_site / target.url / "index.html").read_text(encoding="utf-8")
        assert site.relative_url(site.api_anchor_url(e), target.url) in literate
    # Nothing was generated into the source tree.
    assert not (ROOT / "docs" / "index.md").exists() and not (ROOT / "docs" / "labml_style_nn").exists()


def test_links_between_source_files_are_resolved():
    a = site.SourcePage("labml_style_nn/feedback/attention.py", "feedback", "")
    b = site.SourcePage("labml_style_nn/feedback/memory.py", "feedback", "")
    c = site.SourcePage("labml_style_nn/attention/attention.py", "attention", "")
    known = {p.path: p for p in (a, b, c)}
    assert site.resolve_source_link("memory.md", a.path, known) == (b, "")
    assert site.resolve_source_link("memory.py#L3", a.path, known) == (b, "#L3")
    assert site.resolve_source_link("../attention/attention.py", a.path, known) == (c, "")
    assert site.resolve_source_link("https://x.org/a.py", a.path, known) is None
    assert site.resolve_source_link("missing.py", a.path, known) is None
    # A summary shown on the landing page keeps working links, and loses broken ones.
    a.meta.title, a.meta.summary = "A", "Reads the [memory](memory.md) and [gone](gone.md)."
    landing_item = site._technique_list([a], "index.md", known)[0]
    assert "[memory](labml_style_nn/feedback/memory.md)" in landing_item and "gone.md" not in landing_item


def test_docstring_links_resolve_from_the_api_reference():
    """A link written relative to the source file works on the API page, one folder down in `api/`."""
    from literate.griffe_doctests import relink_for_api

    text = "see [scaling](rope_scaling.md#L3), [attention](../attention/attention.py), [web](https://a.b/c.md)"
    assert relink_for_api(text, "labml_style_nn/positional/rotary.py") == (
        "see [scaling](../labml_style_nn/positional/rope_scaling.md#L3), "
        "[attention](../labml_style_nn/attention/attention.md), [web](https://a.b/c.md)"
    )
