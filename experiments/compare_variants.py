r"""
# Comparing techniques on the character language model

*Paper:* [Do Transformer Modifications Transfer Across Implementations and Applications?](https://arxiv.org/abs/2102.11972) (Narang et al., 2021)

Most transformer "improvements" are reported against a baseline tuned by someone else, on a
budget chosen by someone else. Narang et al. re-implemented dozens of them in one code base and
found that most did not transfer. This runner does the small-scale version of that: it trains
several `char_lm.py` variants with **the same data, the same number of steps, the same batches
(batches depend only on the seed and the step), the same learning-rate schedule and the same
seeds**, and writes a Markdown table and a plot of validation bits per character.

At this scale (a few hundred steps, well under a million parameters) the differences are small
and the noise between seeds is of the same order, so every variant runs with three seeds by
default and the table shows the mean and the standard deviation over them. `rotary+glu_eq` is
the GLU feed-forward cut to the parameter count of the plain one (`ff_mult=8/3`); `rotary+glu`
keeps `ff_mult=4` and has more parameters.

The claim tested, from the x-transformers README and the papers it cites: GLU variants, token
shift, ReLU² and relative positions each improve on their baseline (`rotary` for the first three,
learned `absolute` positions for the last). `summary.json` holds the verdict of each comparison.

```
python experiments/compare_variants.py
python experiments/compare_variants.py --variants absolute,rotary,alibi,t5 --steps 600 --seeds 0,1
```
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import char_lm  # noqa: E402
from experiments.common import RunLog, claim_verdict, out_dir_for, plot_curves, run_experiment  # noqa: E402


@dataclass
class Config(char_lm.Config):
    variants: str = field(default="absolute,rotary,alibi,t5,rotary+glu,rotary+glu_eq,rotary+relu2,rotary+scale,"
                                  "rotary+rms,rotary+shift", metadata={"help": "comma-separated char_lm variants"})
    seeds: str = field(default="0,1,2", metadata={"help": "comma-separated seeds; the table shows mean ± std"})
    steps: int = 250
    depth: int = 2
    seq_len: int = 64
    batch_size: int = 16
    sample_len: int = 0

    # A short comparison: it does not resume (`--resume` is a usage error).
    RESUME_FILES = ()

    def check(self) -> None:
        for variant in self.variants.split(","):
            char_lm.variant_kwargs(variant)
        if not all(s.strip().isdigit() for s in self.seeds.split(",")):
            raise ValueError(f"argument --seeds: expected comma-separated integers >= 0, got {self.seeds!r}")
    SMOKE = dict(char_lm.Config.SMOKE, variants="absolute,rotary,rotary+glu", seeds="0,1", steps=3, sample_len=0)
    # `--preset gpu`: a 6-layer, 384-wide model, ten times the steps, on longer windows.
    GPU = dict(dim=384, depth=6, heads=6, seq_len=256, batch_size=64, steps=2500, warmup=200, lr=1e-3,
               eval_every=250)


def main(cfg: Config) -> list[dict]:
    out = out_dir_for(cfg, "compare_variants")
    rows, curves = [], {}
    for variant in cfg.variants.split(","):
        runs = []
        for seed in (int(s) for s in cfg.seeds.split(",")):
            # Every field of char_lm's config carries over; only the variant, seed and folder change.
            run_cfg = char_lm.Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(char_lm.Config)})
            run_cfg = dataclasses.replace(run_cfg, variant=variant, seed=seed,
                                          out_dir=str(out / variant.replace("+", "_") / f"seed{seed}"))
            start = time.perf_counter()
            result = char_lm.train(run_cfg)
            result["seconds"] = time.perf_counter() - start
            runs.append(result)
            rows_logged = RunLog(run_cfg.out_dir, append=True).rows
            curves.setdefault(variant, [(r["step"], r["val_bpc"]) for r in rows_logged if "val_bpc" in r])
        bpcs = [r["val_bpc"] for r in runs]
        rows.append({"variant": variant, "parameters": runs[0]["parameters"], "val_bpc": statistics.mean(bpcs),
                     "std": statistics.stdev(bpcs) if len(bpcs) > 1 else 0.0, "per_seed": bpcs,
                     "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in runs),
                     "seconds": statistics.mean(r["seconds"] for r in runs)})
    rows.sort(key=lambda r: r["val_bpc"])
    seeds = len(cfg.seeds.split(","))
    lines = [f"| variant | parameters | val bpc{f' (mean ± std, {seeds} seeds)' if seeds > 1 else ''} | tokens/s | seconds |",
             "|---|---|---|---|---|"]
    for r in rows:
        spread = f" ± {r['std']:.3f}" if seeds > 1 else ""
        lines.append(f"| `{r['variant']}` | {r['parameters']:,} | {r['val_bpc']:.3f}{spread} | "
                     f"{r['tokens_per_s']:,.0f} | {r['seconds']:.0f} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    plot_curves(curves, out / "val_bpc.png", ylabel="validation bits per character",
                title=f"{cfg.steps} steps, dim {cfg.dim}, depth {cfg.depth}, seed {cfg.seeds}")
    outcome = verdict(rows)
    print("\n" + table + f"\n\n{outcome['verdict']}: {outcome['evidence']}")
    RunLog(out).summary(config=vars(cfg), results=rows, verdict=outcome)
    return rows


# Each technique and the baseline it claims to improve on.
CLAIMS = {"rotary+glu": "rotary", "rotary+glu_eq": "rotary", "rotary+shift": "rotary", "rotary+relu2": "rotary",
          "rotary": "absolute", "alibi": "absolute", "t5": "absolute"}


def verdict(rows: list[dict]) -> dict:
    """Holds when every technique run here beats its baseline's mean; each gap is given with the stds."""
    claim = "GLU variants, token shift, ReLU² and relative positions improve on the baseline"
    by_name = {r["variant"]: r for r in rows}
    gaps = []
    for variant, base in CLAIMS.items():
        if variant in by_name and base in by_name:
            v, b = by_name[variant], by_name[base]
            gaps.append((variant, base, b["val_bpc"] - v["val_bpc"], math.hypot(v["std"], b["std"])))
    if not gaps:
        return claim_verdict(claim, None, "no technique ran together with its baseline")
    evidence = "; ".join(f"{v} vs {b}: {g:+.3f} bpc (± {s:.3f})" for v, b, g, s in gaps)
    return claim_verdict(claim, all(g > 0 for _, _, g, _ in gaps), evidence + " (positive: the technique is better)")


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
