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
and the noise between seeds is of the same order; run with `--seeds 0,1,2` before reading much
into a gap of a few hundredths of a bit.

```
python experiments/compare_variants.py
python experiments/compare_variants.py --variants absolute,rotary,alibi,t5 --steps 600 --seeds 0,1
```
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments import char_lm  # noqa: E402
from experiments.common import RunLog, out_dir_for, parse_config, plot_curves  # noqa: E402


@dataclass
class Config(char_lm.Config):
    variants: str = field(default="absolute,rotary,alibi,t5,rotary+glu,rotary+relu2,rotary+scale,rotary+rms,"
                                  "rotary+shift", metadata={"help": "comma-separated char_lm variants"})
    seeds: str = field(default="0", metadata={"help": "comma-separated seeds; the table shows the mean"})
    steps: int = 250
    depth: int = 2
    seq_len: int = 64
    batch_size: int = 16
    sample_len: int = 0

    SMOKE = dict(char_lm.Config.SMOKE, variants="absolute,rotary+glu", steps=3, sample_len=0)


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
                     "spread": (max(bpcs) - min(bpcs)) / 2, "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in runs),
                     "seconds": statistics.mean(r["seconds"] for r in runs)})
    rows.sort(key=lambda r: r["val_bpc"])
    seeds = len(cfg.seeds.split(","))
    lines = [f"| variant | parameters | val bpc{' (mean ± half-range)' if seeds > 1 else ''} | tokens/s | seconds |",
             "|---|---|---|---|---|"]
    for r in rows:
        spread = f" ± {r['spread']:.3f}" if seeds > 1 else ""
        lines.append(f"| `{r['variant']}` | {r['parameters']:,} | {r['val_bpc']:.3f}{spread} | "
                     f"{r['tokens_per_s']:,.0f} | {r['seconds']:.0f} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    plot_curves(curves, out / "val_bpc.png", ylabel="validation bits per character",
                title=f"{cfg.steps} steps, dim {cfg.dim}, depth {cfg.depth}, seed {cfg.seeds}")
    print("\n" + table)
    RunLog(out).summary(config=vars(cfg), results=rows)
    return rows


if __name__ == "__main__":
    main(parse_config(Config, doc=__doc__))
