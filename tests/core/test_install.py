"""`install.py` installs what the tests need: the CPU build of PyTorch on a Linux machine without an
NVIDIA GPU (quietly, failing fast when PyTorch's index cannot be reached), the package with [dev],
and Node.js/npm/Chromium with apt-get where that is allowed, then KaTeX with `npm ci`."""

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import install  # noqa: E402


def options(*argv: str) -> argparse.Namespace:
    return argparse.Namespace(cpu="--cpu" in argv, cuda="--cuda" in argv, no_apt="--no-apt" in argv)


class Commands(list):
    """The commands install.py ran; a command that holds a word of `failing` fails."""

    def __init__(self):
        super().__init__()
        self.failing: set[str] = set()


@pytest.fixture
def commands(monkeypatch):
    """The commands install.py runs, recorded instead of run."""
    recorded = Commands()

    def run(command, quiet=True):
        recorded.append(command)
        failed = any(word in command for word in recorded.failing)
        return subprocess.CompletedProcess(command, 1 if failed else 0, "", "")

    monkeypatch.setattr(install, "run", run)
    monkeypatch.setattr(install, "torch_build", lambda: "PyTorch 2.13.0+cpu (the CPU build)")
    monkeypatch.setattr(install.platform, "system", lambda: "Linux")
    monkeypatch.setattr(install.shutil, "which", lambda name: None)  # no nvidia-smi, node or npm
    monkeypatch.setattr(install, "chromium", lambda: None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no torch yet
    return recorded


def test_no_gpu_installs_the_newest_cpu_build_pinned_quietly_and_fast(commands, monkeypatch):
    monkeypatch.setattr(install, "newest_cpu_build", lambda: "2.13.0+cpu")
    line = install.install_torch(options())
    # Pinned by its `+cpu` version: a plain `torch` lets pip take a newer CUDA build from another source.
    assert commands == [install.pip("torch==2.13.0+cpu", "--extra-index-url", install.CPU_INDEX,
                                    "--retries", "0", "--timeout", "10")]
    assert "-q" in commands[0]
    assert line == "installed PyTorch 2.13.0+cpu (the CPU build), the newest CPU build pip can reach: " \
                   "no NVIDIA GPU was found"


def test_the_newest_cpu_build_is_read_from_pip(monkeypatch):
    listing = "torch (2.15.0)\nAvailable versions: 2.15.0, 2.14.1, 2.13.0+cpu, 2.13.0, 2.12.0+cpu\n"
    monkeypatch.setattr(install, "run", lambda command, quiet=True: subprocess.CompletedProcess(command, 0, listing, ""))
    assert install.newest_cpu_build() == "2.13.0+cpu"
    monkeypatch.setattr(install, "run", lambda command, quiet=True: subprocess.CompletedProcess(command, 1, "", "x"))
    assert install.newest_cpu_build() is None


def test_no_cpu_build_anywhere_falls_back_and_says_so(commands, monkeypatch):
    monkeypatch.setattr(install, "newest_cpu_build", lambda: None)
    line = install.install_torch(options())
    assert commands == [install.pip("torch")]
    assert "no NVIDIA GPU was found, but no CPU build of PyTorch could be found" in line and "could not be reached" in line


def test_a_gpu_gets_the_default_build(commands, monkeypatch):
    monkeypatch.setattr(install, "has_nvidia_gpu", lambda: True)
    line = install.install_torch(options())
    assert commands == [install.pip("torch")] and line.endswith("from PyPI: an NVIDIA GPU was found")


def test_an_installed_torch_is_kept_and_flags_force_the_choice(commands, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert install.install_torch(options()).startswith("kept the installed PyTorch") and not commands
    monkeypatch.setattr(install, "newest_cpu_build", lambda: "2.13.0+cpu")
    assert "--cpu was given" in install.install_torch(options("--cpu"))
    assert install.CPU_INDEX in commands[0]


def test_missing_node_and_chromium_are_skips_said_once_unless_apt_get_may_install_them(commands, monkeypatch):
    monkeypatch.setattr(install, "can_apt", lambda: False)
    notes = install.install_system_packages(options())
    assert not commands and len(notes) == 2
    assert "will be skipped" in notes[0] and "apt-get install nodejs npm" in notes[0]
    assert "browser test" in notes[1]
    # As root with apt-get (a container, CI): installed, non-interactively.
    monkeypatch.setattr(install, "can_apt", lambda: True)
    assert install.install_system_packages(options()) == []
    assert commands[-1] == ["apt-get", "install", "-y", "-qq", "nodejs", "npm", "chromium"]
    commands.clear()
    install.install_system_packages(options("--no-apt"))
    assert not commands


def test_katex_comes_from_npm_ci_at_the_locked_version(commands, monkeypatch, tmp_path):
    (tmp_path / "package-lock.json").write_text((ROOT / "package-lock.json").read_text())
    monkeypatch.setattr(install, "ROOT", tmp_path)
    assert "(npm ci)" in install.install_katex()
    assert commands[0][:2] == ["npm", "ci"] and str(tmp_path) in commands[0]
    # Already there at that version: kept, nothing is run.
    commands.clear()
    katex = tmp_path / "node_modules" / "katex"
    katex.mkdir(parents=True)
    version = install.json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/katex"]["version"]
    (katex / "package.json").write_text(install.json.dumps({"version": version}))
    assert install.install_katex() == f"kept KaTeX {version} in node_modules/" and not commands
