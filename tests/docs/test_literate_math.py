"""TeX rendered by KaTeX at build time, and the protection of math from Markdown."""

from __future__ import annotations

import re

import pytest
from literate.render import render_prose
from literate.tex import MathError, convert_arithmatex, extract_math, tex_to_html


def visible(html: str) -> str:
    """What a reader sees: without the `data-tex` attributes and KaTeX's TeX annotation, which keep
    the source TeX on purpose (to copy it; for screen readers)."""
    html = re.sub(r' data-tex="[^"]*"', "", html)
    return re.sub(r"<annotation[^>]*>.*?</annotation>", "", html, flags=re.S)


@pytest.mark.katex
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
        r"\begin{bmatrix} a & \color{gray}{0} \\ b & c \end{bmatrix}",
        r"\underbrace{q^\top k}_{\text{(a)}} \xrightarrow{\text{shift}} x",
    ],
)
def test_renders_display_math(tex):
    out = tex_to_html(tex, display=True)
    assert out.startswith('<span class="lit-math-display"') and 'class="katex-display"' in out
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in out  # for screen readers
    body = visible(out)
    for leftover in ("\\frac", "\\begin", "$$", "\\sum", "\\text", "\\operatorname", "&amp;=", "\\color"):
        assert leftover not in body


@pytest.mark.katex
def test_aligned_has_two_rows_and_no_equation_numbers():
    out = tex_to_html(r"\begin{align} a &= b \\ c &= d \end{align}", display=True)
    assert out.count("<mtr>") == 2
    assert "(1)" not in visible(out) and "&amp;" not in visible(out)


@pytest.mark.katex
def test_function_names_are_operators_and_operatorname_is_upright():
    """`\\cos x` is an operator (upright, spaced from `x`); `\\operatorname{rotate\\_half}` too."""
    out = tex_to_html(r"x\cos p\theta")
    assert '<span class="mop">cos</span>' in out and out.count('class="mspace"') == 2
    out = tex_to_html(r"\operatorname{rotate\_half}(x)")
    assert 'class="mop"' in out and "mathnormal" not in out.split('class="mop"', 1)[1].split("(", 1)[0]


@pytest.mark.katex
def test_inline_math_is_a_span_with_its_tex():
    out = tex_to_html(r"x_i < 1")
    assert out.startswith('<span class="lit-math" data-tex="x_i &lt; 1">') and 'class="katex"' in out


@pytest.mark.katex
def test_unknown_command_is_an_error():
    with pytest.raises(MathError, match="notacommand"):
        tex_to_html(r"\notacommand{x}")


def test_extract_math_skips_code_and_escaped_dollars():
    text, stash = extract_math(r"cost \$5, `$not$`, $x_i$ and $$y^2$$")
    assert stash == [("x_i", False), ("y^2", True)]
    assert "`$not$`" in text and "&#36;5" in text and "$" not in text.replace("`$not$`", "")


def test_extract_math_skips_fenced_code():
    text, stash = extract_math("```\n$a$\n```\n\n$b$")
    assert stash == [("b", False)] and "$a$" in text


@pytest.mark.katex
def test_math_survives_markdown():
    html = render_prose(r"Scores $s_{ij} = q_i^\top k_j$ and $x_*$ *emph* then $a_1 * b_2$." "\n\n" r"$$\frac{a}{b}$$")
    html = visible(html)
    assert "$" not in html and "\\frac" not in html
    assert html.count("<math") == 4
    assert "<em>emph</em>" in html
    assert html.count('class="lit-math"') == 3
    assert '</p>\n<span class="lit-math-display">' in html  # display math alone replaces its paragraph


@pytest.mark.katex
def test_bad_math_is_reported_not_hidden():
    errors: list[str] = []
    html = render_prose(r"see $\nosuchcommand$", errors)
    assert errors and 'class="math-error"' in html


@pytest.mark.katex
def test_arithmatex_output_is_converted():
    html = (
        '<p>a <span class="arithmatex">\\(x_i &lt; 1\\)</span></p>'
        '<div class="arithmatex">\\[\\frac{a}{b}\\]</div>'
    )
    out = convert_arithmatex(html)
    assert out.count("<math") == 2 and "arithmatex" not in out
    assert "&lt;" in out.split("<math", 1)[1]  # `<` stays escaped inside the MathML


@pytest.mark.katex
def test_percent_and_escapes_survive():
    out = visible(tex_to_html(r"p\%"))
    assert "%" in out and "\\" not in out
    assert "<mtable" in tex_to_html(r"\begin{alignat}{2} a &= b \end{alignat}")


@pytest.mark.katex
def test_math_in_trailing_comments_of_the_code_is_rendered():
    from literate.render import highlight_lines

    line = highlight_lines("x = f(y)  # (b, n): $S_{ij}$, costs $5\n")[0]
    assert '<span class="c1"># (b, n): <span class="lit-math" data-tex="S_{ij}">' in line
    assert "costs $5" in line  # a dollar that is not math stays as typed
    assert highlight_lines("y = 1  # $\\nosuchcommand$\n")[0].count("$") == 2  # TeX that fails stays as typed
