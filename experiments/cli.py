r"""
# Command line and run folders

What makes an experiment script pleasant to run, shared by all of them:

* **A command line from the config dataclass.**  Every field becomes `--field-name`; its type is
  named in errors ("argument --steps: invalid positive integer value: '-5'"); everything that can be
  checked before setup is checked there (a CUDA device that is not there, a `--resume` path that
  does not exist, a data file that is missing, a config's own `check()`), so a mistake is a usage
  error in a second, not a traceback after the data has loaded.  `--help` opens with the page's
  first paragraph in plain words.
* **Runs that are never lost.**  Each run gets a new folder `runs/NAME/DATE-TIME` (an explicit
  `--out-dir` that holds a run is refused without `--overwrite`), printed at the start and at the
  end.  `--resume` takes that folder or its checkpoint, and continues the run that was saved: its
  settings come from the checkpoint, and an option given again must agree with them (or it is a
  usage error that names the difference).  A first Ctrl-C, or a SIGTERM (what `timeout` and job
  schedulers send), lets the current step finish; the script saves a checkpoint and prints the
  command that continues it.  A checkpoint is also written every few minutes of training
  (`--checkpoint-minutes`), so even a run killed outright loses only the last few minutes.

`experiments/common.py` re-exports everything here, so scripts import from one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import torch


def check_choices(name: str, text: str, allowed, *, many: bool = True) -> list[str]:
    """The items of a comma-separated option (or the one value), each one of `allowed`; `ValueError` otherwise."""
    items = text.split(",") if many else [text]
    bad = [item for item in items if item not in allowed]
    if bad or not items:
        what = "comma-separated values from" if many else "one of"
        raise ValueError(f"argument --{name.replace('_', '-')}: expected {what} {', '.join(allowed)}, got {text!r}")
    return items


def check_int_list(name: str, text: str) -> list[int]:
    """A comma-separated list of positive integers; `ValueError` naming the option otherwise."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"argument --{name.replace('_', '-')}: expected comma-separated positive integers, got {text!r}")
    return values


# Command-line value types.  argparse names a bad value by the type's `__name__`:
# "argument --steps: invalid positive integer value: '-5'".
def _value_type(name: str, convert, accept):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} value: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"invalid {name} value: {text!r}")
        return value

    parse.__name__ = name
    parse.metavar = "P" if "probability" in name else "N" if "integer" in name else "X"
    return parse


positive_int = _value_type("positive integer", int, lambda v: v > 0)
non_negative_int = _value_type("non-negative integer", int, lambda v: v >= 0)
positive_number = _value_type("positive number", float, lambda v: math.isfinite(v) and v > 0)
non_negative_number = _value_type("non-negative number", float, lambda v: math.isfinite(v) and v >= 0)
probability = _value_type("probability in [0, 1)", float, lambda v: 0 <= v < 1)


def _field_type(f, default):
    """The command-line type of a config field: its metadata's `type`, or one chosen from its name and default."""
    if "type" in f.metadata:
        return f.metadata["type"]
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        # Counts and sizes are positive; 0 is allowed where it means "off" or "none" (a default of 0, "0 = ...").
        zero_allowed = default == 0 or f.name in ("seed", "warmup") or "0 =" in f.metadata.get("help", "")
        return non_negative_int if zero_allowed else positive_int
    if isinstance(default, float):
        if f.name.endswith("dropout"):
            return probability
        return positive_number if f.name == "lr" else non_negative_number
    return str


def _plain(text: str) -> str:
    r"""Markdown and TeX to plain words for a terminal: `$\le$` to <=, `**x**` and `` `x` `` to x, links to their text."""
    symbols = {r"\le": "<=", r"\ge": ">=", r"\times": "x", r"\cdot": "*", r"\ln": "ln", r"\log": "log",
               r"\infty": "infinity", r"\sum": "sum", r"\mid": "|", r"\to": "->", r"\approx": "~"}
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)  # [text](url)
    text = re.sub(r"\*\*?([^*]+)\*\*?|`([^`]+)`", lambda m: m.group(1) or m.group(2), text)

    def math(m: re.Match) -> str:
        tex = m.group(1)
        for command, word in symbols.items():
            tex = tex.replace(command, f" {word} ")
        tex = re.sub(r"\\(mathcal|mathrm|operatorname|text|mathbf)\{([^}]*)\}", r"\2", tex)
        tex = re.sub(r"\\[a-zA-Z]+", "", tex).replace("{", "").replace("}", "")
        return " ".join(tex.split())

    return re.sub(r"\$([^$]+)\$", math, text)


def _summary(doc: str | None) -> str | None:
    """A page docstring's title and its first paragraph of prose, in plain words, for `--help`.

    Display equations, code blocks and tables are skipped; a sentence that only announces one
    ("... is trained on the cross-entropy:") is dropped with it.
    """
    if not doc:
        return None
    paragraphs = [p.strip() for p in doc.strip().split("\n\n")]
    title = paragraphs[0].splitlines()[0].lstrip("# ")
    prose = ""
    for p in paragraphs[1:]:
        if p.startswith(("*Paper", "$$", "```", "|", "#", "*Papers")) or not p:
            continue
        text = " ".join(_plain(p).split())
        if not text.endswith((".", "!", "?")):  # the sentence goes on in an equation: keep the ones before
            text = text[: max(text.rfind(". ", 0, len(text) - 1) + 1, 0)].strip()
        if text:
            prose = text
            break
    return f"{title}. {prose}" if prose else title


def _already_a_run(path: Path) -> list[str]:
    """The files that show `path` holds an earlier run."""
    names = ("summary.json", "metrics.jsonl", "metrics.csv", "checkpoint.pt")
    return sorted({f.name for f in path.glob("*") if f.name in names or f.suffix == ".pt"}) if path.is_dir() else []


def _resume_target(config, config_cls) -> str:
    """`--resume` as the script reads it (its checkpoint file, or the folder for several), or an error message."""
    files = getattr(config_cls, "RESUME_FILES", ("checkpoint.pt",))
    if not files:
        return "error: this experiment does not resume (each run is a short comparison); start it again"
    path = Path(config.resume)
    if not path.exists():
        return f"error: {path} does not exist; pass a run folder (runs/NAME/...) or its checkpoint file"
    folder = path if path.is_dir() else path.parent
    found = [f for f in files if (folder / f).is_file()]
    if not found:
        return f"error: {folder} holds no checkpoint ({' or '.join(files)}) to resume from"
    if len(files) == 1:
        return str(folder / files[0]) if path.is_dir() else str(path)
    return str(folder)


# Options that may differ when a run is resumed: where and how it runs, not what it computes.
RESUME_MAY_CHANGE = ("resume", "device", "compile", "out_dir", "overwrite", "cache_dir", "log_every", "stop_at",
                     "checkpoint_every", "checkpoint_minutes")


def _saved_config(target: str, config_cls) -> dict | None:
    """The config a checkpoint was saved with (the first of `RESUME_FILES` for a folder), or None if it has none."""
    path = Path(target)
    if path.is_dir():
        path = next(path / f for f in getattr(config_cls, "RESUME_FILES", ("checkpoint.pt",)) if (path / f).is_file())
    saved = torch.load(path, map_location="cpu", weights_only=False).get("config")
    if not isinstance(saved, dict) or not saved:
        return None
    names = {f.name for f in fields(config_cls)}
    return {name: value for name, value in saved.items() if name in names}


def _resumed_config(config, config_cls, given: set[str], target: str) -> tuple[object, list[str]]:
    """The saved run's config, with the options in `given` that may change applied; and the options of
    `given` that contradict the saved run, as `--name VALUE (saved: VALUE)`."""
    saved = _saved_config(target, config_cls)
    if saved is None:  # a checkpoint without its config: the command line is all there is
        return dataclasses.replace(config, resume=target), []
    differ = [f"--{name.replace('_', '-')} {getattr(config, name)} (the run has {saved[name]})"
              for name in sorted(given) if name not in RESUME_MAY_CHANGE and name in saved
              and getattr(config, name) != saved[name]]
    changes = {name: getattr(config, name) for name in given if name in RESUME_MAY_CHANGE}
    # The run goes on in the checkpoint's folder unless --out-dir is given again.
    resumed = dataclasses.replace(config_cls(**saved), **{"out_dir": "", "overwrite": False, **changes,
                                                           "resume": target})
    return resumed, differ


class _Switch(argparse.BooleanOptionalAction):
    """`--name` sets True and `--no-name` False, also for a field whose own name begins with `no_`.

    `argparse`'s action reads any flag starting with `--no-` as the negation, so `--no-norm-bias` (the
    field `no_norm_bias`) would set False."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def parse_config(config_cls: type, argv: list[str] | None = None, *, doc: str | None = None):
    """Build an `argparse` command line from a config dataclass, and parse it.

    Every field becomes `--field-name` (booleans become `--name/--no-name`); its `help` comes from the
    field's metadata. `--preset gpu` applies the class's `GPU` overrides (a larger model and budget for
    one GPU; bf16 comes from `autocast` on CUDA), then `--smoke` its `SMOKE` overrides (a tiny,
    seconds-long run); options given explicitly on the command line still win over both.

    With `--resume`, the config is the one saved in the checkpoint; options given again (`--smoke`
    and `--preset` included) must match it, except those of `RESUME_MAY_CHANGE`.
    """
    parser = argparse.ArgumentParser(description=_summary(doc))
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few steps: a CI check that it runs")
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: the defaults (what the results page shows); gpu: a larger model and budget "
                             "for one GPU, in bf16 (default: cpu)")
    defaults = config_cls()
    resumes = bool(getattr(config_cls, "RESUME_FILES", ("checkpoint.pt",)))
    for f in fields(config_cls):
        if f.name == "checkpoint_minutes" and not resumes:
            continue  # a short comparison has no checkpoints to write
        default = getattr(defaults, f.name)
        kind = _field_type(f, default)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        # The default is shown once: not when the help already says it, nor for an empty string.
        if "default" not in help_text and default != "":
            help_text = f"{help_text} (default: {default})".strip()
        if kind is bool:
            parser.add_argument(flag, action=_Switch, default=argparse.SUPPRESS, help=help_text)
        elif f.name == "device":
            parser.add_argument(flag, choices=("auto", "cpu", "cuda"), default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = f.metadata.get("metavar") or getattr(kind, "metavar", None) or \
                {"resume": "PATH", "out_dir": "DIR", "cache_dir": "DIR"}.get(f.name, f.name.upper())
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text, metavar=metavar)
    args = vars(parser.parse_args(argv))
    smoke, preset = args.pop("smoke"), args.pop("preset")
    config = config_cls()
    given = set(args)  # the options this command line sets, through --preset and --smoke too
    if preset == "gpu":
        config = dataclasses.replace(config, **getattr(config_cls, "GPU", {}))
        given |= set(getattr(config_cls, "GPU", {}))
    if smoke:
        config = dataclasses.replace(config, **getattr(config_cls, "SMOKE", {}))
        given |= set(getattr(config_cls, "SMOKE", {}))
    config = dataclasses.replace(config, **args)
    # Everything that can be checked before any setup is a usage error, not a traceback minutes later.
    if getattr(config, "device", "auto") == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: 'cuda' was asked for, but PyTorch sees no CUDA device here "
                     "(torch.cuda.is_available() is False); use --device cpu, or auto")
    if getattr(config, "resume", ""):
        target = _resume_target(config, config_cls)
        if target.startswith("error: "):
            parser.error(f"argument --resume: {target[len('error: '):]}")
        config, differ = _resumed_config(config, config_cls, given, target)
        if differ:
            it = "it" if len(differ) == 1 else "them"
            parser.error(f"argument --resume: a resumed run keeps the settings it was saved with, and this "
                         f"command line changes {it}: {'; '.join(differ)}. Leave {it} out to continue the run, "
                         f"or start a new run (without --resume) to change {it}")
    elif getattr(config, "out_dir", "") and not getattr(config, "overwrite", False):
        found = _already_a_run(Path(config.out_dir))
        if found:
            parser.error(f"argument --out-dir: {config.out_dir} already holds a run ({', '.join(found)}); pass "
                         "--overwrite to replace it, --resume to continue it, or leave --out-dir out for a new folder")
    data = getattr(config, "data", None)
    if data is not None and data not in ("stdlib", "tinyshakespeare", "enwik8") and not Path(data).is_file():
        parser.error(f"argument --data: {data!r} is neither stdlib, tinyshakespeare, enwik8 nor a text file")
    try:
        config.check()
    except ValueError as e:
        parser.error(str(e))
    return config


_RUN_FOLDER: list[Path] = []  # the folder of the run in progress, for `run_experiment`'s last line


def out_dir_for(config, name: str) -> Path:
    """The run folder, never an earlier run's by accident; printed when it is chosen.

    `--out-dir` if given (refused if it holds a run, unless `--overwrite`); with `--resume`, the
    folder of the checkpoint; otherwise a new `runs/NAME/YYYYmmdd-HHMMSS` under the current directory.
    """
    if config.out_dir:
        path = Path(config.out_dir)
        if not (config.resume or getattr(config, "overwrite", False)) and _already_a_run(path):
            raise FileExistsError(f"out_dir: {path} already holds a run ({', '.join(_already_a_run(path))}); "
                                  "set overwrite=True to replace it")
    elif config.resume:
        path = Path(config.resume) if Path(config.resume).is_dir() else Path(config.resume).parent
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / name / stamp
        suffix = 1
        while path.exists():  # two runs started within the same second
            suffix += 1
            path = Path("runs") / name / f"{stamp}-{suffix}"
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the first process writes
        path.mkdir(parents=True, exist_ok=True)
        print(f"run folder: {path}", flush=True)
    if not _RUN_FOLDER:  # the first folder is the run's (a comparison's sub-runs come later)
        _RUN_FOLDER.append(path)
    return path


# ## Runs that are never lost
#
# `run_experiment` is every script's `__main__`: it parses the command line, runs, and ends with the
# run folder.  A first Ctrl-C or SIGTERM inside `StopOnInterrupt` lets the current step finish; the
# script then saves a checkpoint and calls `interrupted`, which says how to resume.  A second one
# stops at once.


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving `checkpoint` at `step`."""

    def __init__(self, checkpoint: Path, step: int):
        super().__init__(f"stopped at step {step}")
        self.checkpoint, self.step = checkpoint, step


# The signal that stopped the run last, for the exit status (128 + its number, as a shell reports it).
_STOPPED_BY: list[signal.Signals] = []
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopOnInterrupt:
    """`with StopOnInterrupt() as stop:` a loop that checks `stop.requested` after each step.

    Ctrl-C (SIGINT) and SIGTERM are handled alike: the first asks the loop to stop after its step,
    a second one stops at once."""

    def __init__(self, enabled: bool = True):
        # Under torchrun every process gets the signal at a different step; they stop as they are.
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested, self.previous = False, {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _STOPPED_BY[:] = [signal.Signals(signum)]
        print(f"\n{_SIGNAL_NAMES[signum]}: stopping after this step and saving a checkpoint "
              "(send it again to stop at once)", flush=True)

    def __enter__(self) -> StopOnInterrupt:
        if self.enabled:
            self.previous = {sig: signal.signal(sig, self._handle) for sig in _SIGNAL_NAMES}
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous = {}


class PeriodicCheckpoint:
    """`due(step)` says when to save a checkpoint during training: every `minutes` of training
    (0 = never), and every `every_steps` steps if that is set.  A run killed outright then loses at
    most that much work; `save_checkpoint` writes a temporary file and renames it, so a kill during
    the write leaves the last good checkpoint."""

    def __init__(self, minutes: float, every_steps: int = 0):
        self.seconds, self.every_steps = minutes * 60, every_steps
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        now = time.monotonic()
        if (self.every_steps and step % self.every_steps == 0) or (self.seconds and now - self.last >= self.seconds):
            self.last = now
            return True
        return False


def interrupted(checkpoint: Path, step: int):
    """Call after saving the checkpoint of a run stopped by Ctrl-C or SIGTERM."""
    raise Interrupted(Path(checkpoint), step)


def run_experiment(main, config_cls: type, doc: str | None = None):
    """Parse the command line, run `main(config)`, and end with the run folder (also on Ctrl-C or a failed download)."""
    from experiments.data import DownloadError

    config = parse_config(config_cls, doc=doc)
    _RUN_FOLDER.clear()
    _STOPPED_BY.clear()
    script = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0] else "the script"
    try:
        result = main(config)
    except Interrupted as stop:
        print(f"\ninterrupted at step {stop.step}; checkpoint saved to {stop.checkpoint}\n"
              f"continue with: python {script} --resume {stop.checkpoint.parent}", file=sys.stderr)
        raise SystemExit(128 + (_STOPPED_BY[0] if _STOPPED_BY else signal.SIGINT)) from None
    except KeyboardInterrupt:
        where = f"; what it wrote so far is in {_RUN_FOLDER[0]}" if _RUN_FOLDER else ""
        print(f"\ninterrupted{where}", file=sys.stderr)
        raise SystemExit(130) from None
    except DownloadError as e:
        # Nothing was trained: a run folder that the failed download left empty is removed.
        if _RUN_FOLDER and _RUN_FOLDER[0].is_dir() and not any(_RUN_FOLDER[0].iterdir()):
            _RUN_FOLDER[0].rmdir()
        raise SystemExit(f"error: {e}") from None
    if _RUN_FOLDER:
        print(f"run folder: {_RUN_FOLDER[0]}")
    return result
