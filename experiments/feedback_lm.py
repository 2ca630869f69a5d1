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

This script trains both on the same character data, with a similar number of parameters (both
counts are printed; both use GLU feed-forwards, as feedback-transformer-pytorch does), the same segment length, the same memory length and
the same number of steps, and reports validation bits per character and wall-clock time.

```
python experiments/feedback_lm.py
```
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    Progress,
    RunConfig,
    RunLog,
    autocast,
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
    batch_size: int = 16
    steps: int = 600
    lr: float = 2e-3
    warmup: int = 50
    eval_every: int = 100
    eval_segments: int = 16

    # A short comparison: it does not resume (`--resume` is a usage error).
    RESUME_FILES = ()
    SMOKE = dict(dim=32, depth=1, xl_depth=1, heads=2, dim_head=16, seq_len=8, window=4, mem_len=8, batch_size=4,
                 steps=3, warmup=1, eval_every=3, eval_segments=2, max_bytes=50_000, log_every=1)
    # `--preset gpu`: 4 layers 256 wide, segments of 128 with a memory of 256, more steps.
    GPU = dict(dim=256, depth=4, xl_depth=4, heads=8, dim_head=32, seq_len=128, window=16, mem_len=256,
               batch_size=32, steps=3000, warmup=200, lr=1e-3, eval_every=500, eval_segments=32,
               max_bytes=4_000_000)


def build_models(cfg: Config) -> dict:
    feedback = FeedbackTransformer(num_tokens=256, dim=cfg.dim, depth=cfg.depth, seq_len=cfg.window,
                                   mem_len=cfg.mem_len, heads=cfg.heads, dim_head=cfg.dim_head, ff_glu=True)
    xl = TransformerWrapper(num_tokens=256, max_seq_len=cfg.seq_len, max_mem_len=cfg.mem_len,
                            attn_layers=Decoder(dim=cfg.dim, depth=cfg.xl_depth, heads=cfg.heads,
                                                attn_dim_head=cfg.dim_head, rel_pos_bias=True, ff_glu=True))
    return {"feedback": feedback, "transformer_xl": xl}


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


def train(name: str, cfg: Config, data, out: Path) -> dict:
    device = setup_distributed(cfg.device).device
    seed_everything(cfg.seed)
    model = build_models(cfg)[name].to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    train_stream, val_stream = contiguous_streams(data.train, cfg.batch_size), contiguous_streams(data.val, 8)
    log, bar, memory, start = RunLog(out / name), Progress(cfg.steps), None, time.perf_counter()
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
    return {"model": name, "parameters": count_parameters(model), "steps": cfg.steps,
            "val_bpc": evaluate(name, model, val_stream, cfg, device), "train_seconds": seconds, "curve": log.rows}


def main(cfg: Config) -> list[dict]:
    out = out_dir_for(cfg, "feedback_lm")
    if cfg.resume:
        raise ValueError("resume: feedback_lm.py does not resume (it compares two short runs); "
                         "run it again instead")
    for name, model in build_models(cfg).items():
        print(f"{name}: {count_parameters(model):,} parameters")
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    results = [train(name, cfg, data, out) for name in ("feedback", "transformer_xl")]
    plot_curves({r["model"]: [(row["step"], row["val_bpc"]) for row in r["curve"] if "val_bpc" in row]
                 for r in results}, out / "val_bpc.png", ylabel="validation bits per character",
                title=f"segments of {cfg.seq_len}, memory {cfg.mem_len}")
    print("\n| model | parameters | val bpc | train time (s) |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['parameters']:,} | {r['val_bpc']:.3f} | {r['train_seconds']:.0f} |")
    outcome = verdict(results)
    print(f"\n{outcome['verdict']}: {outcome['evidence']}")
    RunLog(out).summary(config=vars(cfg), results=[{k: v for k, v in r.items() if k != "curve"} for r in results],
                        verdict=outcome)
    return results


def verdict(results: list[dict]) -> dict:
    """The Feedback Transformer's val bpc below Transformer-XL's, with parameter counts within 10%."""
    claim = "at equal parameters and small depth, the Feedback Transformer beats Transformer-XL"
    runs = {r["model"]: r for r in results}
    fb, xl = runs["feedback"], runs["transformer_xl"]
    ratio = fb["parameters"] / xl["parameters"]
    holds = fb["val_bpc"] < xl["val_bpc"] and 0.9 <= ratio <= 1.1
    return claim_verdict(claim, holds, f"feedback {fb['val_bpc']:.3f} bpc ({fb['parameters']:,} parameters) vs "
                         f"Transformer-XL {xl['val_bpc']:.3f} ({xl['parameters']:,}); parameter ratio {ratio:.2f}")


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
