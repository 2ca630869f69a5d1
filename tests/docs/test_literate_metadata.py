"""The module-docstring metadata that feeds the landing page."""

from __future__ import annotations

from literate.metadata import first_sentence, module_docstring, parse_metadata

DOC = r"""
# Rotary positional embeddings

*Paper:* [RoFormer: Enhanced Transformer with Rotary Position Embedding](https://arxiv.org/abs/2104.09864) (Su et al., 2021)

Rotary embeddings rotate each query and key by an angle, e.g. $\theta_i$, so that
their dot product depends only on the distance. A second sentence.

$$\langle R_i q, R_j k \rangle = \langle q, R_{j-i} k \rangle$$

## Differences from the paper
"""


def test_title_paper_and_summary():
    meta = parse_metadata(DOC)
    assert meta.title == "Rotary positional embeddings"
    assert len(meta.papers) == 1
    paper = meta.papers[0]
    assert paper.title == "RoFormer: Enhanced Transformer with Rotary Position Embedding"
    assert paper.url == "https://arxiv.org/abs/2104.09864"
    assert (paper.authors, paper.year) == ("Su et al.", "2021")
    assert meta.summary == (
        r"Rotary embeddings rotate each query and key by an angle, e.g. $\theta_i$, so that their dot "
        "product depends only on the distance."
    )


def test_several_papers_and_no_paper():
    doc = (
        "# Two\n\n*Paper:* [A](https://a.org) (Smith, 2019); [B](https://b.org/x_(y)) (Lee and Kim, 2020a)\n\n"
        "Summary here. More."
    )
    meta = parse_metadata(doc)
    assert [(p.title, p.url, p.authors, p.year) for p in meta.papers] == [
        ("A", "https://a.org", "Smith", "2019"),
        ("B", "https://b.org/x_(y)", "Lee and Kim", "2020a"),
    ]
    assert meta.summary == "Summary here."
    plain = parse_metadata("# Core\n\nThe layer stack: it runs the blocks.\n\n## More")
    assert plain.papers == [] and plain.title == "Core" and plain.summary == "The layer stack: it runs the blocks."


def test_summary_that_introduces_an_equation_ends_with_a_period():
    meta = parse_metadata("# T\n\nEach query collects the values of the keys that match it best:\n\n$$x$$")
    assert meta.summary == "Each query collects the values of the keys that match it best."


def test_first_sentence_respects_abbreviations_and_math():
    assert first_sentence("Vaswani et al. 2017 did it. Then more.") == "Vaswani et al. 2017 did it."
    assert first_sentence("Use $a. B$ here. Next.") == "Use $a. B$ here."
    assert first_sentence("No period") == "No period"


def test_module_docstring_reads_the_source():
    src = 'r"""\n# T\n\n*Paper:* [P](https://p.org) (X, 2020)\n\nSum $\\frac{a}{b}$.\n"""\nimport os\n'
    meta = parse_metadata(module_docstring(src))
    assert meta.title == "T" and meta.summary == r"Sum $\frac{a}{b}$."
    assert module_docstring("import os\n") is None


def test_every_summary_of_the_project_is_a_finished_sentence_without_links():
    """The landing page and the section indexes list each page with its summary: a sentence that ends
    like one (not in the "," before an equation), and no in-page link, which would point nowhere there."""
    from pathlib import Path

    from literate import site

    pages = [p for p in site.discover(Path(__file__).resolve().parents[2]) if p.meta.summary]
    assert len(pages) > 40
    bad = [(p.path, p.meta.summary[-60:]) for p in pages
           if not p.meta.summary.rstrip("*_)").endswith((".", "?", "!")) or "](#" in p.meta.summary]
    assert not bad, bad
