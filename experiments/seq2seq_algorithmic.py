r"""
# Encoder-decoder on algorithmic tasks: copy, reverse, sort

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

The original transformer is an encoder-decoder: the encoder reads the source, and every decoder
layer cross-attends to the encoder's output while generating the target one token at a time.
Three toy tasks show what each part has to learn:

* **copy**: $y = x$. Each output position attends to the same input position.
* **reverse**: $y_i = x_{n+1-i}$. The decoder must know where it is and where the end is.
* **sort**: $y = \operatorname{sort}(x)$. The decoder must count how many of each symbol remain,
  which no single attention head does by position alone.

We train `XTransformer` on random sequences and report **exact-match accuracy** (the whole output
right) on fresh sequences, decoded greedily with `XTransformer.generate` (`temperature=0.`). A
task is "solved" well above chance: with 10 symbols and length 8, guessing gets $10^{-8}$.

```
python experiments/seq2seq_algorithmic.py
python experiments/seq2seq_algorithmic.py --tasks sort --length 12 --steps 1500
```
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin: see experiments/common.py

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    Progress,
    RunConfig,
    RunLog,
    autocast,
    batch_generator,
    check_choices,
    claim_verdict,
    count_parameters,
    lr_at,
    maybe_compile,
    out_dir_for,
    plot_curves,
    run_experiment,
    seed_everything,
    setup_distributed,
)
from labml_style_nn import XTransformer  # noqa: E402

# Token 0 is the decoder's start token; symbols are 1..num_symbols.
BOS = 0


@dataclass
class Config(RunConfig):
    tasks: str = field(default="copy,reverse,sort", metadata={"help": "comma-separated: copy, reverse, sort"})
    num_symbols: int = 10
    length: int = 8
    dim: int = 64
    depth: int = 2
    heads: int = 4
    batch_size: int = 32
    steps: int = 300
    lr: float = 3e-3
    warmup: int = 40
    eval_every: int = 100
    eval_size: int = 256

    # A short comparison: it does not resume (`--resume` is a usage error).
    RESUME_FILES = ()

    def check(self) -> None:
        check_choices("tasks", self.tasks, ("copy", "reverse", "sort"))
    SMOKE = dict(dim=32, depth=1, heads=2, batch_size=8, steps=4, warmup=1, eval_every=2, eval_size=8, length=4,
                 log_every=2)
    # `--preset gpu`: longer sequences of more symbols, a 4 + 4-layer model 256 wide.
    GPU = dict(num_symbols=32, length=32, dim=256, depth=4, heads=8, batch_size=256, steps=3000, warmup=200, lr=1e-3,
               eval_every=500, eval_size=1024)


def make_batch(task: str, cfg: Config, generator: torch.Generator):
    """Random source sequences and their targets, with the start token prepended to the target."""
    src = torch.randint(1, cfg.num_symbols + 1, (cfg.batch_size, cfg.length), generator=generator)  # (b, n)
    tgt = {"copy": src, "reverse": src.flip(1), "sort": src.sort(dim=1).values}[task]
    return src, torch.cat([torch.full_like(tgt[:, :1], BOS), tgt], dim=1)  # (b, n), (b, n + 1)


def build_model(cfg: Config) -> XTransformer:
    tokens = cfg.num_symbols + 1
    return XTransformer(dim=cfg.dim, tie_token_emb=True,
                        enc_num_tokens=tokens, enc_depth=cfg.depth, enc_heads=cfg.heads, enc_max_seq_len=cfg.length,
                        dec_num_tokens=tokens, dec_depth=cfg.depth, dec_heads=cfg.heads,
                        dec_max_seq_len=cfg.length + 1)


@torch.no_grad()
def exact_match(model, task: str, cfg: Config, device) -> float:
    """The fraction of fresh sequences whose greedy decoding is entirely right."""
    model.eval()
    g = batch_generator(cfg.seed + 1, -1)  # held out: a different stream from training's
    correct = 0
    for _ in range(max(1, cfg.eval_size // cfg.batch_size)):
        src, tgt = make_batch(task, cfg, g)
        start = tgt[:, :1].to(device)
        out = model.generate(src.to(device), start, cfg.length, temperature=0.0)  # (b, n)
        correct += (out[:, -cfg.length:].cpu() == tgt[:, 1:]).all(dim=1).sum().item()
    model.train()
    return correct / (max(1, cfg.eval_size // cfg.batch_size) * cfg.batch_size)


def train(task: str, cfg: Config, out: Path) -> dict:
    device = setup_distributed(cfg.device).device
    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    net = maybe_compile(model, cfg.compile)
    log, bar = RunLog(out / task), Progress(cfg.steps, unit="seq")
    for step in range(cfg.steps):
        src, tgt = make_batch(task, cfg, batch_generator(cfg.seed, step))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        # The model returns the decoder's next-token cross-entropy on `tgt` (teacher forcing).
        with autocast(device):
            loss = net(src.to(device), tgt.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.update(loss=loss.item(), items=cfg.batch_size)
        if (step + 1) % cfg.log_every == 0:
            log.log(step + 1, train_loss=loss.item())
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            log.log(step + 1, exact_match=exact_match(model, task, cfg, device))
    bar.close()
    log.write_csv()
    final = [row["exact_match"] for row in log.rows if "exact_match" in row][-1]
    return {"task": task, "parameters": count_parameters(model), "steps": cfg.steps, "exact_match": final,
            "curve": log.rows}


def main(cfg: Config) -> list[dict]:
    out = out_dir_for(cfg, "seq2seq_algorithmic")
    if cfg.resume:
        raise ValueError("resume: seq2seq_algorithmic.py does not resume (it trains one short run per task); "
                         "run it again instead")
    results = [train(task, cfg, out) for task in cfg.tasks.split(",")]
    plot_curves({r["task"]: [(row["step"], row["exact_match"]) for row in r["curve"] if "exact_match" in row]
                 for r in results}, out / "exact_match.png", ylabel="exact match (greedy)",
                title=f"XTransformer, length {cfg.length}, {cfg.num_symbols} symbols")
    print("\n| task | parameters | steps | exact match |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['task']} | {r['parameters']:,} | {r['steps']} | {r['exact_match']:.1%} |")
    outcome = claim_verdict("an encoder-decoder learns copy, reverse and sort exactly (at least 95% exact match)",
                            all(r["exact_match"] >= 0.95 for r in results),
                            ", ".join(f"{r['task']} {r['exact_match']:.1%}" for r in results))
    print(f"\nclaim: {outcome['claim']}\n{outcome['verdict']} in this run: {outcome['evidence']}")
    if cfg.steps < Config.steps:
        print(f"(this run trained {cfg.steps} steps of the default {Config.steps}: a --smoke or shortened run checks "
              "that the script works, and is too short to show the claim)")
    RunLog(out).summary(config=vars(cfg), results=[{k: v for k, v in r.items() if k != "curve"} for r in results],
                        verdict=outcome)
    return results


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
