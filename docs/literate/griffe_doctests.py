r"""
# Doctests in the API reference

Library docstrings carry worked examples as bare doctests (`>>> f(x)` and the output below it).
Markdown would read `>>>` as nested quotes and `[0.8, 1.1]` in the output as a cross-reference,
so this griffe extension (loaded by mkdocstrings, see `mkdocs.yml`) fences each doctest as a
`pycon` code block before the docstring is rendered. Literate pages do the same in `render.py`.

It also rewrites a docstring's relative links to other pages (`[RoPE scaling](rope_scaling.md)`,
written relative to the source file, as on the literate page) so that they resolve from the API
reference, which lives in `api/` (`../labml_style_nn/positional/rope_scaling.md`).
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from literate.render import fence_doctests  # noqa: E402

_EXAMPLES = re.compile(r"^\s*Examples?:\s*$", re.M)
_RELATIVE_LINK = re.compile(r"(?<!!)(\[[^\]]*\]\()([^()\s:#]+\.(?:md|py))(#[^()\s]*)?\)")
ROOT = Path(__file__).resolve().parents[2]


def relink_for_api(text: str, source_path: str) -> str:
    """Relative `.md`/`.py` links of the docstring of `source_path`, as seen from `api/<group>.md`.

    >>> relink_for_api("see [scaling](rope_scaling.md#L3)", "labml_style_nn/positional/rotary.py")
    'see [scaling](../labml_style_nn/positional/rope_scaling.md#L3)'
    """

    def fix(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(source_path), m.group(2)))
        if target.endswith(".py"):
            target = target[: -len(".py")] + ".md"
        return f"{m.group(1)}../{target}{m.group(3) or ''})"

    return _RELATIVE_LINK.sub(fix, text)


class FenceDoctests(griffe.Extension):
    """Fence bare doctests in every docstring."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is None:
            return
        filepath = getattr(obj, "filepath", None)
        if isinstance(filepath, Path) and "](" in docstring.value:
            try:
                source_path = filepath.resolve().relative_to(ROOT).as_posix()
            except ValueError:
                source_path = None
            if source_path is not None:
                docstring.value = relink_for_api(docstring.value, source_path)
        if ">>>" not in docstring.value:
            return
        if _EXAMPLES.search(docstring.value):
            return  # a Google `Examples:` section: griffe parses its doctests itself
        docstring.value = fence_doctests(docstring.value)
