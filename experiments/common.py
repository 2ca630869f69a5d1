r"""
# Experiment helpers

Everything the experiment scripts share and that is not about a paper: seeding, picking a device,
mixed precision, `torch.compile`, checkpoints with exact resume, data-parallel training, a progress
bar, a CSV/JSON log, a loss-curve plot; the command line, run folders, periodic checkpoints and the handling of Ctrl-C and SIGTERM are in
[cli.py](cli.md) and re-exported here.

Each experiment keeps its own training loop written out in full; these helpers are the plumbing
around it, small enough to read in one sitting.

**Exact resume.** A run that is stopped at step $k$ and resumed must end bit-for-bit where an
uninterrupted run ends. Three things make that hold:

1. batches are a pure function of `(seed, step)` (see `batch_generator`), so no data-loader state
   has to be saved;
2. the checkpoint holds the model, the optimiser, the step and every RNG state (Python, torch CPU,
   CUDA) that dropout or sampling draws from;
3. the learning-rate schedule is a pure function of the step (`lr_at`).

**Data parallel.** Launched with `torchrun --nproc_per_node=N`, each process reads `RANK`,
`WORLD_SIZE` and `LOCAL_RANK`, joins a process group (gloo on CPU, nccl on CUDA), builds the *same*
global batch and keeps the rows `rank, rank + N, rank + 2N, ...` of it, as
`torch.utils.data.DistributedSampler` would. DDP averages the gradients, so $N$ processes with
$B/N$ rows each take the same step as one process with $B$ rows.

**Threads that sleep.** Every script sets `OMP_WAIT_POLICY=PASSIVE` before it imports torch (unless
the variable is already set): a thread that waits at the end of a parallel region then sleeps
instead of spinning. On a quiet machine this changes little; on a busy one spinning threads take the
cores that the work needs. Measured on 2 cores with a load average of 14 (the quick start's model,
batch 16): two spinning threads took 12.5 s and 2.2 s of CPU per step, two sleeping ones 0.25-1.3 s
and 0.2 s of CPU, one thread 1.8-2.5 s.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn as nn

# The repository root, so that `python experiments/NAME.py` finds `labml_style_nn` without installing it.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# ## Configuration and command line


@dataclass
class RunConfig:
    """Options every experiment has; an experiment's config subclasses this."""

    seed: int = field(default=0, metadata={"help": "random seed (weights, data order, dropout)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    compile: bool = field(default=False, metadata={"help": "wrap the model in torch.compile"})
    out_dir: str = field(default="", metadata={
        "help": "the run folder for logs, plots and checkpoints (default: a new folder runs/NAME/DATE-TIME per run)",
        "metavar": "DIR"})
    overwrite: bool = field(default=False, metadata={"help": "let --out-dir replace an earlier run in that folder"})
    resume: str = field(default="", metadata={
        "help": "continue a run: its folder or its checkpoint file (the run goes on in that folder)", "metavar": "PATH"})
    log_every: int = field(default=10, metadata={"help": "log the training loss every N steps"})
    checkpoint_minutes: float = field(default=3.0, metadata={
        "help": "also save a checkpoint after every N minutes of training, so that a run killed outright loses at "
                "most that much (0 = only at the end, on Ctrl-C and on SIGTERM)", "metavar": "N"})

    def check(self) -> None:
        """Raise `ValueError` for a value no run can use; the command line reports it as a usage error."""


# The command line, run folders, checkpoint timing and signals live in cli.py; scripts import them from here.
from experiments.cli import (  # noqa: E402, F401
    Interrupted,
    PeriodicCheckpoint,
    StopOnInterrupt,
    check_choices,
    check_int_list,
    interrupted,
    non_negative_int,
    non_negative_number,
    out_dir_for,
    parse_config,
    positive_int,
    positive_number,
    probability,
    run_experiment,
)

# ## Seeding, device, precision, compile


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (CPU and every CUDA device)."""
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when it is there; under `torchrun` each process takes GPU `LOCAL_RANK`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; on CPU a no-op, so CPU runs are exact float32 (and reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """`torch.compile(model)` when asked; the uncompiled module keeps the parameters for checkpoints."""
    return torch.compile(model) if enabled else model


# ## Data parallel


@dataclass
class Distributed:
    """Where this process sits in a `torchrun` launch (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_name: str) -> Distributed:
    """Join the process group that `torchrun` describes in `RANK`/`WORLD_SIZE`/`LOCAL_RANK`, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not torch_dist.is_initialized():
        # gloo runs on CPU tensors, nccl on CUDA ones.
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def wrap_ddp(model: nn.Module, dist: Distributed) -> nn.Module:
    """`DistributedDataParallel` when there is more than one process; the model itself otherwise."""
    if not dist.enabled:
        return model
    device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def shard(batch: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """This process's rows of the global batch: `rank, rank + N, ...` (the `DistributedSampler` split)."""
    if batch.shape[0] % dist.world_size:
        raise ValueError(f"batch_size: {batch.shape[0]} rows do not split evenly over {dist.world_size} processes")
    return batch[dist.rank :: dist.world_size]


def all_reduce_mean(value: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """The mean of `value` over all processes (for logging the global loss)."""
    if dist.enabled:
        value = value.detach().clone()
        torch_dist.all_reduce(value)
        value /= dist.world_size
    return value


def cleanup_distributed(dist: Distributed) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


# ## Batches and schedule


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The generator for step `step`'s batch: a pure function of `(seed, step)`, so resume needs no loader state."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    r"""Linear warm-up, then cosine decay to `min_ratio * lr`.

    $$\eta_t = \eta \cdot \begin{cases} \frac{t+1}{w} & t < w \\
    r + (1 - r)\frac{1 + \cos(\pi \frac{t - w}{T - w})}{2} & t \ge w \end{cases}$$

    >>> lr_at(0, lr=1.0, warmup=10, total=100)
    0.1
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ## Checkpoints


def rng_states() -> dict[str, Any]:
    """Every RNG state a training step can draw from."""
    states = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under `DistributedDataParallel` and `torch.compile` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    config: Any, extra: dict | None = None) -> Path:
    """Write model, optimiser, step, RNG states and config atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": rng_states(),
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Restore what `save_checkpoint` wrote (RNG states included); returns the checkpoint dict.

    `path` is the checkpoint file or the run folder that holds `checkpoint.pt`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_states(state["rng"])
    return state


# ## Progress, logs and plots


class Progress:
    """A tqdm bar over the training steps that shows the loss and tokens (or samples) per second."""

    def __init__(self, total: int, *, initial: int = 0, enabled: bool = True, unit: str = "tok"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, unit="step",
                        mininterval=1.0)
        self.unit = unit
        self.start = time.perf_counter()
        self.items = 0

    def update(self, *, loss: float, items: int, **more: float) -> float:
        """Advance one step; `items` is the tokens (or samples) the step processed, over all processes."""
        self.items += items
        rate = self.items / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(loss=f"{loss:.3f}", **{f"{self.unit}/s": f"{rate:,.0f}"},
                             **{k: f"{v:.3f}" for k, v in more.items()})
        self.bar.update(1)
        return rate

    def close(self) -> None:
        self.bar.close()


class RunLog:
    """Metrics to `metrics.csv` and `metrics.jsonl`, a summary to `summary.json`, curves to `loss.png`."""

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, append: bool = False):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.jsonl = self.out_dir / "metrics.jsonl"
        if enabled and append and self.jsonl.exists():
            self.rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line]
        elif enabled and self.jsonl.exists():
            self.jsonl.unlink()

    def log(self, step: int, **metrics: float) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def write_csv(self) -> Path:
        keys = sorted({k for row in self.rows for k in row}, key=lambda k: (k != "step", k))
        path = self.out_dir / "metrics.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def summary(self, **values: Any) -> Path:
        path = self.out_dir / "summary.json"
        if self.enabled:
            path.write_text(json.dumps(values, indent=2, default=str) + "\n")
        return path

    def plot(self, keys: tuple[str, ...] = ("train_loss", "val_loss"), *, title: str = "", ylabel: str = "loss",
             filename: str = "loss.png") -> Path | None:
        """Plot the logged curves against the step (matplotlib, Agg backend: no display needed)."""
        if not self.enabled:
            return None
        self.write_csv()
        return plot_curves({k: [(r["step"], r[k]) for r in self.rows if k in r] for k in keys},
                           self.out_dir / filename, title=title, ylabel=ylabel)


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: str | Path, *, title: str = "",
                ylabel: str = "loss", xlabel: str = "step") -> Path:
    """One line per named curve of `(x, y)` points, saved as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=name, marker="o" if len(points) < 12 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batches(n: int, size: int) -> Iterator[slice]:
    """Slices `[0, size), [size, 2 size), ...` covering `range(n)`."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# ## The claim's verdict
#
# Every experiment tests one claim of its paper and writes the outcome into `summary.json` under
# `verdict`, so that the results page and the tests read the same record.


def claim_verdict(claim: str, holds: bool | None, evidence: str, *, undecided: str = "not tested") -> dict[str, Any]:
    """`{"claim", "holds", "verdict", "evidence"}`: `holds` is None when this run cannot decide, and the
    verdict is then `undecided`: "not tested" (e.g. a mode was left out) or "not shown" (the runs were
    made but the difference is within the noise); `evidence` gives the numbers the decision rests on."""
    if undecided not in ("not tested", "not shown"):
        raise ValueError(f"undecided must be 'not tested' or 'not shown', got {undecided!r}")
    verdict = undecided if holds is None else ("holds" if holds else "does not hold")
    return {"claim": claim, "holds": holds, "verdict": verdict, "evidence": evidence}
