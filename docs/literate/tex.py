r"""
# Math, offline

Prose carries TeX math: `$...$` inline and `$$...$$` on its own. At build time we render it with
[KaTeX](https://katex.org), the renderer most of the field's sites use, run by Node.js: the pages
get finished HTML (plus MathML for screen readers), and the site serves KaTeX's stylesheet and fonts
itself, so a page needs no JavaScript and no network.

KaTeX comes from the npm registry through the project's `package.json` (`npm ci` in the repository
root installs it into `node_modules/`). One Node.js process renders every formula of a build: it
reads a JSON request per line and answers with a JSON line.

Markdown would eat the math (`x_i ... y_j` turns into emphasis, `\\` into `\`), so the math is
*extracted* before Markdown runs, replaced by placeholders that Markdown leaves alone, and put back,
rendered, afterwards.
"""

from __future__ import annotations

import atexit
import html as _html
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

__all__ = [
    "MathError",
    "KATEX_DIST",
    "tex_to_html",
    "extract_math",
    "restore_math",
    "convert_arithmatex",
    "math_to_html",
]

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: Markdown passes them through

ROOT = Path(__file__).resolve().parents[2]
# KaTeX as `npm ci` installs it from package.json: katex.js, katex.min.css and fonts/.
KATEX_DIST = ROOT / "node_modules" / "katex" / "dist"
_WORKER = Path(__file__).with_name("katex_worker.js")


class MathError(ValueError):
    """TeX that KaTeX cannot render, or no KaTeX to render it with."""


def _normalise(latex: str) -> str:
    latex = latex.strip()
    # `equation` is only a wrapper; `\tag`, `\label`, `\nonumber` have no meaning on a web page.
    latex = re.sub(r"\\(begin|end)\{equation\*?\}", "", latex)
    latex = re.sub(r"\\(?:label|tag)\{[^{}]*\}|\\nonumber|\\notag", "", latex)
    # Numbered environments would get equation numbers; `aligned` and `gathered` are the same
    # layout without them (and also work inline).
    latex = re.sub(r"\\(begin|end)\{(?:align|alignat|flalign|eqnarray)\*?\}(\{\d+\})?", r"\\\1{aligned}", latex)
    latex = re.sub(r"\\(begin|end)\{gather\*?\}", r"\\\1{gathered}", latex)
    return latex


class _Katex:
    """One Node.js process running `katex_worker.js`, started on first use."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bool], tuple[str | None, str | None]] = {}

    def _start(self) -> subprocess.Popen:
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise MathError("Node.js is needed to render the math (Debian: apt-get install nodejs npm, "
                            "then python install.py)")
        if not (KATEX_DIST / "katex.js").exists():
            raise MathError(f"KaTeX is not installed ({KATEX_DIST} is missing): run `python install.py` "
                            f"(it runs `npm ci`) in {ROOT}")
        proc = subprocess.Popen(
            [node, str(_WORKER), str(KATEX_DIST / "katex.js")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        atexit.register(self.close)
        return proc

    def render(self, tex: str, display: bool) -> str:
        key = (tex, display)
        if key not in self._cache:
            with self._lock:
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                assert self._proc.stdin is not None and self._proc.stdout is not None
                self._proc.stdin.write(json.dumps({"tex": tex, "display": display}) + "\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            if not line:
                raise MathError("the KaTeX process ended unexpectedly")
            answer = json.loads(line)
            self._cache[key] = (answer.get("html"), answer.get("error"))
        html, error = self._cache[key]
        if error is not None:
            raise MathError(error)
        assert html is not None
        return html

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None


_KATEX = _Katex()


def tex_to_html(latex: str, display: bool = False) -> str:
    """Render TeX with KaTeX; raise `MathError` for input it cannot render.

    The result is KaTeX's HTML (with MathML inside for screen readers), wrapped in an element
    that keeps the TeX in `data-tex`: handy to copy, and a test can check what was rendered.
    """
    try:
        out = _KATEX.render(_normalise(latex), display)
    except MathError as e:
        raise MathError(f"cannot render {latex.strip()!r}: {e}") from None
    tex = _html.escape(latex.strip(), quote=True)
    # A span (block by CSS) in both cases: display math may sit inside a paragraph.
    kind = "lit-math-display" if display else "lit-math"
    return f'<span class="{kind}" data-tex="{tex}">{out}</span>'


def math_to_html(latex: str, display: bool, errors: list[str] | None = None) -> str:
    """`tex_to_html`, but on failure show the TeX as code and record the error in `errors`."""
    try:
        return tex_to_html(latex, display)
    except MathError as e:
        if errors is not None:
            errors.append(str(e))
        return f'<code class="math-error" title="TeX that could not be rendered">{_html.escape(latex)}</code>'


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
    """Put the math extracted by `extract_math` back into rendered HTML, rendered."""

    def put(m: re.Match) -> str:
        tex, display = stash[int(m.group(2))]
        if display and m.group(1) and m.group(3):
            # A display equation alone in its paragraph replaces the paragraph.
            return math_to_html(tex, True, errors)
        return (m.group(1) or "") + math_to_html(tex, display, errors) + (m.group(3) or "")

    return _PLACEHOLDER.sub(put, html)


_ARITHMATEX = re.compile(
    r'<(span|div) class="arithmatex">(?:\\\((.*?)\\\)|\\\[(.*?)\\\]|(\\begin\{.*?\\end\{[^}]*\}))</\1>', re.S
)


def convert_arithmatex(html: str, errors: list[str] | None = None) -> str:
    """Render the math that `pymdownx.arithmatex` (generic mode) protected.

    Pages that MkDocs renders itself (the landing page, the API reference, whose docstrings
    mkdocstrings renders) protect their math with arithmatex; this renders it like ours.
    """

    def put(m: re.Match) -> str:
        if m.group(2) is not None:
            return math_to_html(_html.unescape(m.group(2)), False, errors)
        tex = m.group(3) if m.group(3) is not None else m.group(4)
        return math_to_html(_html.unescape(tex), True, errors)

    return _ARITHMATEX.sub(put, html)
