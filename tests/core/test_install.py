"""`install.py` picks the CPU build of PyTorch on a Linux machine without an NVIDIA GPU, and the default build otherwise."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import install  # noqa: E402


@pytest.fixture
def calls(monkeypatch):
    recorded = []
    monkeypatch.setattr(install, "pip", lambda *args: recorded.append(args))
    monkeypatch.setattr(install.platform, "system", lambda: "Linux")
    return recorded


def test_no_gpu_installs_the_cpu_build(calls, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no torch yet
    monkeypatch.setattr(install.shutil, "which", lambda name: None)  # no nvidia-smi
    install.main([])
    assert calls[0] == ("torch", "--index-url", install.CPU_INDEX)
    assert calls[1][0] == "-e" and calls[1][1].endswith("[dev]")


def test_a_gpu_gets_the_default_build(calls, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(install, "has_nvidia_gpu", lambda: True)
    install.main([])
    assert calls[0] == ("torch",)


def test_an_installed_torch_is_kept_and_flags_force_the_choice(calls, monkeypatch):
    monkeypatch.setattr(install, "has_nvidia_gpu", lambda: True)
    install.main([])  # torch is importable here
    assert [c[0] for c in calls] == ["-e"]
    calls.clear()
    install.main(["--cpu"])
    assert calls[0] == ("torch", "--index-url", install.CPU_INDEX)
