r"""
# Math, offline

Prose carries TeX math: `$...$` inline and `$$...$$` on its own. At build time we convert it to
MathML with `latex2mathml`, which the browser renders natively: no CDN, no JavaScript.

Markdown would eat the math (`x_i ... y_j` turns into emphasis, `\\` into `\`), so the math is
*extracted* before Markdown runs, replaced by placeholders that Markdown leaves alone, and put back,
converted, afterwards.
"""

from __future__ import annotations

import html as _html
import re

from latex2mathml.converter import convert as _convert

__all__ = [
    "MathError",
    "latex_to_mathml",
    "extract_math",
    "restore_math",
    "convert_arithmatex",
    "math_to_html",
]

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: Markdown passes them through


class MathError(ValueError):
    """TeX that `latex2mathml` cannot convert faithfully."""


# `latex2mathml` understands `align`/`align*` (as a table) but not `aligned`; numbered `align` gets
# equation numbers we do not want. Everything becomes `align*`.
_ENV_ALIASES = {
    "aligned": "align*",
    "align": "align*",
    "alignat": "align*",
    "alignat*": "align*",
    "alignedat": "align*",
    "flalign": "align*",
    "flalign*": "align*",
    "eqnarray": "align*",
    "eqnarray*": "align*",
    "gather": "gathered",
    "gather*": "gathered",
}
_UNKNOWN_COMMAND = re.compile(r"<m(?:i|o|n|text)[^>]*>\\([A-Za-z]*)")


def _normalise(latex: str) -> str:
    latex = latex.strip()
    # `equation` is only a wrapper; `\tag`, `\label`, `\nonumber` have no meaning on a web page.
    latex = re.sub(r"\\(begin|end)\{equation\*?\}", "", latex)
    latex = re.sub(r"\\(?:label|tag)\{[^{}]*\}|\\nonumber|\\notag", "", latex)

    def env(m: re.Match) -> str:
        name = m.group(2)
        new = _ENV_ALIASES.get(name, name)
        out = f"\\{m.group(1)}{{{new}}}"
        if m.group(1) == "begin" and name.startswith(("alignat", "alignedat")):
            out += "\ue002"  # drop the column count argument below
        return out

    latex = re.sub(r"\\(begin|end)\{([A-Za-z]+\*?)\}", env, latex)
    latex = re.sub("\ue002(\\{\\d+\\})?", "", latex)
    # A few spellings that `latex2mathml` does not know.
    latex = latex.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    latex = re.sub(r"\\(?:bm|pmb)\b", r"\\boldsymbol", latex)
    return latex


def latex_to_mathml(latex: str, display: bool = False) -> str:
    """Convert TeX to a `<math>` element; raise `MathError` for input it cannot handle."""
    try:
        out = _convert(_normalise(latex), display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises many kinds of errors
        raise MathError(f"cannot convert {latex!r}: {e}") from e
    unknown = _UNKNOWN_COMMAND.search(out)
    if unknown:
        raise MathError(f"unknown TeX command \\{unknown.group(1)} in {latex!r}")
    # An alignment `&` or a row break that leaked out of its table means the converter lost the
    # structure (it happens with `\\color` inside a matrix): the reader would see raw markup.
    if re.search(r"<m[io]>&(amp;)?</m[io]>", out) or ('linebreak="newline"' in out and "<mtable" in out):
        raise MathError(f"the converter lost the table structure of {latex!r} (try without \\color)")
    # Keep the TeX on the element: handy to copy, and a test can check what was converted.
    return out.replace("<math ", f'<math data-tex="{_html.escape(latex.strip(), quote=True)}" ', 1)


def math_to_html(latex: str, display: bool, errors: list[str] | None = None, wrap: bool = True) -> str:
    """`latex_to_mathml`, but on failure show the TeX as code and record the error in `errors`."""
    try:
        mathml = latex_to_mathml(latex, display)
    except MathError as e:
        if errors is not None:
            errors.append(str(e))
        return f'<code class="math-error" title="TeX that could not be converted">{_html.escape(latex)}</code>'
    if display and wrap:
        return f'<div class="lit-math-display">{mathml}</div>'
    return mathml


_FENCE = re.compile(r"^\s*(```|~~~)")


def extract_math(text: str) -> tuple[str, list[tuple[str, bool]]]:
    """Replace each `$...$` / `$$...$$` in Markdown `text` by a placeholder.

    Returns the new text and the extracted `(tex, display)` pairs. Code spans and fenced code blocks
    are left alone; `\\$` is a literal dollar sign.
    """
    stash: list[tuple[str, bool]] = []
    out: list[str] = []

    def hold(tex: str, display: bool) -> str:
        stash.append((tex, display))
        return f"{_OPEN}{len(stash) - 1}{_CLOSE}"

    # Split off fenced code blocks first: they are copied verbatim.
    chunks: list[tuple[bool, str]] = []
    buf: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            chunks.append((False, "\n".join(buf)))
            buf, fence = [line], m.group(1)
        elif fence is not None and line.strip().startswith(fence):
            buf.append(line)
            chunks.append((True, "\n".join(buf)))
            buf, fence = [], None
        else:
            buf.append(line)
    chunks.append((fence is not None, "\n".join(buf)))

    for verbatim, chunk in chunks:
        if verbatim:
            out.append(chunk)
            continue
        i, n = 0, len(chunk)
        piece: list[str] = []
        while i < n:
            c = chunk[i]
            if c == "\\" and i + 1 < n and chunk[i + 1] == "$":
                piece.append("&#36;")
                i += 2
            elif c == "`":
                # A code span: copy up to the matching run of backticks.
                run = len(chunk[i:]) - len(chunk[i:].lstrip("`"))
                end = chunk.find("`" * run, i + run)
                if end < 0:
                    piece.append(chunk[i : i + run])
                    i += run
                else:
                    piece.append(chunk[i : end + run])
                    i = end + run
            elif chunk.startswith("$$", i):
                end = chunk.find("$$", i + 2)
                if end < 0:
                    piece.append(c)
                    i += 1
                else:
                    piece.append(hold(chunk[i + 2 : end], True))
                    i = end + 2
            elif c == "$":
                # Inline math: `$x$`, not `$ 5` or `5$`; never across a blank line.
                m = re.compile(r"\$(?=\S)((?:\\.|[^$\\])+?)(?<=\S)\$(?!\d)", re.S).match(chunk, i)
                if m and "\n\n" not in m.group(1):
                    piece.append(hold(m.group(1), False))
                    i = m.end()
                else:
                    piece.append(c)
                    i += 1
            else:
                piece.append(c)
                i += 1
        out.append("".join(piece))
    return "\n".join(out), stash


_PLACEHOLDER = re.compile(f"(<p>\\s*)?{_OPEN}(\\d+){_CLOSE}(\\s*</p>)?")


def restore_math(html: str, stash: list[tuple[str, bool]], errors: list[str] | None = None) -> str:
    """Put the math extracted by `extract_math` back into rendered HTML, as MathML."""

    def put(m: re.Match) -> str:
        tex, display = stash[int(m.group(2))]
        if display and m.group(1) and m.group(3):
            # A display equation alone in its paragraph replaces the paragraph.
            return math_to_html(tex, True, errors)
        return (m.group(1) or "") + math_to_html(tex, display, errors, wrap=False) + (m.group(3) or "")

    return _PLACEHOLDER.sub(put, html)


_ARITHMATEX = re.compile(
    r'<(span|div) class="arithmatex">(?:\\\((.*?)\\\)|\\\[(.*?)\\\]|(\\begin\{.*?\\end\{[^}]*\}))</\1>', re.S
)


def convert_arithmatex(html: str, errors: list[str] | None = None) -> str:
    """Convert the output of `pymdownx.arithmatex` (generic mode) to MathML.

    Pages that MkDocs renders itself (the landing page, the API reference, whose docstrings
    mkdocstrings renders) protect their math with arithmatex; this turns it into MathML.
    """

    def put(m: re.Match) -> str:
        if m.group(2) is not None:
            return math_to_html(_html.unescape(m.group(2)), False, errors)
        tex = m.group(3) if m.group(3) is not None else m.group(4)
        return math_to_html(_html.unescape(tex), True, errors)

    return _ARITHMATEX.sub(put, html)
