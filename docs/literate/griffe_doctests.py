r"""
# Doctests in the API reference

Library docstrings carry worked examples as bare doctests (`>>> f(x)` and the output below it).
Markdown would read `>>>` as nested quotes and `[0.8, 1.1]` in the output as a cross-reference,
so this griffe extension (loaded by mkdocstrings, see `mkdocs.yml`) fences each doctest as a
`pycon` code block before the docstring is rendered. Literate pages do the same in `render.py`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from literate.render import fence_doctests  # noqa: E402

_EXAMPLES = re.compile(r"^\s*Examples?:\s*$", re.M)


class FenceDoctests(griffe.Extension):
    """Fence bare doctests in every docstring."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is None or ">>>" not in docstring.value:
            return
        if _EXAMPLES.search(docstring.value):
            return  # a Google `Examples:` section: griffe parses its doctests itself
        docstring.value = fence_doctests(docstring.value)
