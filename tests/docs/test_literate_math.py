"""TeX to MathML at build time, and the protection of math from Markdown."""

from __future__ import annotations

import re

import pytest
from literate.mathml import MathError, convert_arithmatex, extract_math, latex_to_mathml
from literate.render import render_prose


@pytest.mark.parametrize(
    "tex",
    [
        r"\frac{q_i^\top k_j}{\sqrt{d}}",
        r"\sum_{j} \exp(s_{ij})",
        r"\text{softmax}(x)",
        r"\operatorname{softmax}(x)",
        r"\mathrm{d}x",
        r"a \odot b \cdot c",
        r"\langle q, k \rangle",
        r"x^{2}_{i}",
        r"{\color{red} x}",
        r"\mathbb{R}^{d}",
        r"\begin{aligned} a &= b \\ c &= d \end{aligned}",
        r"\begin{align} a &= b \end{align}",
        r"\begin{equation} E = mc^2 \end{equation}",
        r"\dfrac{1}{2}",
    ],
)
def test_converts_to_mathml(tex):
    out = latex_to_mathml(tex, display=True)
    assert out.startswith("<math") and 'display="block"' in out
    body = out.split(">", 1)[1]  # skip the attributes, which keep the TeX
    for leftover in ("\\frac", "\\begin", "$$", "\\sum", "\\text", "\\operatorname", "&amp;="):
        assert leftover not in body


def test_aligned_becomes_a_table_with_two_rows():
    out = latex_to_mathml(r"\begin{aligned} a &= b \\ c &= d \end{aligned}", display=True)
    assert out.count("<mtr>") == 2 and "<mtable" in out
    assert "<mi>&</mi>" not in out and "(1)" not in out  # no stray ampersand, no equation numbers


def test_unknown_command_is_an_error():
    with pytest.raises(MathError):
        latex_to_mathml(r"\notacommand{x}")


def test_extract_math_skips_code_and_escaped_dollars():
    text, stash = extract_math(r"cost \$5, `$not$`, $x_i$ and $$y^2$$")
    assert stash == [("x_i", False), ("y^2", True)]
    assert "`$not$`" in text and "&#36;5" in text and "$" not in text.replace("`$not$`", "")


def test_extract_math_skips_fenced_code():
    text, stash = extract_math("```\n$a$\n```\n\n$b$")
    assert stash == [("b", False)] and "$a$" in text


def visible(html: str) -> str:
    """The HTML without the `data-tex` attributes, which keep the source TeX on purpose."""
    return re.sub(r' data-tex="[^"]*"', "", html)


def test_math_survives_markdown():
    html = render_prose(r"Scores $s_{ij} = q_i^\top k_j$ and $x_*$ *emph* then $a_1 * b_2$." "\n\n" r"$$\frac{a}{b}$$")
    html = visible(html)
    assert "$" not in html and "\\frac" not in html
    assert html.count("<math") == 4
    assert "<em>emph</em>" in html
    assert '<div class="lit-math-display"><math' in html  # display math alone replaces its paragraph


def test_bad_math_is_reported_not_hidden():
    errors: list[str] = []
    html = render_prose(r"see $\nosuchcommand$", errors)
    assert errors and 'class="math-error"' in html


def test_arithmatex_output_is_converted():
    html = (
        '<p>a <span class="arithmatex">\\(x_i &lt; 1\\)</span></p>'
        '<div class="arithmatex">\\[\\frac{a}{b}\\]</div>'
    )
    out = convert_arithmatex(html)
    assert out.count("<math") == 2 and "arithmatex" not in out
    assert "&lt;" in out.split("<math", 1)[1]  # `<` stays escaped inside MathML


def test_percent_and_escapes_survive():
    out = latex_to_mathml(r"p\%")
    assert "&#x00025;" in out and "<mi>\\</mi>" not in out
    assert "<mtable" in latex_to_mathml(r"\begin{alignat}{2} a &= b \end{alignat}")


def test_table_structure_lost_by_the_converter_is_an_error():
    """`\\color` inside a matrix makes latex2mathml leak `&` and row breaks as text."""
    with pytest.raises(MathError, match="table structure"):
        latex_to_mathml(r"\begin{bmatrix} a & \color{gray}{0} \\ b & c \end{bmatrix}", display=True)
    assert "<mtable" in latex_to_mathml(r"\begin{bmatrix} a & \overline{0} \\ b & c \end{bmatrix}", display=True)
