"""User-facing text says what it means: no insider words ("the seeds", "peers") for the projects we follow."""

import ast
import pathlib
import pydoc
import re

import labml_style_nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSIDER = re.compile(r"\bseeds'|\bthe seeds\b|\bseed (documents?|examples?|README|keywords?)|\bpeers?\b", re.I)


def user_facing_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "labml_style_nn").rglob("*.py"))]


def test_no_insider_words_in_files():
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in user_facing_files()
            for number, line in enumerate(path.read_text().splitlines(), 1) if INSIDER.search(line)]
    assert not hits, "\n".join(hits)


def test_no_insider_words_in_experiment_pages():
    """The experiments' docstrings are their pages and their --help (internal names may stay)."""
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert not INSIDER.search(doc), f"{path.relative_to(ROOT)}: {INSIDER.search(doc).group(0)!r}"


def test_no_insider_words_in_help():
    for name in labml_style_nn.__all__:
        text = pydoc.render_doc(getattr(labml_style_nn, name), renderer=pydoc.plaintext)
        assert not INSIDER.search(text), f"help({name}) says {INSIDER.search(text).group(0)!r}"
