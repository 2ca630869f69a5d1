r"""
# Benchmark: memory of a training step against depth, plain and reversible

How much memory does one training step (forward and backward) of a decoder stack take as it gets
deeper, with and without [reversible layers](../../labml_style_nn/residual/reversible.py)?  A plain
stack keeps the activations of every layer for the backward pass, so its peak grows linearly with
depth $N$; a reversible stack recomputes them one layer at a time, so its peak should stay flat.

Each point (variant, depth) runs in a **fresh subprocess**, so that no point inherits the
allocator state or the freed memory of another.  The process builds
`Decoder(dim, depth, heads, rotary_pos_emb=True)`, runs one training step (so that the gradients
exist and the kernels for these sizes are loaded), then measures a second, identical step:

* on the CPU, the peak resident set size during the step minus the resident size just before it.
  Linux resets the peak (`VmHWM`) to the current size when `5` is written to
  `/proc/self/clear_refs`, so the peak is that of the step alone; glibc is told to serve every
  allocation above 64 KiB by `mmap` (`MALLOC_MMAP_THRESHOLD_`), so that a freed tensor is returned
  to the system at once and the resident size follows the live tensors;
* on CUDA, `torch.cuda.max_memory_allocated()` minus `torch.cuda.memory_allocated()` before the step.

What is measured is thus the memory of a step above what the parameters and their gradients hold:
the activations kept for the backward pass, and the transient buffers of forward and backward.

The speed cost is the median time of a few further steps at each point; `--speed-depth N` measures
it on its own, with the plain and the reversible stack taking turns in one process so that a
shared machine's drift hits both alike.  A reversible step runs each layer's forward twice (once
forward, once to rebuild its graph in the backward pass), about $4/3$ of the work of a plain step.

```bash
python experiments/benchmarks/reversible_memory.py              # CPU, depths 2..32, a few minutes
python experiments/benchmarks/reversible_memory.py --quick      # a smoke run
python experiments/benchmarks/reversible_memory.py --device cuda --batch 16 --seq-len 1024
python experiments/benchmarks/reversible_memory.py --speed-depth 8   # the speed cost alone, interleaved
```

The plot goes to `docs/results/reversible_memory.png` (`--plot` to change it), the figures to
stdout as a Markdown table.  Timings on a shared machine are noisy; the memory figures are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from labml_style_nn import Decoder

ROOT = Path(__file__).resolve().parents[2]


def _status_mib(field: str) -> float:
    """A memory figure of this process from `/proc/self/status` (`VmRSS` now, `VmHWM` its peak), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident size to its current one (Linux >= 4.0); `False` if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#
# ## One point, in its own process
def measure_point(*, reversible: bool, depth: int, dim: int, heads: int, batch: int, seq_len: int,
                  device: str, time_steps: int) -> dict:
    """Peak memory (MiB) of one training step above what the model and its gradients hold, and step time."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = Decoder(dim=dim, depth=depth, heads=heads, rotary_pos_emb=True, reversible=reversible).to(dev)

    def step(x):
        loss = model(x).square().mean()
        loss.backward()

    # A first step: the gradients are allocated, the kernels for these sizes loaded.
    x = torch.randn(batch, seq_len, dim, device=dev)
    step(x)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step(x)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
    else:
        # The peak is reset to the resident size now, so it measures this step alone.
        if not _reset_peak_rss():
            raise RuntimeError("measuring CPU memory needs Linux's /proc/self/clear_refs to reset the peak")
        before = _status_mib("VmRSS")
        step(x)
        peak = _status_mib("VmHWM") - before
    times = []
    for _ in range(time_steps):
        t0 = time.perf_counter()
        step(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return dict(reversible=reversible, depth=depth, peak_mib=peak,
                step_s=statistics.median(times) if times else None)


def run_point(**kwargs) -> dict:
    """`measure_point` in a fresh Python process (one thread, `mmap` for every allocation above 64 KiB)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--point", json.dumps(kwargs)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#
# ## The speed cost, interleaved
#
# Timings drift on a shared machine, so both runs live in one process and take turns, step for
# step; the cost is the median of the per-round ratios.  "Plain" is here the reversible stack's own
# couplings run with ordinary autograd (`reversible_recompute = False`): the same weights and the
# same function, the work of a plain stack, so the ratio is the price of the custom backward alone.
def speed_ratio(*, depth: int, dim: int, heads: int, batch: int, seq_len: int, device: str, rounds: int) -> dict:
    """Median seconds per training step of each stack, and the median ratio reversible / plain."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = Decoder(dim=dim, depth=depth, heads=heads, rotary_pos_emb=True, reversible=True).to(dev)
    x = torch.randn(batch, seq_len, dim, device=dev)

    def timed(recompute: bool) -> float:
        model.reversible_recompute = recompute
        t0 = time.perf_counter()
        model(x).square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    timed(False), timed(True)  # warm-up
    plain, rev = [], []
    for _ in range(rounds):
        plain.append(timed(False))
        rev.append(timed(True))
    return dict(depth=depth, plain_s=statistics.median(plain), reversible_s=statistics.median(rev),
                ratio=statistics.median(r / p for p, r in zip(plain, rev, strict=True)))


#
# ## All points, the table and the plot
def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 3.8))
    for rev, label in ((False, "plain"), (True, "reversible")):
        pts = sorted((r["depth"], r["peak_mib"], r["step_s"]) for r in results if r["reversible"] == rev)
        ax_mem.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
        if all(p[2] is not None for p in pts):
            ax_time.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
    ax_mem.set(xlabel="depth (layers)", ylabel="peak memory of a step (MiB)", title="memory")
    ax_time.set(xlabel="depth (layers)", ylabel="seconds per step", title="time")
    for ax in (ax_mem, ax_time):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0].lstrip("# "))
    p.add_argument("--depths", default="2,4,8,16,32", help="comma-separated depths")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--time-steps", type=int, default=2, help="timed steps per point (median)")
    p.add_argument("--quick", action="store_true", help="small sizes, depths 2 and 4, no plot")
    p.add_argument("--plot", default=str(ROOT / "docs/results/reversible_memory.png"))
    p.add_argument("--json", default="", help="also write the results here")
    p.add_argument("--speed-depth", type=int, default=0,
                   help="only time plain against reversible at this depth, interleaved (no memory, no plot)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved timing")
    p.add_argument("--point", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.point:
        print(json.dumps(measure_point(**json.loads(a.point))))
        return []
    if a.speed_depth:
        r = speed_ratio(depth=a.speed_depth, dim=a.dim, heads=a.heads, batch=a.batch, seq_len=a.seq_len,
                        device=a.device, rounds=a.rounds)
        print(f"depth {r['depth']}: plain {r['plain_s']:.3f} s/step, reversible {r['reversible_s']:.3f} s/step, "
              f"ratio {r['ratio']:.2f} (median of {a.rounds} interleaved rounds)")
        return [r]
    if a.quick:
        a.depths, a.dim, a.batch, a.seq_len, a.time_steps = "2,4", 64, 2, 64, 1
    depths = [int(d) for d in a.depths.split(",")]
    results = []
    print("| depth | plain (MiB) | reversible (MiB) | plain (s/step) | reversible (s/step) |\n|---|---|---|---|---|")
    for depth in depths:
        row = [run_point(reversible=rev, depth=depth, dim=a.dim, heads=a.heads, batch=a.batch, seq_len=a.seq_len,
                         device=a.device, time_steps=a.time_steps) for rev in (False, True)]
        results += row
        secs = [f"{r['step_s']:.3f}" if r["step_s"] is not None else "-" for r in row]
        print(f"| {depth} | {row[0]['peak_mib']:.1f} | {row[1]['peak_mib']:.1f} | {secs[0]} | {secs[1]} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if not a.quick:
        plot(results, Path(a.plot), f"Decoder(dim={a.dim}, heads={a.heads}, rotary), batch {a.batch} x "
                                    f"{a.seq_len} tokens, {a.device}: one forward + backward")
    return results


if __name__ == "__main__":
    main()
