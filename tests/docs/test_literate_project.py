"""A strict build of a small, hand-made project: the hook end to end, independent of the library."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.katex]

ROTARY = r'''r"""
# Rotary embeddings

*Paper:* [RoFormer](https://arxiv.org/abs/2104.09864) (Su et al., 2021)

Rotary embeddings rotate queries and keys. See [the helper](helpers.py#L3).

$$
\begin{aligned}
R_p &= \begin{pmatrix} \cos p\theta & -\sin p\theta \\ \sin p\theta & \cos p\theta \end{pmatrix}
\end{aligned}
$$
"""

import torch


class Rotary(torch.nn.Module):
    r"""Rotate by $\frac{p}{2}$.

    Args:
        dim: rotated features $r$.

    >>> [round(x, 1) for x in (0.51, 1.04)]
    [0.5, 1.0]
    """

    def __init__(self, dim: int):
        super().__init__()
        # $\theta_k = 10000^{-2k/r}$
        self.dim = dim  # (r,)
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(ROOT / "docs" / "literate", root / "docs" / "literate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "docs" / "stylesheets", root / "docs" / "stylesheets")
    (root / "node_modules").symlink_to(ROOT / "node_modules")  # KaTeX, as `npm ci` installed it
    (root / "docs" / "results.md").write_text("# Results\n\nAccuracy $a_1 = \\frac{1}{2}$.\n")
    pkg = root / "labml_style_nn" / "positional"
    pkg.mkdir(parents=True)
    (root / "labml_style_nn" / "__init__.py").write_text('from .positional import Rotary\n\n__all__ = ["Rotary"]\n')
    (pkg / "__init__.py").write_text('"""# Positions\n\nWhere tokens are."""\nfrom .rotary import Rotary\n')
    (pkg / "rotary.py").write_text(ROTARY)
    (pkg / "helpers.py").write_text('"""# Helpers\n\nSmall things."""\n\n\ndef h():\n    return 1\n')
    (root / "experiments").mkdir()
    (root / "experiments" / "train.py").write_text('"""# Train\n\nTrains a model."""\n\nprint("hi")\n')
    (root / "notebooks").mkdir()
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# A demo\n", "\n", "Math: $x^2$."]},
            {"cell_type": "code", "metadata": {}, "source": ["1 + 1"], "outputs": [], "execution_count": None},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "notebooks" / "demo.ipynb").write_text(json.dumps(notebook))
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(root / "out")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return root


def read(project: Path, url: str) -> str:
    return (project / "out" / url / "index.html").read_text(encoding="utf-8")


def test_generated_pages_exist_and_nothing_is_written_to_the_tree(project):
    for url in [
        "",
        "labml_style_nn/",
        "labml_style_nn/positional/",
        "labml_style_nn/positional/rotary/",
        "labml_style_nn/positional/helpers/",
        "experiments/",
        "experiments/train/",
        "api/",
        "api/positional/",
        "results/",
        "notebooks/",
        "notebooks/demo/",
    ]:
        assert (project / "out" / url / "index.html").is_file(), url
    # KaTeX's stylesheet and fonts are served by the site itself, and every page links the stylesheet.
    assert (project / "out" / "assets" / "katex" / "katex.min.css").is_file()
    assert len(list((project / "out" / "assets" / "katex" / "fonts").glob("KaTeX_*.woff2"))) > 10
    assert 'href="../../../assets/katex/katex.min.css"' in read(project, "labml_style_nn/positional/rotary")
    generated = {p.relative_to(project / "docs").as_posix() for p in (project / "docs").rglob("*.md")}
    assert generated == {"results.md"}
    assert (project / "out" / "source" / "labml_style_nn" / "positional" / "rotary.py").read_text() == ROTARY


def _visible(html: str) -> str:
    """Without the TeX kept on purpose: `data-tex` attributes and KaTeX's annotations."""
    html = re.sub(r' data-tex="[^"]*"', "", html)
    return re.sub(r"<annotation[^>]*>.*?</annotation>", "", html, flags=re.S)


def test_literate_page(project):
    html = read(project, "labml_style_nn/positional/rotary")
    assert 'class="literate"' in html
    assert 'href="../../../source/labml_style_nn/positional/rotary.py"' in html  # the source file
    assert 'href="../helpers/#L3"' in html  # a link to another source file, rewritten
    assert 'href="../../../api/positional/#labml_style_nn.positional.rotary.Rotary"' in html  # the API entry
    for n in range(1, ROTARY.count("\n") + 1):
        assert f'id="L{n}"' in html
    visible = _visible(html)
    assert "\\frac" not in visible and "$$" not in visible and "\\begin" not in visible
    assert visible.count("<math") == 4
    assert '<span class="c1"># (r,)</span>' in html  # the trailing comment stays in the code
    assert "lit-doc-label" in html  # Args: became a labelled list


def test_landing_api_results_and_notebook(project):
    index = read(project, "")
    assert 'href="labml_style_nn/positional/rotary/"' in index and "RoFormer" in index and "(Su et al., 2021)" in index
    api = read(project, "api/positional")
    assert 'id="labml_style_nn.positional.rotary.Rotary"' in api
    assert 'href="../../labml_style_nn/positional/rotary/#L18"' in api  # back to the annotated class
    assert "<math" in api and "\\frac" not in _visible(api)
    assert '<span class="gp">&gt;&gt;&gt; </span>' in api  # the doctest is a code block, not a quote
    results = read(project, "results")
    assert "<math" in results and 'class="arithmatex"' not in results
    notebook = read(project, "notebooks/demo")
    assert "A demo" in notebook and "<math" in notebook
    nav = read(project, "")
    for title in ("Core", "Positional information", "Experiments", "API reference", "Results", "Notebooks"):
        assert title in nav
