"""Every ```python block of README.md runs as pasted: on its own (a fresh namespace, nothing defined by
an earlier block), on a CPU, in seconds.

A block that cannot run here (it needs the network) is marked by the line
`<!-- README test: not run (REASON) -->` right above its fence, and says so in its first line too,
so a reader sees it; the test skips exactly those blocks, with their reason.
"""

import re
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_RUN = re.compile(r"<!-- README test: not run \((?P<reason>[^)]+)\) -->\n$")


def python_blocks() -> list[tuple[int, str, str | None]]:
    """`(line, code, reason it is not run or None)` for each ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.M | re.S):
        before = text[: m.start()]
        marker = NOT_RUN.search(before[before.rfind("\n", 0, len(before) - 1) + 1:])
        blocks.append((before.count("\n") + 1, m.group(1), marker and marker.group("reason")))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 6 and sum(reason is None for _, _, reason in BLOCKS) >= 6


@pytest.mark.filterwarnings("error")  # an example that warns is not one to copy
@pytest.mark.parametrize("line, code, reason", BLOCKS, ids=[f"line{line}" for line, _, _ in BLOCKS])
def test_readme_block_runs_on_its_own(line, code, reason):
    if reason is not None:
        # The reader is told too: the block's first line says it is not run.
        assert code.startswith("# Needs") and "not run by the tests" in code.splitlines()[0], code
        pytest.skip(f"README.md line {line}: {reason}")
    start = time.perf_counter()
    exec(compile(code, f"README.md, block at line {line}", "exec"), {"__name__": "readme"})
    # "In seconds" on a busy 2-core machine: a generous bound that still catches a minutes-long example.
    assert time.perf_counter() - start < 60
