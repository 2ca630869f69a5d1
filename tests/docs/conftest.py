"""Shared fixtures of the site tests: the renderer on `sys.path`, and one strict build per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))  # the renderer is the package `literate` under docs/


def build_site(out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` of the whole repository into a temporary folder (never `site/`)."""
    out = tmp_path_factory.mktemp("site")
    proc = build_site(out)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out


# ## Without Node.js
#
# KaTeX renders the site's math under Node.js.  Where Node.js (or npm, to install KaTeX) is truly
# absent, the tests that render math skip with one reason, said once at the end of the run.  Under
# CI (`CI` set) they never skip: a missing KaTeX is a failure there.  With npm present, a missing
# KaTeX is a failure that says to run `python install.py`.


def katex_unavailable() -> str | None:
    """Why the tests that render math cannot run here, or None when they can (or must)."""
    from literate.tex import KATEX_DIST

    node = shutil.which("node") or shutil.which("nodejs")
    if os.environ.get("CI") or (node and (KATEX_DIST / "katex.js").exists()):
        return None
    if node is None:
        return ("Node.js is not installed, and KaTeX renders the site's math under it: install Node.js and npm "
                "(Debian: apt-get install nodejs npm), then run python install.py again")
    if shutil.which("npm") is None and not (KATEX_DIST / "katex.js").exists():
        return ("npm is not installed, so KaTeX could not be installed: install npm (Debian: apt-get install npm), "
                "then run python install.py again")
    return None


_SKIPPED: list[tuple[int, str]] = []


def pytest_collection_modifyitems(config, items):
    reason = katex_unavailable()
    if reason is None:
        return
    needs_katex = [item for item in items if item.get_closest_marker("katex")
                   or "built_site" in getattr(item, "fixturenames", ())]
    for item in needs_katex:
        item.add_marker(pytest.mark.skip(reason=reason))
    if needs_katex:
        _SKIPPED[:] = [(len(needs_katex), reason)]


def pytest_terminal_summary(terminalreporter):
    for count, reason in _SKIPPED:
        terminalreporter.write_line(f"{count} tests of the documentation site were skipped: {reason}", yellow=True)
