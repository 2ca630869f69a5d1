r"""
# Module metadata, for the landing page

A technique file opens with a docstring in the shape of `docs/dev/conventions.md`:

```
# Title
*Paper:* [Paper title](https://arxiv.org/abs/...) (Authors, YEAR)
First paragraph: the summary. Its first sentence is the one-line summary.
```

This module reads the title, the papers and the summary out of it. Pure: no MkDocs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from .parser import parse

__all__ = ["Paper", "ModuleMeta", "parse_metadata", "module_docstring", "first_sentence"]


@dataclass
class Paper:
    title: str
    url: str
    authors: str = ""
    year: str = ""


@dataclass
class ModuleMeta:
    title: str | None = None
    papers: list[Paper] = field(default_factory=list)
    summary: str = ""  # the first sentence of the first paragraph
    paragraph: str = ""  # the whole first paragraph


_PAPER_LINE = re.compile(r"^\s*(\*\*?|_)(Papers?|Sources?):?(\*\*?|_)?:?\s*", re.I)  # "*Source:*" for what has no paper
_PAPER = re.compile(
    r"\[(?P<title>(?:[^\[\]]|\[[^\]]*\])+)\]\((?P<url>[^()\s]+(?:\([^()\s]*\))?[^()\s]*)\)"
    r"(?:\s*\((?P<who>[^()]*?)(?:,\s*(?P<year>\d{4}[a-z]?))?\))?"
)
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "vs.", "cf.", "fig.", "eq.", "eqs.", "approx.", "resp.", "etc.")


def first_sentence(paragraph: str) -> str:
    """The first sentence of a Markdown paragraph (abbreviations like `e.g.` do not end one)."""
    text = " ".join(paragraph.split())
    for m in re.finditer(r"[.!?](?=\s+[A-Z0-9$`*(\[\"'])", text):
        end = m.end()
        before = text[:end].lower()
        if before.endswith(_ABBREVIATIONS):
            continue
        # Inside inline math or a code span, a period ends nothing.
        if text[:end].count("$") % 2 or text[:end].count("`") % 2:
            continue
        return text[:end]
    return text


def _paragraphs(text: str) -> list[str]:
    paras, buf = [], []
    for line in text.split("\n"):
        if line.strip():
            buf.append(line)
        elif buf:
            paras.append("\n".join(buf))
            buf = []
    if buf:
        paras.append("\n".join(buf))
    return paras


def parse_metadata(docstring: str | None) -> ModuleMeta:
    """Title, papers and summary of a module docstring."""
    meta = ModuleMeta()
    if not docstring:
        return meta
    paras = _paragraphs(docstring.strip("\n"))
    rest = []
    for i, para in enumerate(paras):
        first = para.lstrip()
        if meta.title is None and i == 0 and first.startswith("# "):
            title, _, remainder = first.partition("\n")
            meta.title = title[2:].strip()
            if remainder.strip():
                rest.append(remainder)
            continue
        rest.append(para)
    summary_done = False
    for para in rest:
        if _PAPER_LINE.match(para):
            for m in _PAPER.finditer(para):
                if not m.group("url").startswith(("http://", "https://")):
                    continue  # a link to another page of the site, not a paper
                meta.papers.append(
                    Paper(
                        title=" ".join(m.group("title").split()),
                        url=m.group("url"),
                        authors=" ".join((m.group("who") or "").split()),
                        year=m.group("year") or "",
                    )
                )
            continue
        if summary_done:
            continue
        stripped = para.lstrip()
        # The summary is prose: not a heading, an equation, a list, a table or a code block.
        if stripped.startswith(("#", "$$", "|", "```", "~~~", "* ", "- ", "> ", "<")) or re.match(r"\d+\. ", stripped):
            if meta.papers or stripped.startswith(("#",)):
                # After the first heading, the introduction is over.
                summary_done = stripped.startswith("#")
            continue
        meta.paragraph = " ".join(para.split())
        meta.summary = first_sentence(para)
        if meta.summary.endswith(":"):
            meta.summary = meta.summary[:-1].rstrip() + "."  # it introduced an equation
        summary_done = True
    return meta


def module_docstring(source: str) -> str | None:
    """The module docstring as written in the source (the first section's prose, if a docstring)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    if not ast.get_docstring(tree, clean=False):
        return None
    sections = parse(source)
    if sections and sections[0].kind == "docstring" and sections[0].owner is None:
        return sections[0].prose
    return ast.get_docstring(tree)
