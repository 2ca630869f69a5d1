r"""
# ALiBi: train short, test long

*Paper:* [Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation](https://arxiv.org/abs/2108.12409) (Press et al., 2022)

ALiBi adds no position embedding at all. It subtracts from each attention score a penalty that
grows linearly with the distance between query and key, with a fixed slope $m_h$ per head:

$$S_{ij} = \frac{q_i^\top k_j}{\sqrt{d}} - m_h \,(i - j), \qquad m_h = 2^{-8h/H}.$$

The penalty is defined at any distance, but so are rotary angles: what should let ALiBi
extrapolate is that the penalty *grows monotonically* with distance, so keys farther away than
any seen in training get less weight than all of them and a longer window changes little what a
query attends to.  Rotary embeddings also encode relative distance, but as rotations by angles the
model has never seen beyond the training length, with no built-in preference for near keys;
learned absolute positions simply do not exist past `max_seq_len`.

We train three character models on windows of 64 bytes, identical except for positions, and
measure validation bits per character on windows of 64, 128 and 256 bytes (every byte of each
window is scored, as in the paper's non-overlapping evaluation).

The **absolute** model cannot take a window longer than its 64 positions, so its row is "n/a"
there; the row `absolute (sliding)` instead scores the same long windows by sliding a 64-byte
window with stride 32, so every byte still sees at most 64 bytes of context. That is the
baseline a model that cannot extrapolate can do: ALiBi should match or beat it, rotary may fall
below it. The plot shows the loss per position in the 256-byte windows.

```
python experiments/alibi_extrapolation.py
```
"""

from __future__ import annotations

import math
import os
import sys
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
    batch_generator,
    check_choices,
    check_int_list,
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
from experiments.data import load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402

POSITIONS = {"alibi": dict(alibi_pos_emb=True, disable_abs_pos_emb=True), "rotary": dict(rotary_pos_emb=True), "absolute": {}}


@dataclass
class Config(RunConfig):
    data: str = field(default="stdlib", metadata={"help": "stdlib | tinyshakespeare | enwik8 | path"})
    cache_dir: str = ""
    max_bytes: int = 2_000_000
    positions: str = field(default="alibi,rotary,absolute", metadata={"help": "which models to train"})
    train_len: int = 64
    eval_lens: str = "64,128,256"
    dim: int = 128
    depth: int = 2
    heads: int = 4
    batch_size: int = 32
    steps: int = 300
    lr: float = 2e-3
    warmup: int = 30
    eval_windows: int = 32

    # A short comparison: it does not resume (`--resume` is a usage error).
    RESUME_FILES = ()

    def check(self) -> None:
        check_choices("positions", self.positions, tuple(POSITIONS))
        check_int_list("eval_lens", self.eval_lens)
    SMOKE = dict(dim=32, depth=1, heads=2, train_len=16, eval_lens="16,32", batch_size=8, steps=4, warmup=1,
                 eval_windows=2, max_bytes=50_000, log_every=2)
    # `--preset gpu`: a 6-layer, 384-wide model trained on 256 bytes, evaluated up to 1,024.
    GPU = dict(dim=384, depth=6, heads=6, train_len=256, eval_lens="256,512,1024", batch_size=64, steps=3000,
               warmup=200, lr=1e-3, eval_windows=64, max_bytes=4_000_000)


def build_model(position: str, cfg: Config) -> TransformerWrapper:
    # Absolute positions exist only up to the training length; the others get room for the longest evaluation.
    longest = max(int(n) for n in cfg.eval_lens.split(","))
    max_seq_len = cfg.train_len if position == "absolute" else longest
    return TransformerWrapper(num_tokens=256, max_seq_len=max_seq_len,
                              attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, **POSITIONS[position]))


@torch.no_grad()
def position_losses(model, windows: torch.Tensor, device, *, context: int | None = None) -> torch.Tensor:
    """Loss (nats) at each position of the windows; with `context`, a sliding window of that size, stride half."""
    model.eval()
    x = windows.to(device)
    n = x.shape[1] - 1
    if context is None or context >= n:
        with autocast(device):
            logits = model(x[:, :-1])  # (b, n, 256)
        losses = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none")  # (b, n)
    else:
        losses = torch.zeros(x.shape[0], n, device=device)
        stride = context // 2
        for start in range(0, n - stride, stride):
            stop = min(start + context, n)
            with autocast(device):
                logits = model(x[:, start:stop])
            chunk = F.cross_entropy(logits.float().transpose(1, 2), x[:, start + 1 : stop + 1], reduction="none")
            # Score only the positions this window adds (all of them for the first window).
            keep = 0 if start == 0 else context - stride
            losses[:, start + keep : stop] = chunk[:, keep:]
    model.train()
    return losses.mean(0).cpu()  # (n,)


def train(position: str, cfg: Config, data, out: Path):
    device = setup_distributed(cfg.device).device
    seed_everything(cfg.seed)
    model = build_model(position, cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    net = maybe_compile(model, cfg.compile)
    log, bar = RunLog(out / position), Progress(cfg.steps)
    for step in range(cfg.steps):
        x = sample_windows(data.train, cfg.batch_size, cfg.train_len + 1, batch_generator(cfg.seed, step)).to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        with autocast(device):
            logits = net(x[:, :-1])  # (b, n, 256)
        loss = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.update(loss=loss.item(), items=cfg.batch_size * cfg.train_len)
        if (step + 1) % cfg.log_every == 0:
            log.log(step + 1, train_loss=loss.item())
    bar.close()
    log.write_csv()
    return model, device


def main(cfg: Config) -> dict:
    out = out_dir_for(cfg, "alibi_extrapolation")
    if cfg.resume:
        raise ValueError("resume: alibi_extrapolation.py does not resume (it trains one short run per position scheme); "
                         "run it again instead")
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    lengths = [int(n) for n in cfg.eval_lens.split(",")]
    windows = sample_windows(data.val, cfg.eval_windows, max(lengths) + 1, batch_generator(cfg.seed, -1))
    table: dict[str, dict] = {}
    curves: dict[str, list] = {}
    for position in cfg.positions.split(","):
        model, device = train(position, cfg, data, out)
        rows = {"absolute": ["absolute", "absolute (sliding)"]}.get(position, [position])
        for row in rows:
            sliding = row.endswith("(sliding)")
            table[row] = {"parameters": count_parameters(model)}
            for n in lengths:
                if position == "absolute" and n > cfg.train_len and not sliding:
                    table[row][n] = None  # no position embedding exists past train_len
                    continue
                # Windows of n bytes: the first n + 1 of each evaluation window (same text for every model).
                losses = position_losses(model, windows[:, : n + 1], device, context=cfg.train_len if sliding else None)
                table[row][n] = losses.mean().item() / math.log(2)
                if n == max(lengths):
                    bucket = max(1, n // 16)
                    curves[row] = [(i * bucket + bucket / 2, v / math.log(2))
                                   for i, v in enumerate(losses.view(-1, bucket).mean(1).tolist())]
    plot_curves(curves, out / "loss_by_position.png", xlabel="position in window", ylabel="bits per character",
                title=f"trained on {cfg.train_len}, evaluated on {max(lengths)}")
    header = "| positions | " + " | ".join(f"bpc @ {n}" for n in lengths) + " |"
    print("\n" + header + "\n|---|" + "---|" * len(lengths))
    for row, scores in table.items():
        print(f"| {row} | " + " | ".join("n/a" if scores[n] is None else f"{scores[n]:.3f}" for n in lengths) + " |")
    outcome = verdict(table, lengths, cfg.train_len)
    print(f"\n{outcome['verdict']}: {outcome['evidence']}")
    RunLog(out).summary(config=vars(cfg), results=table, verdict=outcome)
    return table


def verdict(table: dict, lengths: list[int], train_len: int) -> dict:
    """ALiBi at every longer length no worse than at the training length (a 0.01 bpc tolerance for noise),
    while rotary degrades; the longer lengths are those above `train_len`."""
    claim = ("trained at length L, ALiBi's bpc at 2L and 4L is no worse than at L, "
             "while rotary (and learned absolute positions) cannot extrapolate")
    longer = [n for n in lengths if n > train_len]
    if "alibi" not in table or train_len not in lengths or not longer:
        return claim_verdict(claim, None, "needs the alibi model and evaluation lengths at and above train_len")
    alibi = table["alibi"]
    holds = all(alibi[n] <= alibi[train_len] + 0.01 for n in longer)
    parts = [f"alibi {' / '.join(f'{alibi[n]:.3f}' for n in lengths)}"]
    if "rotary" in table:
        rotary = table["rotary"]
        holds = holds and rotary[max(longer)] > rotary[train_len] + 0.01
        parts.append(f"rotary {' / '.join(f'{rotary[n]:.3f}' for n in lengths)}")
    return claim_verdict(claim, holds, f"bpc at {' / '.join(map(str, lengths))}: " + "; ".join(parts))


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
