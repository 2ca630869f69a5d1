"""Every worked example of every page runs: the doctests of all library and experiment modules.

A page's `>>>` examples are part of its lesson (the slopes of ALiBi, T5's buckets, the relative
shift); this finds every module that has one, so a new page's examples are checked without being
listed anywhere.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _modules_with_examples() -> list[str]:
    found = []
    for top in ("labml_style_nn", "experiments"):
        for file in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" in file.parts or ">>>" not in file.read_text(encoding="utf-8"):
                continue
            found.append(file.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."))
    return found


@pytest.mark.parametrize("name", _modules_with_examples())
def test_worked_examples_of_the_page(name):
    module = importlib.import_module(name)
    # `torch` is in scope, as on the page, even where the module itself imports only parts of it.
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=flags)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} examples fail in {name}"
