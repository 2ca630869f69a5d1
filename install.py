"""Install everything labml_style_nn's experiments and tests need into the current Python environment.

    python install.py            # PyTorch for this machine: the CPU build unless an NVIDIA GPU is present
    python install.py --cpu      # the CPU build of PyTorch, whatever the machine has
    python install.py --cuda     # PyTorch's default build from PyPI (with CUDA on Linux)
    python install.py --no-apt   # never install system packages with apt-get
    python install.py --torch-only   # PyTorch for this machine, nothing else (the wheel check uses it)

Run it inside a virtual environment (`python -m venv .venv && . .venv/bin/activate`).  In order:

1. **PyTorch.**  On Linux, `pip install torch` from PyPI pulls the CUDA build (about 5 GB with its
   libraries) even on a machine without a GPU.  Without an NVIDIA driver (`nvidia-smi` absent) it
   installs the newest CPU build (a version labelled `+cpu`) that PyTorch's CPU index or pip's own
   sources (a mirror, a wheel folder) offer, pinned by that version so that pip cannot take a newer
   CUDA build from another source; asking the CPU index is quiet and gives up fast (no retries, a
   10-second timeout).  Only when no CPU build can be found is pip's default source used.  One line
   says which build was installed and why.  An installed PyTorch is kept.
2. **The package** with its development tools: `pip install -e ".[dev]"`.
3. **System packages** for the site's tests: Node.js and npm (KaTeX renders the site's math) and
   Chromium (the browser test).  When they are missing and this runs as root with `apt-get` (a
   container, CI), they are installed with `apt-get`; otherwise one line says which tests will be
   skipped and how to install what they need.
4. **KaTeX**, from the npm registry at the version `package-lock.json` pins (`npm ci`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Fail fast where PyTorch's index cannot be reached: one try, 10 seconds, instead of pip's 5 retries.
FAST = ("--retries", "0", "--timeout", "10")


def run(command: list[str], *, quiet: bool = True) -> subprocess.CompletedProcess:
    """Run `command`; with `quiet`, its output is kept for an error message instead of printed."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(command, capture_output=quiet, text=True, env=env, stdin=subprocess.DEVNULL)


def must(command: list[str], what: str) -> None:
    """Run `command` quietly; on failure, show its output and stop with a line that says what failed."""
    result = run(command)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"install.py: {what} failed ({' '.join(command)})")


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "-q", *args]


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver answers `nvidia-smi`; without one, CUDA wheels could never be used."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def torch_build() -> str:
    """The installed PyTorch, as `2.13.0+cpu (the CPU build)`, read in a fresh interpreter."""
    code = "import torch; print(torch.__version__, torch.version.cuda or '')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    if not out:
        return "PyTorch (its version could not be read)"
    return f"PyTorch {out[0]} ({'the CPU build' if len(out) == 1 else f'a build with CUDA {out[1]}'})"


# ## PyTorch


def install_torch(args: argparse.Namespace) -> str:
    """Install PyTorch for this machine; returns the one line that says which build and why."""
    if importlib.util.find_spec("torch") is not None and not (args.cpu or args.cuda):
        return f"kept the installed {torch_build()} (python install.py --cpu or --cuda replaces it)"
    if args.cuda or (not args.cpu and (has_nvidia_gpu() or platform.system() != "Linux")):
        # Off Linux, PyPI's default wheels are already the right ones (no CUDA libraries to pull).
        why = "--cuda was given" if args.cuda else "an NVIDIA GPU was found" if has_nvidia_gpu() \
            else f"PyPI's default build is the right one on {platform.system()}"
        must(pip("torch"), "installing PyTorch")
        return f"installed {torch_build()} from PyPI: {why}"
    why = "--cpu was given" if args.cpu else "no NVIDIA GPU was found"
    # The newest CPU build any configured source offers (PyTorch's CPU index, or a local mirror or wheel
    # folder in pip's configuration), pinned by its `+cpu` version: a plain `torch` would let pip take
    # a newer CUDA build from another source.
    cpu = newest_cpu_build()
    if cpu is not None and run(pip(f"torch=={cpu}", "--extra-index-url", CPU_INDEX, *FAST)).returncode == 0:
        return f"installed {torch_build()}, the newest CPU build pip can reach: {why}"
    must(pip("torch"), "installing PyTorch")
    return (f"installed {torch_build()} from pip's default source: {why}, but no CPU build of PyTorch could be "
            f"found (PyTorch's CPU index, {CPU_INDEX}, could not be reached)")


def newest_cpu_build() -> str | None:
    """The newest `torch` version labelled `+cpu` that pip's sources and PyTorch's CPU index offer, if any."""
    result = run([sys.executable, "-m", "pip", "index", "versions", "torch", "--extra-index-url", CPU_INDEX, *FAST])
    for line in result.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
            return next((v for v in versions if v.endswith("+cpu")), None)  # newest first
    return None


# ## System packages and KaTeX


def can_apt() -> bool:
    """Root on a machine with `apt-get` (a container or CI): system packages can be installed unasked."""
    return platform.system() == "Linux" and hasattr(os, "geteuid") and os.geteuid() == 0 \
        and shutil.which("apt-get") is not None


def chromium() -> str | None:
    return next((p for p in (os.environ.get("CHROMIUM"), "/usr/bin/chromium") if p and Path(p).exists()), None) \
        or shutil.which("chromium")


def install_system_packages(args: argparse.Namespace) -> list[str]:
    """apt-get the missing Node.js, npm and Chromium where allowed; returns lines about what stays missing."""
    node = shutil.which("node") or shutil.which("nodejs")
    missing = [name for name, found in (("nodejs", node), ("npm", shutil.which("npm")), ("chromium", chromium()))
               if not found]
    if missing and can_apt() and not args.no_apt:
        must(["apt-get", "update", "-qq"], "apt-get update")
        must(["apt-get", "install", "-y", "-qq", *missing], f"installing {', '.join(missing)} with apt-get")
        print(f"installed {', '.join(missing)} with apt-get", flush=True)
        return []
    notes = []
    if "nodejs" in missing or "npm" in missing:
        notes.append("Node.js and npm were not found: the tests of the site's math (KaTeX runs under Node.js) will "
                     "be skipped; install them (Debian: apt-get install nodejs npm) and run python install.py again")
    if "chromium" in missing:
        notes.append("Chromium was not found: the browser test of the site will be skipped "
                     "(Debian: apt-get install chromium)")
    return notes


def install_katex() -> str:
    """`npm ci`: KaTeX at the version package-lock.json pins (kept when that version is already there)."""
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/katex"]["version"]
    installed = ROOT / "node_modules" / "katex" / "package.json"
    if installed.is_file() and json.loads(installed.read_text()).get("version") == locked:
        return f"kept KaTeX {locked} in node_modules/"
    must(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(ROOT)], "npm ci (KaTeX)")
    return f"installed KaTeX {locked} into node_modules/ (npm ci)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Install labml_style_nn, PyTorch for this machine, and what the "
                                                 "tests need.")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--cpu", action="store_true", help="install the CPU build of PyTorch")
    choice.add_argument("--cuda", action="store_true", help="install PyTorch's default (CUDA) build")
    parser.add_argument("--no-apt", action="store_true",
                        help="never install Node.js, npm or Chromium with apt-get (as root it does when they are missing)")
    parser.add_argument("--torch-only", action="store_true", help="install PyTorch for this machine and nothing else")
    args = parser.parse_args(argv)
    print(install_torch(args), flush=True)
    if args.torch_only:
        return
    print("installing labml_style_nn with its development tools (pip install -e \".[dev]\") ...", flush=True)
    must(pip("-e", f"{ROOT}[dev]"), 'pip install -e ".[dev]"')
    notes = install_system_packages(args)
    if shutil.which("npm"):
        print(install_katex(), flush=True)
    for note in notes:
        print(note, flush=True)
    print("done: python experiments/char_lm.py trains a small model; python -m pytest runs the tests", flush=True)


if __name__ == "__main__":
    main()
