r"""
# Feedback Transformer vs Transformer-XL

*Paper:* [Addressing Some Limitations of Transformers with Feedback Memory](https://arxiv.org/abs/2002.09402) (Fan et al., 2021)

In Transformer-XL, layer $l$ can only read the *past of layer $l - 1$*: a high-level
representation computed for an earlier token never reaches the lower layers of a later one. The
Feedback Transformer merges all layers of each past step into one memory vector,

$$m_t = \sum_{l=0}^{L} \operatorname{softmax}(w)_l \, h^l_t,$$

and every layer of every later step attends to those $m_t$. The top of the network at time $t$
can thus inform the bottom at time $t + 1$: the model becomes recurrent in depth, which helps on
tasks that need to track state, at the cost of computing the tokens of a segment one window at a
time instead of all at once.

This script trains the Feedback Transformer and two Transformer-XL baselines on the same
character data, with the same segment length, memory length and number of steps, over several
seeds: `xl_relative`, the paper's relative attention (labml.ai's `transformer_xl/`, the best
Transformer-XL of the [results](../docs/results.md#transformer-xl-recurrence)), with a GELU
feed-forward of width $5D$ so that its parameter count matches the feedback model's within 0.1%,
and `xl_t5`, the library's `Decoder` with the T5 bias and GLU feed-forwards (the baseline of
earlier versions of this comparison, which that page shows is hurt by memory at this budget). It
reports validation bits per character as mean ± std over the random seeds, and then, in the same process,
the time per training step of each model as a ratio: the models take turns, a block of steps
each, so that a change in the machine's load falls on both.

```
python experiments/feedback_lm.py
python experiments/feedback_lm.py --seeds 0 --baselines xl_relative
```
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin: see experiments/common.py

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    Progress,
    RunConfig,
    RunLog,
    autocast,
    check_choices,
    claim_verdict,
    count_parameters,
    lr_at,
    out_dir_for,
    plot_curves,
    run_experiment,
    seed_everything,
    setup_distributed,
)
from experiments.data import contiguous_streams, load_text  # noqa: E402
from experiments.transformer_xl_lm import RelativeXLLM  # noqa: E402
from labml_style_nn import Decoder, FeedbackTransformer, TransformerWrapper  # noqa: E402


@dataclass
class Config(RunConfig):
    data: str = field(default="stdlib", metadata={"help": "stdlib | tinyshakespeare | enwik8 | path"})
    cache_dir: str = ""
    max_bytes: int = 2_000_000
    dim: int = 96
    depth: int = 2
    heads: int = 4
    dim_head: int = 24
    seq_len: int = field(default=32, metadata={"help": "segment length n"})
    window: int = field(default=8, metadata={"help": "feedback: tokens computed in parallel per memory update"})
    mem_len: int = field(default=64, metadata={"help": "memory length m (both models)"})
    xl_depth: int = field(default=2, metadata={"help": "Transformer-XL depth (tune for a similar parameter count)"})
    xl_ff: int = field(default=480, metadata={
        "help": "hidden width of the xl_relative feed-forward (5 x 96, the default, matches the feedback model's "
                "parameter count)"})
    baselines: str = field(default="xl_relative,xl_t5", metadata={
        "help": "the Transformer-XL baselines: xl_relative (the paper's attention) | xl_t5 (the T5 bias)"})
    seeds: str = field(default="0,1,2", metadata={"help": "comma-separated seeds; the table shows mean ± std"})
    batch_size: int = 16
    steps: int = 600
    lr: float = 2e-3
    warmup: int = 50
    eval_every: int = 100
    eval_segments: int = 16
    timing_steps: int = field(default=20, metadata={"help": "training steps per model in each block of the timing"})
    timing_rounds: int = field(default=5, metadata={"help": "blocks per model in the timing (0 = no timing)"})

    def check(self) -> None:
        check_choices("baselines", self.baselines, ("xl_relative", "xl_t5"))
        if self.seed != 0:
            raise ValueError(f"argument --seed: this script runs every seed of --seeds; use --seeds {self.seed}")
        if not all(s.strip().isdigit() for s in self.seeds.split(",")):
            raise ValueError(f"argument --seeds: expected comma-separated integers >= 0, got {self.seeds!r}")

    # A short comparison: it does not resume (`--resume` is a usage error).
    RESUME_FILES = ()
    SMOKE = dict(dim=32, depth=1, xl_depth=1, heads=2, dim_head=16, seq_len=8, window=4, mem_len=8, batch_size=4,
                 steps=3, warmup=1, eval_every=3, eval_segments=2, max_bytes=50_000, log_every=1, xl_ff=64,
                 seeds="0", timing_steps=1, timing_rounds=2)
    # `--preset gpu`: 4 layers 256 wide, segments of 128 with a memory of 256, more steps.
    GPU = dict(dim=256, depth=4, xl_depth=4, heads=8, dim_head=32, seq_len=128, window=16, mem_len=256, xl_ff=1280,
               batch_size=32, steps=3000, warmup=200, lr=1e-3, eval_every=500, eval_segments=32,
               max_bytes=4_000_000)


def build_models(cfg: Config, only: str | None = None) -> dict:
    """The models compared, by name; `only` builds just that one (so that each is initialised from its seed)."""
    builders = {
        "feedback": lambda: FeedbackTransformer(num_tokens=256, dim=cfg.dim, depth=cfg.depth, seq_len=cfg.window,
                                                mem_len=cfg.mem_len, heads=cfg.heads, dim_head=cfg.dim_head,
                                                ff_glu=True),
        # The paper's relative attention ($D$ = heads x head dim, as in the feedback model)
        "xl_relative": lambda: RelativeXLLM(dim=cfg.dim, depth=cfg.xl_depth, heads=cfg.heads, mem_len=cfg.mem_len,
                                            d_ff=cfg.xl_ff),
        "xl_t5": lambda: TransformerWrapper(num_tokens=256, max_seq_len=cfg.seq_len, max_mem_len=cfg.mem_len,
                                            attn_layers=Decoder(dim=cfg.dim, depth=cfg.xl_depth, heads=cfg.heads,
                                                                attn_dim_head=cfg.dim_head, rel_pos_bias=True,
                                                                ff_glu=True)),
    }
    names = [only] if only else ["feedback", *cfg.baselines.split(",")]
    return {name: builders[name]() for name in names}


def detach(memory):
    """Stop gradients at the segment boundary, for a tensor or a (named) tuple or list of them."""
    if memory is None or isinstance(memory, torch.Tensor):
        return None if memory is None else memory.detach()
    items = [detach(m) for m in memory]
    return type(memory)(*items) if hasattr(memory, "_fields") else type(memory)(items)


def step_model(name: str, model, x: torch.Tensor, memory):
    """One segment: logits for `x[:, :-1]` with the carried memory, and the memory for the next."""
    if name == "feedback":
        logits, memory = model(x[:, :-1], memory=memory, return_memory=True)
    else:
        logits, memory = model(x[:, :-1], mems=memory, return_mems=True)
    return F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:]), detach(memory)


def segment(stream: torch.Tensor, index: int, n: int) -> torch.Tensor:
    count = (stream.shape[1] - 1) // n
    start = (index % count) * n
    return stream[:, start : start + n + 1]  # (b, n + 1)


@torch.no_grad()
def evaluate(name, model, stream, cfg, device) -> float:
    model.eval()
    memory, losses = None, []
    for i in range(cfg.eval_segments):
        with autocast(device):
            loss, memory = step_model(name, model, segment(stream, i, cfg.seq_len).to(device), memory)
        losses.append(loss)
    model.train()
    return torch.stack(losses).mean().item() / math.log(2)


def train(name: str, cfg: Config, data, out: Path, seed: int) -> dict:
    device = setup_distributed(cfg.device).device
    seed_everything(seed)
    model = build_models(cfg, name)[name].to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    train_stream, val_stream = contiguous_streams(data.train, cfg.batch_size), contiguous_streams(data.val, 8)
    log, bar, memory, start = RunLog(out / name / f"seed{seed}"), Progress(cfg.steps), None, time.perf_counter()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        with autocast(device):
            loss, memory = step_model(name, model, segment(train_stream, step, cfg.seq_len).to(device), memory)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.update(loss=loss.item(), items=cfg.batch_size * cfg.seq_len)
        if (step + 1) % cfg.log_every == 0:
            log.log(step + 1, train_bpc=loss.item() / math.log(2))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            log.log(step + 1, val_bpc=evaluate(name, model, val_stream, cfg, device))
    bar.close()
    seconds = time.perf_counter() - start
    log.write_csv()
    return {"model": name, "seed": seed, "parameters": count_parameters(model), "steps": cfg.steps,
            "val_bpc": evaluate(name, model, val_stream, cfg, device), "train_seconds": seconds, "curve": log.rows}


def time_per_step(cfg: Config, data) -> dict:
    """Seconds per training step of each model, measured in one process: the models take turns, one
    block of `timing_steps` steps each per round, and each model's time is its median block.

    Both process CPU time (all threads) and wall-clock time are measured; because the blocks
    alternate, a change in the machine's load during the measurement falls on every model alike."""
    device = setup_distributed(cfg.device).device
    stream = contiguous_streams(data.train, cfg.batch_size)
    runs = {}
    for name, model in build_models(cfg).items():
        model = model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        runs[name] = {"model": model, "optimizer": optimizer, "memory": None, "step": 0, "cpu": [], "wall": []}

    def block(run: dict, name: str, steps: int) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(steps):
            with autocast(device):
                loss, run["memory"] = step_model(name, run["model"], segment(stream, run["step"], cfg.seq_len).to(device),
                                                 run["memory"])
            run["optimizer"].zero_grad(set_to_none=True)
            loss.backward()
            run["optimizer"].step()
            run["step"] += 1
        return (time.process_time() - cpu) / steps, (time.perf_counter() - wall) / steps

    for name, run in runs.items():  # one unmeasured block each: memory filled, allocations made
        block(run, name, cfg.timing_steps)
    for _ in range(cfg.timing_rounds):
        for name, run in runs.items():
            cpu, wall = block(run, name, cfg.timing_steps)
            run["cpu"].append(cpu)
            run["wall"].append(wall)
    return {name: {"cpu_s_per_step": statistics.median(run["cpu"]), "wall_s_per_step": statistics.median(run["wall"])}
            for name, run in runs.items()}


def main(cfg: Config) -> list[dict]:
    out = out_dir_for(cfg, "feedback_lm")
    if cfg.resume:
        raise ValueError("resume: feedback_lm.py does not resume (it compares short runs); "
                         "run it again instead")
    for name, model in build_models(cfg).items():
        print(f"{name}: {count_parameters(model):,} parameters")
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    seeds = [int(s) for s in cfg.seeds.split(",")]
    names = ["feedback", *cfg.baselines.split(",")]
    runs = [train(name, cfg, data, out, seed) for seed in seeds for name in names]
    results = []
    for name in names:
        mine = [r for r in runs if r["model"] == name]
        bpcs = [r["val_bpc"] for r in mine]
        results.append({"model": name, "parameters": mine[0]["parameters"], "val_bpc": statistics.mean(bpcs),
                        "std": statistics.stdev(bpcs) if len(bpcs) > 1 else 0.0, "per_seed": bpcs,
                        "train_seconds": statistics.mean(r["train_seconds"] for r in mine),
                        "curve": mine[0]["curve"]})
    plot_curves({r["model"]: [(row["step"], row["val_bpc"]) for row in r["curve"] if "val_bpc" in row]
                 for r in results}, out / "val_bpc.png", ylabel="validation bits per character",
                title=f"segments of {cfg.seq_len}, memory {cfg.mem_len}, seed {seeds[0]}")
    print(f"\n| model | parameters | val bpc (mean ± std, {len(seeds)} seeds) | per seed | train time (s) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['parameters']:,} | {r['val_bpc']:.3f} ± {r['std']:.3f} | "
              + " / ".join(f"{b:.3f}" for b in r["per_seed"]) + f" | {r['train_seconds']:.0f} |")
    timing = time_per_step(cfg, data) if cfg.timing_rounds else {}
    if timing:
        print(f"\ntime per training step, one process, {torch.get_num_threads()} threads, median of "
              f"{cfg.timing_rounds} alternating blocks of {cfg.timing_steps} steps:")
        for name, t in timing.items():
            print(f"{name}: {1000 * t['cpu_s_per_step']:.1f} ms CPU, {1000 * t['wall_s_per_step']:.1f} ms wall; "
                  f"feedback / {name}: {timing['feedback']['cpu_s_per_step'] / t['cpu_s_per_step']:.2f} (CPU), "
                  f"{timing['feedback']['wall_s_per_step'] / t['wall_s_per_step']:.2f} (wall)")
    outcome = verdict(results)
    print(f"\n{outcome['verdict']}: {outcome['evidence']}")
    RunLog(out).summary(config=vars(cfg), results=[{k: v for k, v in r.items() if k != "curve"} for r in results],
                        runs=[{k: v for k, v in r.items() if k != "curve"} for r in runs], time_per_step=timing,
                        threads=torch.get_num_threads(), verdict=outcome)
    return results


def verdict(results: list[dict]) -> dict:
    """Against the best baseline run here: holds when the feedback model's mean val bpc is lower by more
    than twice the two standard deviations combined, with parameter counts within 10%; does not hold when
    it is higher by that much; otherwise the difference is within the noise and the claim is not shown."""
    claim = "at equal parameters and small depth, the Feedback Transformer beats Transformer-XL"
    runs = {r["model"]: r for r in results}
    fb = runs["feedback"]
    xl = min((r for r in results if r["model"] != "feedback"), key=lambda r: r["val_bpc"])
    ratio = fb["parameters"] / xl["parameters"]
    gap, spread = xl["val_bpc"] - fb["val_bpc"], math.hypot(fb["std"], xl["std"])
    evidence = (f"feedback {fb['val_bpc']:.3f} ± {fb['std']:.3f} bpc ({fb['parameters']:,} parameters) vs the best "
                f"Transformer-XL, {xl['model']}, {xl['val_bpc']:.3f} ± {xl['std']:.3f} ({xl['parameters']:,}), over "
                f"{len(fb['per_seed'])} seeds: {gap:+.3f} bpc (± {spread:.3f}; positive: feedback is better); "
                f"parameter ratio {ratio:.2f}")
    if not 0.9 <= ratio <= 1.1:
        return claim_verdict(claim, None, evidence + "; the parameter counts differ by more than 10%")
    if len(fb["per_seed"]) < 2:
        return claim_verdict(claim, None, evidence + "; one seed cannot tell a difference from noise")
    if abs(gap) <= 2 * spread:
        return claim_verdict(claim, None, evidence + "; the difference is within twice its spread",
                             undecided="not shown")
    return claim_verdict(claim, gap > 0, evidence)


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
