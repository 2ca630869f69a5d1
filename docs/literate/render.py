r"""
# Rendering sections to HTML

Each section becomes one row of a two-column grid: the prose cell (Markdown with math, converted
here) on the left and the code cell (highlighted by Pygments) on the right. The whole file is
highlighted in one pass, so a string that spans lines keeps its colour, and is then cut into lines;
each line carries the file's own number and an anchor `id="L42"`.

No MkDocs here either: the hook passes in the links it knows (source file, API entries, other pages).
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import markdown
from pygments.lexers import PythonLexer
from pygments.token import STANDARD_TYPES

from .parser import Section
from .tex import MathError, extract_math, restore_math, tex_to_html

__all__ = ["RenderOptions", "highlight_lines", "render_prose", "render_page", "slugify", "google_sections"]

PROSE_EXTENSIONS = ["tables", "fenced_code", "codehilite", "sane_lists", "admonition", "attr_list", "md_in_html"]
PROSE_EXTENSION_CONFIGS = {"codehilite": {"css_class": "highlight", "guess_lang": False}}


@dataclass
class RenderOptions:
    """What the page links to. All hrefs are relative to the page (or absolute URLs)."""

    source_path: str = ""  # repo-relative path, shown as the link text
    source_url: str | None = None  # where "source" points; None for no link
    api_links: dict[str, str] = field(default_factory=dict)  # qualname of a class -> API entry href
    # Resolves a relative link found in the prose (e.g. `rotary.py#L10`); None leaves it as is.
    link_resolver: Callable[[str], str | None] | None = None


def _css_class(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


_INLINE_MATH = re.compile(r"\$(?=\S)((?:\\.|[^$\\])+?)(?<=\S)\$(?!\d)")


def _comment_html(text: str) -> str:
    """A trailing comment of the code pane, its `$...$` math rendered (the rest escaped).

    `x = f(y)  # (b, n, d): $S_{ij}$` shows $S_{ij}$ as math, as it would in the prose.  TeX that
    does not render stays as typed.
    """
    out, last = [], 0
    for m in _INLINE_MATH.finditer(text):
        try:
            math = tex_to_html(m.group(1))
        except MathError:
            continue
        out += [_html.escape(text[last : m.start()], quote=False), math]
        last = m.end()
    return "".join(out) + _html.escape(text[last:], quote=False)


def highlight_lines(source: str) -> list[str]:
    """HTML of each source line (index 0 is line 1), highlighted with Pygments' short classes.

    Math in comments that stay in the code (trailing comments) is rendered as in the prose.
    """
    lexer = PythonLexer(stripnl=False, stripall=False, ensurenl=False, tabsize=0)
    lines: list[list[str]] = [[]]
    for ttype, value in lexer.get_tokens(source.replace("\r\n", "\n").replace("\r", "\n")):
        cls = _css_class(ttype)
        for k, part in enumerate(value.split("\n")):
            if k:
                lines.append([])
            if part:
                if cls == "c1" and "$" in part:
                    text = _comment_html(part)
                else:
                    text = _html.escape(part, quote=False)
                lines[-1].append(f'<span class="{cls}">{text}</span>' if cls else text)
    return ["".join(parts) for parts in lines]


def slugify(text: str) -> str:
    text = re.sub(r"<[^>]+>", "", text)
    text = _html.unescape(text).lower()
    text = re.sub(r"[^\w\s-]", "", text, flags=re.UNICODE)
    return re.sub(r"[\s_-]+", "-", text).strip("-") or "section"


_GOOGLE_HEADER = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Attributes|"
    r"Returns|Return|Yields|Raises|Shapes?|Examples?|Notes?|Warnings?|References?|See Also):\s*$"
)
_GOOGLE_ITEM = re.compile(r"^(\*{0,2}[A-Za-z_][\w.]*)(\s*\(([^()]*(?:\([^()]*\))?[^()]*)\))?:\s+(.*)$")
_GOOGLE_LABELS = {"Args": "Arguments", "Params": "Parameters", "Keyword Args": "Keyword arguments", "Return": "Returns"}


def google_sections(text: str) -> str:
    """Google-style docstring sections (`Args:` and an indented block) as Markdown lists.

    Docstrings are Markdown, but their `Args:` blocks follow Google style so that the API
    reference can parse them; on the literate page they become a labelled list.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _GOOGLE_HEADER.match(lines[i])
        block_end = i + 1
        while block_end < len(lines) and (not lines[block_end].strip() or lines[block_end].startswith((" ", "\t"))):
            block_end += 1
        while block_end > i + 1 and not lines[block_end - 1].strip():
            block_end -= 1
        if not m or block_end == i + 1:
            out.append(lines[i])
            i += 1
            continue
        block = lines[i + 1 : block_end]
        indent = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        block = [b[indent:] for b in block]
        label = _GOOGLE_LABELS.get(m.group(1), m.group(1))
        out += ["", f'<p class="lit-doc-label">{label}</p>', ""]
        items: list[list[str]] = []
        for b in block:
            item = _GOOGLE_ITEM.match(b) if b and not b[0].isspace() else None
            if item and label.lower() not in ("returns", "yields", "examples", "example", "notes", "note"):
                name, kind, desc = item.group(1), item.group(3), item.group(4)
                head = f"`{name}`" + (f" ({kind})" if kind else "")
                items.append([f"- {head}: {desc}"])
            elif items and b.strip():
                items[-1].append("  " + b.strip())
            elif not items and b.strip():
                items.append([b.strip()])
            elif items:
                items[-1].append("")
        if label.lower().startswith("example") and any(b.lstrip().startswith(">>>") for b in block):
            out += ["```python", *block, "```"]
        else:
            out += [" ".join(part.strip() for part in item if part.strip()) if item[0].startswith("- ") else "\n".join(item) for item in items]
        out.append("")
        i = block_end
    return "\n".join(out)


def fence_doctests(text: str) -> str:
    """Doctest paragraphs (`>>> ...` and their output) as Python code blocks, not quotes."""
    out: list[str] = []
    in_doctest = False
    fence = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fence = not fence
        if not fence and not in_doctest and stripped.startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + "```pycon")
            in_doctest = True
        elif in_doctest and not stripped:
            out.append(indent + "```")
            in_doctest = False
        out.append(line)
    if in_doctest:
        out.append(indent + "```")
    return "\n".join(out)


_HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>", re.S)
_HREF = re.compile(r'(<(?:a\b[^>]*?\bhref|img\b[^>]*?\bsrc)=")([^"]*)(")')


def render_prose(
    text: str,
    errors: list[str] | None = None,
    slugs: set[str] | None = None,
    link_resolver: Callable[[str], str | None] | None = None,
    md: markdown.Markdown | None = None,
) -> str:
    """Markdown with `$` math to HTML: math out, Markdown, headings anchored, links fixed, math in."""
    if not text.strip():
        return ""
    protected, stash = extract_math(text)
    md = md or markdown.Markdown(extensions=PROSE_EXTENSIONS, extension_configs=PROSE_EXTENSION_CONFIGS)
    md.reset()
    html = md.convert(protected)
    slugs = slugs if slugs is not None else set()

    def anchor(m: re.Match) -> str:
        base = slugify(m.group(2))
        if re.fullmatch(r"l\d+", base):
            base = "h-" + base  # never collide with line anchors
        slug, k = base, 1
        while slug in slugs:
            k += 1
            slug = f"{base}-{k}"
        slugs.add(slug)
        return (
            f'<h{m.group(1)} id="{slug}">{m.group(2)}'
            f'<a class="headerlink" href="#{slug}" title="Permanent link">&para;</a></h{m.group(1)}>'
        )

    html = _HEADING.sub(anchor, html)
    if link_resolver is not None:

        def fix(m: re.Match) -> str:
            new = link_resolver(_html.unescape(m.group(2)))
            return m.group(1) + (_html.escape(new) if new is not None else m.group(2)) + m.group(3)

        html = _HREF.sub(fix, html)
    return restore_math(html, stash, errors)


def _code_cell(section: Section, highlighted: list[str]) -> str:
    """The code of a section, one `lit-line` per source line.

    A line too long for the column wraps; its continuation is indented past the line's own
    indentation, which the line carries as `--ind` (in characters) for the stylesheet."""
    rows = []
    for line in section.code:
        n = line.number
        code = highlighted[n - 1] if n - 1 < len(highlighted) else _html.escape(line.text)
        text = line.text.expandtabs(4)
        indent = len(text) - len(text.lstrip(" "))
        style = f' style="--ind:{indent}ch"' if indent and text.strip() else ""
        rows.append(
            f'<span class="lit-line" id="L{n}"{style}><a class="lit-ln" href="#L{n}" data-ln="{n}" '
            f'aria-label="Line {n}"></a>{code}</span>'
        )
    return "\n".join(rows)


def render_page(sections: list[Section], source: str, options: RenderOptions | None = None) -> tuple[str, list[str]]:
    """The literate HTML of a whole file, and the list of math errors met on the way."""
    options = options or RenderOptions()
    errors: list[str] = []
    slugs: set[str] = set()
    highlighted = highlight_lines(source)
    md = markdown.Markdown(extensions=PROSE_EXTENSIONS, extension_configs=PROSE_EXTENSION_CONFIGS)

    out = ['<div class="literate">']
    bar = []
    if options.source_path:
        label = _html.escape(options.source_path)
        link = f'<a href="{_html.escape(options.source_url)}"><code>{label}</code></a>' if options.source_url else f"<code>{label}</code>"
        bar.append(f'<span class="lit-bar-source">Source: {link}</span>')
    if options.api_links:
        links = ", ".join(
            f'<a href="{_html.escape(href)}"><code>{_html.escape(name)}</code></a>' for name, href in options.api_links.items()
        )
        bar.append(f'<span class="lit-bar-api">API reference: {links}</span>')
    if bar:
        out.append('<div class="lit-bar">' + "".join(bar) + "</div>")

    for k, section in enumerate(sections):
        text = fence_doctests(google_sections(section.prose)) if section.kind == "docstring" else section.prose
        prose = render_prose(text, errors, slugs, options.link_resolver, md)
        anchors = "".join(f'<span class="lit-anchor" id="L{n}"></span>' for n in section.prose_lines)
        api = ""
        owner = section.owner
        if owner and owner in options.api_links:
            api = f'<a class="lit-api-link" href="{_html.escape(options.api_links[owner])}" title="API reference for {owner}">API</a>'
        prose_cls = "lit-prose" + ("" if prose else " lit-empty")
        code_cls = "lit-code" + ("" if section.code else " lit-empty")
        first = section.lines[0] if section.lines else k
        code_html = (
            f'<div class="highlight"><pre><code>{_code_cell(section, highlighted)}</code></pre></div>' if section.code else ""
        )
        if section.kind == "docstring" and section.owner is None and prose:
            # The module docstring is the page's introduction: a row of its own, across the whole
            # width (long equations need room), and the imports below it in a row of their own.
            out.append(
                f'<div class="lit-row lit-intro" id="s{first}">'
                f'<div class="lit-prose">{anchors}{prose}</div><div class="lit-code lit-empty"></div></div>'
            )
            if section.code:
                out.append(
                    f'<div class="lit-row lit-code-only" id="s{section.code[0].number}">'
                    f'<div class="lit-prose lit-empty"></div><div class="lit-code">{code_html}</div></div>'
                )
            continue
        out.append(
            f'<div class="lit-row lit-{section.kind}" id="s{first}">'
            f'<div class="{prose_cls}">{anchors}{api}{prose}</div>'
            f'<div class="{code_cls}">{code_html}</div>'
            "</div>"
        )
    out.append("</div>")
    return "\n".join(out), errors
