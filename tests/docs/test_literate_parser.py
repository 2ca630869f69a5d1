"""The literate parser: source in, sections out (no MkDocs involved)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from literate.parser import nonraw_backslash_docstrings, parse

SAMPLE = textwrap.dedent(
    r'''
    r"""
    # Rotary embeddings

    $$\frac{a}{b}$$
    """

    import torch


    #
    # ## Angles
    #
    # $\theta_i = 10000^{-2i/d}$
    def angles(d: int):
        """The angles."""
        return d


    class Rotary(torch.nn.Module):
        r"""Rotate by $\frac{p}{2}$."""

        def forward(self, x):
            # Split the features in halves
            half = x.shape[-1] // 2  # (b, n, d/2)
            y = dict(
                # inside brackets: code, not prose
                a=1,
            )
            #
            return x[..., :half]
    '''
).lstrip("\n")


def code_text(section):
    return "\n".join(line.text for line in section.code)


def test_module_docstring_is_prose_with_the_imports():
    first = parse(SAMPLE)[0]
    assert first.kind == "docstring" and first.owner is None
    assert first.prose.startswith("# Rotary embeddings")
    assert code_text(first) == "import torch"


def test_raw_docstring_keeps_backslashes():
    sections = parse(SAMPLE)
    assert r"$$\frac{a}{b}$$" in sections[0].prose
    rotary = next(s for s in sections if s.owner == "Rotary")
    assert rotary.prose == r"Rotate by $\frac{p}{2}$."


def test_comment_block_with_bare_hash_paragraphs_and_docstring_merge():
    sections = parse(SAMPLE)
    angles = next(s for s in sections if s.owner == "angles")
    # The comment block above `def` and the docstring make one section; `#` between comment
    # lines is a paragraph break, not an end of section.
    assert angles.prose.split("\n\n") == ["## Angles", r"$\theta_i = 10000^{-2i/d}$", "The angles."]
    assert code_text(angles) == "def angles(d: int):\n    return d"


def test_class_and_method_headers_move_beside_their_docstring():
    sections = parse(SAMPLE)
    rotary = next(s for s in sections if s.owner == "Rotary")
    assert rotary.code[0].text == "class Rotary(torch.nn.Module):"


def test_indented_comments_are_prose_and_code_keeps_its_indentation():
    sections = parse(SAMPLE)
    split = next(s for s in sections if s.prose == "Split the features in halves")
    assert split.kind == "comment" and split.indent == 8
    assert split.code[0].text == "        half = x.shape[-1] // 2  # (b, n, d/2)"


def test_trailing_comments_and_comments_inside_brackets_stay_in_the_code():
    sections = parse(SAMPLE)
    code = "\n".join(code_text(s) for s in sections)
    assert "# (b, n, d/2)" in code
    assert "            # inside brackets: code, not prose" in code
    assert all("inside brackets" not in s.prose for s in sections)


def test_bare_hash_ends_a_section():
    sections = parse(SAMPLE)
    last = sections[-1]
    assert last.prose == "" and code_text(last) == "        return x[..., :half]"
    before = sections[-2]
    assert before.code[-1].text == "        )"


def test_bare_hash_after_code_splits_even_without_prose():
    sections = parse("a = 1\n#\nb = 2\n")
    assert [code_text(s) for s in sections] == ["a = 1", "b = 2"]


def test_line_numbers_are_the_files_own_and_every_line_is_covered_once():
    sections = parse(SAMPLE)
    n_lines = len(SAMPLE.rstrip("\n").split("\n"))
    covered = [n for s in sections for n in s.lines]
    assert sorted(covered) == list(range(1, n_lines + 1))
    lines = SAMPLE.split("\n")
    for s in sections:
        for line in s.code:
            assert lines[line.number - 1] == line.text


def test_pragmas_and_shebang_stay_in_code():
    src = "#!/usr/bin/env python\nimport os  # noqa: F401\n# type: ignore\nx = 1\n"
    sections = parse(src)
    assert len(sections) == 1 and sections[0].prose == ""
    assert [line.number for line in sections[0].code] == [1, 2, 3, 4]


def test_multiline_string_with_hash_lines_is_code():
    src = 'x = """\n# not a comment\n"""\n# a comment\ny = 1\n'
    sections = parse(src)
    assert code_text(sections[0]) == 'x = """\n# not a comment\n"""'
    assert sections[1].prose == "a comment" and code_text(sections[1]) == "y = 1"


def test_invalid_python_is_shown_as_code():
    sections = parse("def broken(:\n    pass\n")
    assert len(sections) == 1 and [line.number for line in sections[0].code] == [1, 2]


def test_nonraw_backslash_docstrings_are_reported():
    src = 'def f():\n    """$\\frac{a}{b}$"""\n\n\ndef g():\n    """$\\\\frac{a}{b}$"""\n\n\ndef h():\n    r"""$\\frac{a}{b}$"""\n'
    assert nonraw_backslash_docstrings(src) == [2]
    # What the author typed is what the page shows, escaped backslashes resolved.
    assert [s.prose for s in parse(src)] == ["$\\frac{a}{b}$", "$\\frac{a}{b}$", "$\\frac{a}{b}$"]



def _nonraw_docstrings_with_backslashes(source: str) -> list[int]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                segment = ast.get_source_segment(source, first) or ""
                if "\\" in segment and segment.lstrip()[:1] not in ("r", "R"):
                    found.append(first.lineno)
    return found


def test_every_docstring_with_a_backslash_in_the_project_is_raw():
    """Docstrings with TeX are raw strings, so `help()` and mkdocstrings show them as typed."""
    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "labml_style_nn").rglob("*.py")) + sorted((root / "experiments").rglob("*.py"))
    offenders = {str(f.relative_to(root)): lines for f in files
                 if (lines := _nonraw_docstrings_with_backslashes(f.read_text()))}
    assert not offenders, offenders
