"""Install labml_style_nn and its development tools into the current Python environment.

    python install.py            # PyTorch for this machine: the CPU build unless an NVIDIA GPU is present
    python install.py --cpu      # the CPU build of PyTorch, whatever the machine has
    python install.py --cuda     # PyTorch's default build from PyPI (with CUDA on Linux)

On Linux, `pip install torch` from PyPI pulls the CUDA build (about 5 GB with its libraries) even on
a machine without a GPU.  This script installs PyTorch first: the CPU build from PyTorch's CPU index
when the machine has no NVIDIA driver (`nvidia-smi` absent), the default build otherwise.  An
installed PyTorch is kept.  Then it runs `pip install -e ".[dev]"`.  Run it inside a virtual
environment (`python -m venv .venv && . .venv/bin/activate`).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver answers `nvidia-smi`; without one, CUDA wheels could never be used."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Install labml_style_nn with PyTorch for this machine.")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--cpu", action="store_true", help="install the CPU build of PyTorch")
    choice.add_argument("--cuda", action="store_true", help="install PyTorch's default (CUDA) build")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is not None and not (args.cpu or args.cuda):
        print("PyTorch is already installed; keeping it", flush=True)
    elif args.cuda or (not args.cpu and (has_nvidia_gpu() or platform.system() != "Linux")):
        # Off Linux, PyPI's default wheels are already the right ones (no CUDA libraries to pull).
        pip("torch")
    else:
        print("no NVIDIA GPU found: installing the CPU build of PyTorch", flush=True)
        pip("torch", "--index-url", CPU_INDEX)
    pip("-e", f"{Path(__file__).resolve().parent}[dev]")


if __name__ == "__main__":
    main()
