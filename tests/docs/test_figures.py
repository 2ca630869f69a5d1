"""The figures of the pages: drawn by `docs/figures/make_figures.py` from the library, and present."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "figures"


def _script():
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["alibi_bias", "rotary_angles", "t5_buckets", "feedback_flow"])
def test_figure_is_drawn_from_the_library(name, tmp_path):
    """Each quick figure draws without error (the trained-model figure is left to the script)."""
    _script().FIGURES[name](tmp_path)
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_every_figure_a_page_shows_is_committed():
    linked = set()
    for file in list((ROOT / "labml_style_nn").rglob("*.py")) + list((ROOT / "experiments").rglob("*.py")):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", file.read_text(encoding="utf-8")):
            path = (file.parent / target).resolve()
            if FIGURES in path.parents:
                linked.add(path)
                assert path.is_file(), f"{file.relative_to(ROOT)} shows {target}, which is not committed"
    assert len(linked) >= 5  # ALiBi, rotary, T5, feedback, attention
    assert set(_script().FIGURES) == {p.stem for p in FIGURES.glob("*.png")}
