r"""
# The literate parser

Turns a Python source file into a list of *sections*: each section is a piece of prose (Markdown,
from docstrings and full-line `#` comments) and the code lines it introduces. The parser is pure:
source text in, sections out. It imports nothing from MkDocs, so it can be tested on its own.

Rules (from `docs/dev/conventions.md`):

* a module, class or function docstring is prose; for a class or function, the `class`/`def` line
  (with its decorators) moves into the docstring's section, so the prose sits beside the header;
* a full-line `#` comment at bracket depth 0 is prose for the code below it, at any indentation;
  comments inside brackets (an argument list, a dict literal) stay in the code;
* a bare `#` line ends a section; between two comment lines it is a paragraph break;
* trailing comments (`x = f(y)  # (b, n, d)`) stay in the code;
* pragma comments (`# noqa`, `# type:`, `# fmt:`, `# pragma:`, a shebang) stay in the code;
* line numbers are the file's own; every line of the file belongs to exactly one section, either as
  a code line or as a prose line (prose lines still get an anchor on the page).
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
from dataclasses import dataclass, field

__all__ = ["Line", "Section", "parse", "nonraw_backslash_docstrings"]


@dataclass
class Line:
    """One source line: its 1-based number in the file and its text (no newline)."""

    number: int
    text: str


@dataclass
class Section:
    """Prose (Markdown) and the code it introduces.

    `prose_lines` are the numbers of the source lines consumed as prose (docstring, comment and
    blank separator lines); `code` holds the remaining lines, in order, with their indentation.
    `owner` is the qualified name of the class or function whose docstring opens the section.
    """

    prose: str = ""
    code: list[Line] = field(default_factory=list)
    prose_lines: list[int] = field(default_factory=list)
    kind: str = "code"  # "docstring", "comment" or "code": what opened the section
    owner: str | None = None
    indent: int = 0  # column of the prose in the source (0 for module level)

    @property
    def lines(self) -> list[int]:
        """Every source line number this section covers, sorted."""
        return sorted(set(self.prose_lines) | {line.number for line in self.code})

    def is_empty(self) -> bool:
        return not self.prose.strip() and not self.code and not self.prose_lines


_PRAGMA = re.compile(r"#\s*(noqa|type:|fmt:|pragma|pylint:|isort:|mypy:|pyright:|ruff:|-\*-)")


@dataclass
class _Docstring:
    start: int  # first line of the string literal
    end: int  # last line of the string literal
    text: str  # cleaned prose
    header_start: int | None  # first line of the decorators/def/class, None for a module
    owner: str | None
    indent: int


def _string_body(segment: str) -> str | None:
    """The text between the quotes of a string literal, exactly as written in the source."""
    m = re.match(r"(?is)^([rbuf]*)('''|\"\"\"|'|\")(.*)\2$", segment.strip())
    if not m or "b" in m.group(1).lower() or "f" in m.group(1).lower():
        return None
    body = m.group(3)
    if "r" not in m.group(1).lower():
        # A non-raw docstring: show what the author typed, but resolve the escapes that are
        # harmless and common (an escaped quote or backslash); `\f`, `\t`... stay as typed.
        body = re.sub(r"\\([\\'\"])", r"\1", body)
    return body


def _docstrings(tree: ast.AST, lines: list[str]) -> dict[int, _Docstring]:
    """Docstrings (module, class, function) that occupy whole lines, by first line."""
    found: dict[int, _Docstring] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
                and first.end_lineno is not None
            ):
                start, end = first.lineno, first.end_lineno
                before = lines[start - 1][: first.col_offset]
                after = lines[end - 1][first.end_col_offset :]
                segment = ast.get_source_segment("\n".join(lines), first)
                text = _string_body(segment) if segment else None
                if before.strip() == "" and after.strip() == "" and text is not None:
                    if isinstance(node, ast.Module):
                        header, owner = None, None
                    else:
                        decorators = [d.lineno for d in node.decorator_list]
                        header = min([node.lineno, *decorators])
                        owner = prefix + node.name
                        if header >= start:  # `def f(): """doc"""` on one line
                            header = None
                    if isinstance(node, ast.Module) or header is not None:
                        found[start] = _Docstring(
                            start=start,
                            end=end,
                            text=inspect.cleandoc(text),
                            header_start=header,
                            owner=owner,
                            indent=first.col_offset,
                        )
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            prefix = prefix + node.name + "."
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.expr):
                visit(child, prefix)

    visit(tree, "")
    return found


def _prose_comments(source: str) -> dict[int, tuple[str, int]]:
    """Full-line comments at bracket depth 0, by line: (text after `#`, column of `#`)."""
    comments: dict[int, tuple[str, int]] = {}
    depth = 0
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for tok in tokens:
        if tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth = max(0, depth - 1)
        elif tok.type == tokenize.COMMENT and depth == 0:
            row, col = tok.start
            if tok.line[:col].strip():
                continue  # a trailing comment
            if _PRAGMA.match(tok.string) or (row == 1 and tok.string.startswith("#!")):
                continue
            text = tok.string[1:]
            if text.startswith(" "):
                text = text[1:]
            comments[row] = (text.rstrip(), col)
    return comments


def nonraw_backslash_docstrings(source: str) -> list[int]:
    """First lines of non-raw docstrings with an escape other than `\\\\` or a quote.

    Python turns `\\frac` in such a docstring into a form feed and `rac`; the literate page shows
    the source as typed, but `help()` and the API reference see the corrupted text.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    bad = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                segment = ast.get_source_segment(source, first) or ""
                prefix = re.match(r"(?i)[rbuf]*", segment.strip()).group(0).lower()
                risky = any(m.group(1) not in "\\'\"" for m in re.finditer(r"\\(.)", segment, re.S))
                if "r" not in prefix and risky:
                    bad.append(first.lineno)
    return sorted(bad)


def parse(source: str) -> list[Section]:
    """Split Python `source` into sections of prose and code."""
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    lines = source.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline is not a line
    try:
        tree = ast.parse(source)
        docstrings = _docstrings(tree, lines)
        comments = _prose_comments(source)
    except (SyntaxError, tokenize.TokenError, IndentationError, ValueError):
        # Not valid Python: show it as plain code, one section.
        return [Section(code=[Line(i + 1, t) for i, t in enumerate(lines)])] if lines else []

    sections: list[Section] = []
    cur = Section()
    prose_buf: list[str] = []  # Markdown lines of the current section's prose
    pending_blank: list[int] = []  # blank lines seen before any code in the current section

    def flush() -> None:
        nonlocal cur, prose_buf, pending_blank
        cur.prose = "\n".join(prose_buf).strip("\n")
        cur.prose_lines.extend(pending_blank)
        cur.prose_lines.sort()
        # Trailing blank code lines carry no meaning on the page: keep them as anchors only.
        while cur.code and not cur.code[-1].text.strip():
            cur.prose_lines.append(cur.code.pop().number)
        cur.prose_lines.sort()
        if not cur.is_empty():
            sections.append(cur)
        cur, prose_buf, pending_blank = Section(), [], []

    i = 0
    n = len(lines)
    while i < n:
        number = i + 1
        text = lines[i]
        doc = docstrings.get(number)
        if doc is not None:
            header: list[Line] = []
            if doc.header_start is not None:
                wanted = list(range(doc.header_start, doc.start))
                tail = [line.number for line in cur.code[-len(wanted) :]] if wanted else []
                if wanted and tail == wanted:
                    header = cur.code[-len(wanted) :]
                    del cur.code[-len(wanted) :]
            if cur.code or (not prose_buf and not cur.prose_lines):
                flush()
                # A fresh section: the docstring opens it.
                cur.kind = "docstring"
                cur.owner = doc.owner
                cur.indent = doc.indent
            else:
                # Comments right above the `def`/`class`: one section, the comment then the docstring.
                cur.kind = "docstring"
                cur.owner = doc.owner
                prose_buf.append("")
            prose_buf.extend(doc.text.split("\n"))
            cur.prose_lines.extend(range(doc.start, doc.end + 1))
            cur.prose_lines.extend(pending_blank)
            pending_blank = []
            cur.code.extend(header)
            i = doc.end
            continue
        comment = comments.get(number)
        if comment is not None:
            body, col = comment
            if body.strip() == "":
                # A bare `#`: a paragraph break inside a comment block, otherwise the end of a section.
                nxt = comments.get(number + 1)
                if not cur.code and prose_buf and nxt is not None and nxt[0].strip():
                    prose_buf.append("")
                    cur.prose_lines.append(number)
                else:
                    cur.prose_lines.append(number)
                    flush()
            else:
                if cur.code:
                    flush()
                if not prose_buf and not cur.prose_lines:
                    cur.kind = "comment"
                    cur.indent = col
                elif pending_blank:
                    prose_buf.append("")  # a blank line between two comment blocks: a paragraph break
                cur.prose_lines.extend(pending_blank)
                pending_blank = []
                prose_buf.append(body)
                cur.prose_lines.append(number)
            i += 1
            continue
        if not text.strip() and not cur.code:
            pending_blank.append(number)
            i += 1
            continue
        if not cur.code:
            cur.prose_lines.extend(pending_blank)
            pending_blank = []
        cur.code.append(Line(number, text))
        i += 1
    flush()
    return sections
