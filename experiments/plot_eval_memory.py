r"""
# Plot: validation bpc against the memory length at evaluation

Draws `docs/results/transformer_xl_eval_memory.png` from the `summary.json` of
[`transformer_xl_lm.py`](transformer_xl_lm.md) runs made with `--modes memory` and several
`--eval-mem-lens`: one line per run, a star at the memory the model was trained with.

```
python experiments/plot_eval_memory.py RUN_DIR [RUN_DIR ...] --out docs/results/transformer_xl_eval_memory.png
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run_dir: Path) -> tuple[str, int, list[tuple[int, float]]]:
    """The label, the training memory and the `(memory, bpc)` points (memory 0 left out) of one run."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no summary.json (expected a transformer_xl_lm.py run folder)")
    summary = json.loads(path.read_text())
    config = summary["config"]
    by_mem = summary["results"][0].get("val_bpc_by_eval_mem_len")
    if not by_mem:
        raise SystemExit(f"{run_dir}: the run has no val_bpc_by_eval_mem_len (run it with --modes memory)")
    points = sorted((int(m), float(v)) for m, v in by_mem.items() if int(m) > 0)
    points.append((config["mem_len"], summary["results"][0]["val_bpc"]))
    return f"{config['pos']}, trained with memory {config['mem_len']}", config["mem_len"], sorted(set(points))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Plot validation bpc against the memory length at evaluation.")
    p.add_argument("runs", nargs="+", type=Path, help="transformer_xl_lm.py run folders (--modes memory)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for run_dir in args.runs:
        label, trained, points = curve(run_dir)
        xs, ys = zip(*points, strict=True)
        line, = ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.plot([trained], [dict(points)[trained]], marker="*", markersize=11, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("memory length at evaluation (star: the training memory)")
    ax.set_ylabel("validation bits per character")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
