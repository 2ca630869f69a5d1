r"""
# Mixture of experts against a dense model with the same compute per token

*Paper:* [Switch Transformers](https://arxiv.org/abs/2101.03961) (Fedus et al., 2021); also
[Mixtral](https://arxiv.org/abs/2401.04088) and [DeepSeekMoE](https://arxiv.org/abs/2401.06066)

The Switch paper's claim: at the same computation per token, replacing the feed-forward layers by
a mixture of experts reaches a lower loss, because the model holds several times the parameters
while each token still passes through one feed-forward network's worth.  This experiment tests
that claim at the smallest scale, on characters.  Every variant has the same attention, the same
width and depth, and feed-forward layers whose *active* parameters per token are those of the
dense layer of hidden width $4D$ (the routers add $E \cdot D$ per layer):

| variant | feed-forward layer | active hidden width | total |
|---|---|---|---|
| `dense` | one GELU MLP | $4D$ | $4D$ |
| `switch` | 8 experts of $4D$, top-1, capacity 1.25, balance loss $10^{-2}$, z-loss $10^{-3}$ | $4D$ | $32D$ |
| `mixtral` | 8 experts of $2D$, softmax top-2 renormalised, balance loss $10^{-2}$ | $2 \times 2D$ | $16D$ |
| `deepseek` | 1 shared + 16 routed experts of $D$, sigmoid top-3, bias balancing ($\gamma = 10^{-3}$), no loss | $D + 3D$ | $17D$ |

The runs share the data, the batches (a function of seed and step), the schedule and the random seeds;
the table reports validation bits per character as mean ± std over seeds.  The balance of the
experts is logged over training as the load of the busiest expert over the mean load
(`max_load`: 1 is perfectly even, $E$ is one expert taking every token, averaged over layers),
with the fraction of assignments dropped at capacity.  At the end the first seed of each mixture
routes a line of validation text, and the table of which expert each character went to (first
choice, per layer) is written to `routing.md`.

```
python experiments/moe_lm.py --data tinyshakespeare
python experiments/moe_lm.py --variants dense,switch --seeds 0 --steps 100
python experiments/moe_lm.py --preset gpu --data tinyshakespeare
torchrun --nproc_per_node=2 experiments/moe_lm.py --device cpu
```

Under `torchrun` every process holds every expert and trains on its share of the batch
(data-parallel, like the other experiments); placing experts on different devices is explained on
the [experts page](../labml_style_nn/moe/experts.md).  The bias of the `deepseek` variant is
updated from the loads summed over the processes, so it stays the same everywhere (a test checks
that two processes take the same steps as one); the `switch` capacity counts each process's own
tokens, as each device's buffers do on accelerators, so its dropped tokens differ with the number
of processes.
"""

from __future__ import annotations

import dataclasses
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
    all_reduce_mean,
    batch_generator,
    claim_verdict,
    cleanup_distributed,
    count_parameters,
    lr_at,
    out_dir_for,
    plot_curves,
    run_experiment,
    seed_everything,
    setup_distributed,
    shard,
    wrap_ddp,
)
from experiments.data import TextData, load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402
from labml_style_nn.moe import MixtureOfExperts, moe_aux_loss  # noqa: E402

# The feed-forward keywords of each variant, for a model of width D (hidden widths as multiples of D).
VARIANTS: dict[str, dict] = {
    "dense": dict(ff_mult=4),
    "switch": dict(ff_num_experts=8, ff_top_k=1, ff_mult=4, ff_capacity_factor=1.25, ff_balance_loss=0.01,
                   ff_router_z_loss=1e-3),
    "mixtral": dict(ff_num_experts=8, ff_top_k=2, ff_mult=2, ff_balance_loss=0.01),
    "deepseek": dict(ff_num_experts=16, ff_top_k=3, ff_mult=1, ff_num_shared_experts=1, ff_router="sigmoid",
                     ff_bias_update_rate=1e-3, ff_balance_loss=0.0),
}


@dataclass
class Config(RunConfig):
    variants: str = field(default="dense,switch,mixtral,deepseek", metadata={"help": "comma-separated variants"})
    seeds: str = field(default="0,1,2", metadata={"help": "comma-separated seeds; the table shows mean ± std"})
    data: str = field(default="stdlib", metadata={"help": "stdlib | tinyshakespeare | enwik8 | path to a text file"})
    cache_dir: str = field(default="", metadata={"help": "download cache (default ~/.cache/labml_style_nn)"})
    max_bytes: int = field(default=4_000_000, metadata={"help": "cap on the stdlib corpus"})
    dim: int = 96
    depth: int = 2
    heads: int = 4
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 500
    lr: float = 2e-3
    warmup: int = 30
    eval_every: int = 100
    eval_batches: int = 8

    # A comparison of short runs: it does not resume.
    RESUME_FILES = ()

    def check(self) -> None:
        for v in self.variants.split(","):
            if v not in VARIANTS:
                raise ValueError(f"argument --variants: unknown {v!r}; expected some of {', '.join(VARIANTS)}")
        if not all(s.strip().isdigit() for s in self.seeds.split(",")):
            raise ValueError(f"argument --seeds: expected comma-separated integers >= 0, got {self.seeds!r}")

    SMOKE = dict(dim=32, depth=1, heads=2, seq_len=32, batch_size=8, steps=4, warmup=1, eval_every=2,
                 eval_batches=2, max_bytes=200_000, seeds="0", log_every=2, variants="dense,switch,deepseek")
    # `--preset gpu`: 6 layers of width 384 on 256-byte windows, ten times the steps.
    GPU = dict(dim=384, depth=6, heads=6, seq_len=256, batch_size=64, steps=5000, warmup=200, lr=1e-3,
               eval_every=250)


def build_model(cfg: Config, variant: str, vocab_size: int) -> TransformerWrapper:
    return TransformerWrapper(num_tokens=vocab_size, max_seq_len=cfg.seq_len,
                              attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, rotary_pos_emb=True,
                                                  **VARIANTS[variant]))


def max_load(model) -> float:
    """The busiest expert's share over the mean share, averaged over the layers (1: even)."""
    loads = [m.load.float() for m in model.modules() if isinstance(m, MixtureOfExperts) and m.load is not None]
    return statistics.mean((load.max() / load.mean()).item() for load in loads) if loads else 1.0


@torch.no_grad()
def evaluate(model, data: torch.Tensor, cfg: Config) -> float:
    """Mean validation loss (nats) over the same fixed windows every time."""
    model.eval()
    x = sample_windows(data, cfg.eval_batches * cfg.batch_size, cfg.seq_len + 1, batch_generator(cfg.seed, -1))
    losses = [F.cross_entropy(model(c[:, :-1]).transpose(1, 2), c[:, 1:]) for c in x.split(cfg.batch_size)]
    model.train()
    return torch.stack(losses).mean().item()


def train(cfg: Config, variant: str, out: Path) -> dict:
    dist = setup_distributed(cfg.device)
    seed_everything(cfg.seed)
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    model = build_model(cfg, variant, data.vocab_size).to(dist.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    net = wrap_ddp(model, dist)
    log = RunLog(out, enabled=dist.is_main)
    bar = Progress(cfg.steps, enabled=dist.is_main)
    dropped = assignments = 0
    for step in range(1, cfg.steps + 1):
        x = sample_windows(data.train, cfg.batch_size, cfg.seq_len + 1, batch_generator(cfg.seed, step - 1))
        x = shard(x, dist).to(dist.device)  # (b / processes, n + 1)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step - 1, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        logits = net(x[:, :-1])  # (b, n, vocab)
        ce = F.cross_entropy(logits.transpose(1, 2), x[:, 1:])
        # $\mathcal{L} = \mathcal{L}_{\text{CE}} + \sum_{\text{layers}} (\alpha \mathcal{L}_{\text{balance}} + \beta \mathcal{L}_z)$
        aux = moe_aux_loss(model)
        loss = ce if aux is None else ce + aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        #
        moes = [m for m in model.modules() if isinstance(m, MixtureOfExperts)]
        dropped += sum(m.dropped for m in moes)
        assignments += sum(int(m.load.sum()) for m in moes)
        train_loss = all_reduce_mean(ce, dist).item()
        bar.update(loss=train_loss, items=cfg.batch_size * cfg.seq_len)
        if step % cfg.log_every == 0:
            log.log(step, train_loss=train_loss, max_load=max_load(model),
                    dropped=dropped / max(1, assignments))
            dropped = assignments = 0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = evaluate(model, data.val, cfg)
            log.log(step, val_loss=val, val_bpc=val / math.log(2))
    bar.close()
    if dist.is_main:
        log.write_csv()
    val = evaluate(model, data.val, cfg)
    result = {"variant": variant, "seed": cfg.seed, "parameters": count_parameters(model), "val_bpc": val / math.log(2),
              "tokens_per_s": bar.items / max(1e-9, bar.bar.format_dict["elapsed"])}
    if dist.is_main and cfg.seed == int(cfg.seeds.split(",")[0]) and variant != "dense":
        result["routing"] = routing_table(model, data.val[:cfg.seq_len].long())
    log.summary(**result)
    cleanup_distributed(dist)
    return result


#
# ## Which experts fire on real characters
@torch.no_grad()
def routing_table(model, text: torch.Tensor) -> str:
    """A Markdown block: the text, then per layer the first-choice expert of each character (0-9, a-z)."""
    model.eval()
    chosen: list[torch.Tensor] = []
    hooks = [m.router.register_forward_hook(lambda mod, inp, r: chosen.append(r.experts[:, 0]))
             for m in model.modules() if isinstance(m, MixtureOfExperts)]
    model(text[None])
    for h in hooks:
        h.remove()
    model.train()
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    shown = TextData.decode(text).replace("\n", "⏎")
    lines = [f"text    {shown}"] + [f"layer {i} " + "".join(digits[e] for e in c.tolist()) for i, c in enumerate(chosen)]
    return "```\n" + "\n".join(lines) + "\n```"


def main(cfg: Config) -> list[dict]:
    out = out_dir_for(cfg, "moe_lm")
    rows, curves, balance, routing = [], {}, {}, []
    for variant in cfg.variants.split(","):
        runs = []
        for seed in (int(s) for s in cfg.seeds.split(",")):
            start = time.perf_counter()
            run_dir = out / variant / f"seed{seed}"
            result = train(dataclasses.replace(cfg, seed=seed), variant, run_dir)
            result["seconds"] = time.perf_counter() - start
            runs.append(result)
            logged = RunLog(run_dir, append=True).rows
            curves.setdefault(variant, [(r["step"], r["val_bpc"]) for r in logged if "val_bpc" in r])
            if variant != "dense":
                balance.setdefault(variant, [(r["step"], r["max_load"]) for r in logged if "max_load" in r])
            if "routing" in result:
                routing.append(f"**{variant}**\n\n{result['routing']}\n")
        bpcs = [r["val_bpc"] for r in runs]
        rows.append({"variant": variant, "parameters": runs[0]["parameters"], "val_bpc": statistics.mean(bpcs),
                     "std": statistics.stdev(bpcs) if len(bpcs) > 1 else 0.0, "per_seed": bpcs,
                     "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in runs),
                     "seconds": statistics.mean(r["seconds"] for r in runs)})
    seeds = len(cfg.seeds.split(","))
    lines = [f"| variant | parameters | val bpc (mean ± std, {seeds} seeds) | tokens/s | seconds |", "|---|---|---|---|---|"]
    lines += [f"| `{r['variant']}` | {r['parameters']:,} | {r['val_bpc']:.3f} ± {r['std']:.3f} | "
              f"{r['tokens_per_s']:,.0f} | {r['seconds']:.0f} |" for r in rows]
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    (out / "routing.md").write_text("\n".join(routing))
    plot_curves(curves, out / "val_bpc.png", ylabel="validation bits per character",
                title=f"{cfg.steps} steps, dim {cfg.dim}, depth {cfg.depth}")
    if balance:
        plot_curves(balance, out / "max_load.png", ylabel="busiest expert / mean load", title="expert balance")
    outcome = verdict(rows)
    print("\n" + table + f"\n\n{outcome['verdict']}: {outcome['evidence']}\n\n" + "\n".join(routing))
    RunLog(out).summary(config=vars(cfg), results=rows, verdict=outcome)
    return rows


def verdict(rows: list[dict]) -> dict:
    """Holds when every mixture beats the dense model's mean by more than the combined std."""
    claim = "at the same active parameters per token, a mixture of experts reaches a lower loss than a dense model"
    by_name = {r["variant"]: r for r in rows}
    if "dense" not in by_name or len(by_name) < 2:
        return claim_verdict(claim, None, "no mixture ran together with the dense model")
    d = by_name["dense"]
    gaps = [(v, d["val_bpc"] - r["val_bpc"], math.hypot(r["std"], d["std"])) for v, r in by_name.items() if v != "dense"]
    evidence = "; ".join(f"{v} vs dense: {g:+.3f} bpc (± {s:.3f})" for v, g, s in gaps)
    return claim_verdict(claim, all(g > s for _, g, s in gaps), evidence + " (positive: the mixture is better)")


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
