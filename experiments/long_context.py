r"""
# Long context: attention sinks and RoPE scaling

*Paper:* [Efficient Streaming Language Models with Attention Sinks](https://arxiv.org/abs/2309.17453) (Xiao et al., 2023),
[Extending Context Window of Large Language Models via Positional Interpolation](https://arxiv.org/abs/2306.15595) (Chen et al., 2023),
[YaRN: Efficient Context Window Extension of Large Language Models](https://arxiv.org/abs/2309.00071) (Peng et al., 2023)

Two ways to use a rotary model beyond the length it was trained on, measured on one character
model trained with full attention on windows of `train_len` bytes.

**Streaming** ([attention sinks](../labml_style_nn/generation/attention_sinks.md)).  The model reads
long validation streams (`stream_len` bytes, 32 times the training length by default) one byte at a
time, and we record the loss at every position under four caches:

* `dense`: every key kept, so positions grow past anything seen in training;
* `window`: the last `train_len` keys only (window eviction: the first tokens leave the cache);
* `sinks`: the first `sinks` tokens plus the most recent, `train_len` in all, positions within the
  cache (StreamingLLM);
* `sliding (recompute)`: each byte predicted from a fresh pass over the `train_len` bytes before it,
  the expensive baseline that streaming should match.

**RoPE scaling** ([position interpolation, NTK, YaRN](../labml_style_nn/positional/rope_scaling.md)).
The same trained weights are evaluated on windows of $s \cdot$ `train_len` bytes with each scaling at
factor $s$ (every byte of a window scored), then each scaled model is fine-tuned for
`finetune_steps` steps at the longer length and evaluated again.

Every training window, stream and evaluation window begins with a fixed start byte (as LLM
documents begin with a start token), unless `--no-start-token`.

**A model that forms a sink.**  The character model puts almost no attention on its first token,
so evicting it costs nothing and cannot show what the sinks are for.  A second, small model is
trained on the Bigram-Backcopy task of [Guo et al. (2024)](https://arxiv.org/abs/2410.13835), which
makes a head "do nothing" on most tokens, and streamed the same way; its loss is reported in bits
per token above the task's exact entropy floor, with the attention each head gives the start token
(`--no-backcopy` leaves it out, `--no-text` runs it alone).

```
python experiments/long_context.py
```

The measured tables and plots are on the
[results page](../docs/results.md#long-context-attention-sinks-rope-scaling-the-rolling-cache).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin: see experiments/common.py

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    Progress,
    RunConfig,
    RunLog,
    batch_generator,
    claim_verdict,
    count_parameters,
    lr_at,
    out_dir_for,
    plot_curves,
    resolve_device,
    run_experiment,
    seed_everything,
)
from experiments.data import load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402
from labml_style_nn.generation import AttentionSinksCache, LayersCache  # noqa: E402


@dataclass
class Config(RunConfig):
    data: str = field(default="stdlib", metadata={"help": "stdlib | tinyshakespeare | enwik8 | path"})
    cache_dir: str = ""
    max_bytes: int = 2_000_000
    train_len: int = 64
    dim: int = 128
    depth: int = 3
    heads: int = 4
    batch_size: int = 32
    steps: int = 1000
    lr: float = 2e-3
    warmup: int = 50
    stream_len: int = field(default=2048, metadata={"help": "bytes per validation stream"})
    streams: int = field(default=8, metadata={"help": "validation streams read in parallel"})
    sinks: int = field(default=4, metadata={"help": "first tokens kept by the sink cache"})
    start_token: bool = field(default=True, metadata={
        "help": "begin every training window, stream and evaluation window with byte 0 (a fixed first token)"})
    methods: str = "dense,window,sinks,sliding"
    scalings: str = "none,pi,ntk,yarn"
    factors: str = field(default="2,4", metadata={"help": "evaluation lengths, in multiples of train_len"})
    finetune_steps: int = 60
    finetune_lr: float = 5e-4
    eval_windows: int = 32
    text: bool = field(default=True, metadata={
        "help": "train the character model, stream it and run the RoPE scaling part"})
    backcopy: bool = field(default=True, metadata={
        "help": "also stream a model trained on the Bigram-Backcopy task, which forms an attention sink"})
    bc_vocab: int = field(default=64, metadata={"help": "Bigram-Backcopy: tokens besides the start token"})
    bc_triggers: int = field(default=16, metadata={"help": "Bigram-Backcopy: trigger tokens (copy the one before)"})
    bc_alpha: float = field(default=0.1, metadata={"help": "Bigram-Backcopy: Dirichlet concentration of each "
                                                           "bigram row (smaller: lower entropy)"})
    bc_dim: int = 64
    bc_depth: int = 1
    bc_heads: int = 2
    bc_ff_mult: float = field(default=0.25, metadata={"help": "Bigram-Backcopy: feed-forward width over dim"})
    bc_steps: int = 2000
    bc_lr: float = 5e-3
    bc_weight_decay: float = 0.0

    # `--preset gpu`: a 6-layer, 384-wide model trained on 256 bytes, streamed over 8,192.
    GPU = dict(dim=384, depth=6, heads=6, train_len=256, batch_size=64, steps=3000, stream_len=8192, streams=16,
               finetune_steps=200, eval_windows=64)
    SMOKE = dict(dim=32, depth=1, heads=2, train_len=16, batch_size=8, steps=4, warmup=1, stream_len=48, streams=2,
                 sinks=2, finetune_steps=2, eval_windows=2, max_bytes=50_000, log_every=2, bc_vocab=8, bc_triggers=2,
                 bc_dim=16, bc_depth=1, bc_heads=2, bc_steps=4)


def build_model(cfg: Config, **scaling) -> TransformerWrapper:
    """A rotary character model with full attention; `scaling` are the RoPE scaling keywords."""
    return TransformerWrapper(num_tokens=256, max_seq_len=cfg.train_len, attn_layers=Decoder(
        dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, attn_dim_head=cfg.dim // cfg.heads, rotary_pos_emb=True,
        rotary_emb_dim=cfg.dim // cfg.heads, **scaling))


START = 0  # the start byte; source text and enwik8 never contain a NUL


def with_start(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """`x` `(b, n)` with the start byte in front when `start_token` is on, else `x` itself."""
    return torch.cat((x.new_full((x.shape[0], 1), START), x), dim=1) if cfg.start_token else x


def scaling_keywords(name: str, s: float, cfg: Config) -> dict:
    return {"none": {}, "pi": dict(rotary_interpolation_factor=s), "ntk": dict(rotary_base_rescale_factor=s),
            "yarn": dict(rotary_yarn_factor=s, rotary_yarn_original_max_len=cfg.train_len)}[name]


#
# ## A task whose model forms a sink: Bigram-Backcopy
#
# The character model above forms no sink, so it cannot show what evicting one costs.  The
# Bigram-Backcopy task of [Guo et al. (2024)](https://arxiv.org/abs/2410.13835) makes one form in
# a model of a few layers: after the start token, most tokens follow a fixed random bigram table,
# but right after one of a few *trigger* tokens the next token repeats the token before the trigger,
#
# $$x_{t+1} = \begin{cases} x_{t-1} & \text{if } x_t \text{ is a trigger,} \\
#   \sim P(\cdot \mid x_t) & \text{otherwise.} \end{cases}$$
#
# A head that copies is needed on triggers only; everywhere else it must do nothing, and it learns
# to do so by putting its weight on the start token (the paper's *dormant* head; a one-layer model
# also parks much of it on the query's own token, which we measure too).  The first token
# after the start is never a trigger, so a trigger always follows an ordinary token and a copy is
# never a trigger itself.
#
# The best possible loss is known exactly: a copy is certain (0 bits) and any other next token has
# the entropy of its row of the table, $H(P(\cdot \mid x_t))$.  We report losses as bits above
# this floor.
class Backcopy:
    """The Bigram-Backcopy task: token 0 is the start token, tokens `1 ... vocab` the others, the last
    `triggers` of them the triggers; each row of the bigram table is drawn from a Dirichlet(`alpha`)."""

    def __init__(self, *, vocab: int, triggers: int, alpha: float, seed: int):
        if not 0 < triggers < vocab:
            raise ValueError(f"triggers: expected 0 < triggers < vocab ({vocab}), got {triggers}")
        self.vocab = vocab
        self.is_trigger = torch.zeros(vocab + 1, dtype=torch.bool)  # (vocab + 1,)
        self.is_trigger[vocab + 1 - triggers:] = True
        # $P(j \mid i)$ for $j \ge 1$; row 0 (after the start token) leaves out the triggers.
        rows = torch.from_numpy(np.random.default_rng(seed).dirichlet([alpha] * vocab, size=vocab + 1)).float()
        table = torch.cat((torch.zeros(vocab + 1, 1), rows), dim=1)  # (vocab + 1, vocab + 1)
        table[0, self.is_trigger] = 0.
        self.table = table / table.sum(1, keepdim=True)
        self.cdf = self.table.cumsum(1)
        # $H(P(\cdot \mid i))$ in bits, 0 on triggers (their successor is a copy)
        plogp = torch.where(self.table > 0, self.table * self.table.clamp_min(1e-30).log2(), 0.)
        self.row_entropy = torch.where(self.is_trigger, 0., -plogp.sum(1))  # (vocab + 1,)

    def sample(self, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """`batch` sequences of the start token and `length` tokens, `(b, length + 1)`."""
        u = torch.rand(length, batch, 1, generator=generator)
        x = torch.zeros(batch, length + 1, dtype=torch.long)
        for t in range(length):
            drawn = self.draw(x[:, t], u[t])
            x[:, t + 1] = torch.where(self.is_trigger[x[:, t]], x[:, t - 1], drawn) if t else drawn
        return x

    def draw(self, prev: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""Inverse-CDF sampling from the rows of `prev` `(b,)` with uniforms `u` `(b, 1)`: the first token
        whose cumulative probability reaches $u$, so never one of probability 0 (`u` is kept inside
        $(0, F_{\text{last}}]$, which rounding could leave)."""
        cdf = self.cdf[prev]  # (b, vocab + 1)
        u = torch.minimum(u.clamp_min(1e-12), cdf[:, -1:])
        return torch.searchsorted(cdf, u).squeeze(1)  # (b,)

    def floor_bits(self, x: torch.Tensor) -> torch.Tensor:
        """Entropy in bits of each next token given everything before it, `(b, n)` for `x` `(b, n + 1)`."""
        return self.row_entropy[x[:, :-1]]


#
# ## Training (and fine-tuning) on random windows
def train(model, windows, cfg: Config, *, length: int, steps: int, lr: float, warmup: int, seed: int, log=None,
          key: str = "train_loss", weight_decay: float = 0.1):
    """`windows(batch, n, generator)` gives `(batch, n + 1)` token ids that begin with the start token."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    # The same number of bytes per step at every length.
    batch = max(1, cfg.batch_size * cfg.train_len // length)
    bar = Progress(steps)
    model.train()
    for step in range(steps):
        x = windows(batch, length, batch_generator(seed, step)).to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, total=steps)
        loss = F.cross_entropy(model(x[:, :-1]).transpose(1, 2), x[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.update(loss=loss.item(), items=batch * length)
        if log is not None and (step + 1) % cfg.log_every == 0:
            log.log(step + 1, **{key: loss.item()})
    bar.close()
    model.eval()


#
# ## Streaming: the loss at each position under each cache
@torch.no_grad()
def stream_losses(model, text: torch.Tensor, method: str, cfg: Config, per_sequence: bool = False) -> torch.Tensor:
    """Loss (nats) at each position of `text` `(b, T + 1)`, read one byte at a time; returns `(T,)`
    (the mean over the sequences) or, with `per_sequence`, `(b, T)`."""
    b, steps = text.shape[0], text.shape[1] - 1
    losses = torch.zeros(b, steps)
    layers = model.attn_layers
    cache = None
    if method == "dense":
        cache = LayersCache(layers, b, steps)
    elif method in ("window", "sinks"):
        sinks = cfg.sinks if method == "sinks" else 0
        cache = AttentionSinksCache(layers, b, sinks=sinks, cache_len=cfg.train_len)
    for t in range(steps):
        if cache is None:
            # Recompute over the last `train_len` bytes (the start byte first, as in training): positions
            # 0 ... train_len - 1, always seen in training.
            lo = max(0, t + 1 - (cfg.train_len - cfg.start_token))
            window = text[:, lo:t + 1] if lo == 0 else with_start(text[:, lo:t + 1], cfg)
            logits = model(window)[:, -1]
        else:
            logits = model(text[:, t:t + 1], cache=cache)[:, -1]  # (b, 256)
        losses[:, t] = F.cross_entropy(logits.float(), text[:, t + 1], reduction="none").cpu()
    return losses if per_sequence else losses.mean(0)


@torch.no_grad()
def first_token_attention(model, windows: torch.Tensor) -> list[float]:
    """Mean attention weight on the first token from the second half of each window, per layer (a sink's mark)."""
    _, maps = model(windows, return_attn=True)  # each (b, h, i, j)
    half = windows.shape[1] // 2
    return [m[:, :, half:, 0].mean().item() for m in maps]


@torch.no_grad()
def start_token_attention(model, x: torch.Tensor, active: torch.Tensor) -> list[dict]:
    """Per layer, the mean attention weight each head gives the start token (and the query's own token)
    from the second half of the windows `x` `(b, n)`, apart for queries where `active` `(b, n)` is set
    (where the copying head has work) and the others."""
    _, maps = model(x, return_attn=True)  # each (b, h, i, j)
    n, half = x.shape[1], x.shape[1] // 2
    on = active[:, half:]  # (b, i)
    out = []
    for m in maps:
        first = m[:, :, half:, 0].transpose(0, 1)  # (h, b, i)
        own = m[:, :, torch.arange(half, n), torch.arange(half, n)].transpose(0, 1)  # (h, b, i)
        out.append({"start_dormant": [round(v, 4) for v in first[:, ~on].mean(1).tolist()],
                    "start_active": [round(v, 4) for v in first[:, on].mean(1).tolist()],
                    "own_dormant": [round(v, 4) for v in own[:, ~on].mean(1).tolist()]})
    return out


def uniform_first_weight(n: int) -> float:
    """The first token's weight under uniform causal attention, averaged over the second half of `n` queries."""
    return sum(1 / (i + 1) for i in range(n // 2, n)) / (n - n // 2)


def stream_bits(model, text: torch.Tensor, cfg: Config, per_sequence: bool = False) -> tuple[dict, dict]:
    """Bits at each position of `text` under each cache of `cfg.methods`, and the seconds each took."""
    losses, seconds = {}, {}
    for method in cfg.methods.split(","):
        started = time.perf_counter()
        losses[method] = stream_losses(model, text, method, cfg, per_sequence) / math.log(2)  # (T,) or (b, T)
        seconds[method] = round(time.perf_counter() - started, 1)
    return losses, seconds


def plot_streaming(curves: dict[str, list[tuple[float, float]]], path: Path, *, ylabel: str, title: str,
                   baseline: str = "sliding") -> Path:
    """The caches' curves by position, and below them each cache's gap to `baseline` (recomputing a window).

    The caches that work lie within a few hundredths of a bit of each other, so on one axis their lines
    cover each other: each is drawn in its own style (the first drawn widest), and the lower panel
    shows what separates them. A curve far from the baseline (the dense cache) is left off the lower panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = [dict(lw=3.2, ls="-"), dict(lw=2.2, ls="--"), dict(lw=1.6, ls=":"), dict(lw=1.0, ls="-.")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.2), dpi=100, sharex=True, height_ratios=(3, 2))
    base = dict(curves.get(baseline, []))
    for index, (name, points) in enumerate(curves.items()):
        # The same colour and line style for a cache in both panels
        style = dict(styles[index % len(styles)], color=f"C{index}")
        xs, ys = zip(*points, strict=True)
        top.plot(xs, ys, label=name, **style)
        gaps = [(x, y - base[x]) for x, y in points if x in base]
        if name != baseline and gaps and max(abs(g) for _, g in gaps) < 1.0:
            bottom.plot(*zip(*gaps, strict=True), label=f"{name} - {baseline}", **style)
    bottom.axhline(0, color="0.5", lw=0.8)
    top.set_ylabel(ylabel)
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.set_ylabel(f"gap to {baseline}")
    bottom.set_xlabel("position in stream")
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def by_bucket(values: torch.Tensor, bucket: int) -> list[tuple[float, float]]:
    """`(middle position, mean)` of consecutive buckets of `values` `(T,)`, for a plot."""
    whole = len(values) // bucket * bucket
    return [(i * bucket + bucket / 2, v) for i, v in enumerate(values[:whole].view(-1, bucket).mean(1).tolist())]


#
# ## Streaming the Bigram-Backcopy model
#
# A small rotary model with full attention trained on windows of `train_len` tokens (the start
# token first), then streamed over `stream_len` tokens exactly like the character model.  We
# measure where each head puts its weight on the start token, on triggers (where the copying head
# is active) and elsewhere (where it is dormant), and every loss as bits above the floor.
def backcopy_experiment(cfg: Config, device, log: RunLog) -> tuple[dict, dict]:
    task = Backcopy(vocab=cfg.bc_vocab, triggers=cfg.bc_triggers, alpha=cfg.bc_alpha, seed=cfg.seed)
    # The start token is part of the task, whatever `--no-start-token` says for the text.
    bcfg = dataclasses.replace(cfg, start_token=True)
    seed_everything(cfg.seed)
    model = TransformerWrapper(num_tokens=cfg.bc_vocab + 1, max_seq_len=cfg.train_len, attn_layers=Decoder(
        dim=cfg.bc_dim, depth=cfg.bc_depth, heads=cfg.bc_heads, attn_dim_head=cfg.bc_dim // cfg.bc_heads,
        rotary_pos_emb=True, rotary_emb_dim=cfg.bc_dim // cfg.bc_heads, ff_mult=cfg.bc_ff_mult)).to(device)
    started = time.perf_counter()
    train(model, task.sample, bcfg, length=cfg.train_len, steps=cfg.bc_steps, lr=cfg.bc_lr, warmup=cfg.warmup,
          seed=cfg.seed + 1, log=log, key="backcopy_train_loss", weight_decay=cfg.bc_weight_decay)
    results: dict = {"parameters": count_parameters(model), "train_seconds": round(time.perf_counter() - started, 1)}

    text = task.sample(cfg.streams, cfg.stream_len, batch_generator(cfg.seed + 1, -1))  # (b, T + 1)
    floors = task.floor_bits(text)  # (b, T)
    floor = floors.mean(0)  # (T,)
    per_sequence, seconds = stream_bits(model, text.to(device), bcfg, per_sequence=True)
    losses = {m: b.mean(0) for m, b in per_sequence.items()}  # each (T,)
    n = cfg.train_len
    # Past `train_len`, the excess apart on the tokens after a trigger (the copying head active) and the others.
    on = task.is_trigger[text[:, n:-1]]  # (b, T - n)
    results["floor_bits"] = {"first_train_len": floor[:n].mean().item(), "beyond_train_len": floor[n:].mean().item()}
    results["streaming"] = {m: {"excess_first_train_len": (b - floor)[:n].mean().item(),
                                "excess_beyond_train_len": (b - floor)[n:].mean().item(),
                                "excess_last_quarter": (b - floor)[-len(b) // 4:].mean().item(),
                                "excess_beyond_after_ordinary": (per_sequence[m] - floors)[:, n:][~on].mean().item(),
                                "excess_beyond_after_triggers": (per_sequence[m] - floors)[:, n:][on].mean().item(),
                                "seconds": seconds[m]} for m, b in losses.items()}
    windows = task.sample(32 * cfg.streams, n - 1, batch_generator(cfg.seed + 1, -2))  # (b, n)
    results["start_token_attention"] = {
        "per_layer": start_token_attention(model, windows.to(device), task.is_trigger[windows].to(device)),
        "uniform": uniform_first_weight(n)}
    # The dense cache (far above the others once positions pass `train_len`) is left off the plot.
    curves = {m: by_bucket(b - floor, n) for m, b in losses.items() if m != "dense"}
    return results, curves


@torch.no_grad()
def window_bpc(model, windows: torch.Tensor, n: int) -> float:
    """Bits per byte over every byte of the first `n + 1` bytes of each window."""
    x = windows[:, :n + 1]
    return F.cross_entropy(model(x[:, :-1]).float().transpose(1, 2), x[:, 1:]).item() / math.log(2)


def main(cfg: Config) -> dict:
    out = out_dir_for(cfg, "long_context")
    if cfg.resume:
        raise ValueError("resume: long_context.py does not resume (one short run); run it again instead")
    if not (cfg.text or cfg.backcopy):
        raise ValueError("text, backcopy: expected at least one of the two parts on")
    device = resolve_device(cfg.device)
    log = RunLog(out)
    results: dict = {}
    streaming = None
    if cfg.text:
        results.update(text_experiment(cfg, device, out, log))
        streaming = results["streaming"]

    # Streaming again, with a model that forms a sink.
    backcopy = None
    if cfg.backcopy:
        backcopy, bc_curves = backcopy_experiment(cfg, device, log)
        results["backcopy"] = backcopy
        log.write_csv()
        plot_streaming(bc_curves, out / "backcopy_streaming_excess.png", ylabel="bits per token above the floor",
                       title=f"Bigram-Backcopy, trained on {cfg.train_len} tokens (mean of each {cfg.train_len})")
        backcopy["curves"] = bc_curves  # kept in summary.json, so the figure can be redrawn
        print(f"\nBigram-Backcopy, bits per token above the floor ({backcopy['floor_bits']['beyond_train_len']:.3f} "
              "bits past the training length)\n| cache | first train_len | beyond | last quarter "
              "| beyond, after ordinary tokens | beyond, after triggers |\n|---|---|---|---|---|---|")
        for method, r in backcopy["streaming"].items():
            print(f"| {method} | {r['excess_first_train_len']:.3f} | {r['excess_beyond_train_len']:.3f} "
                  f"| {r['excess_last_quarter']:.3f} | {r['excess_beyond_after_ordinary']:.3f} "
                  f"| {r['excess_beyond_after_triggers']:.3f} |")
        print(f"start-token attention (uniform: {backcopy['start_token_attention']['uniform']:.3f}), per layer "
              "and head, on ordinary tokens / on triggers:")
        for layer, heads in enumerate(backcopy["start_token_attention"]["per_layer"]):
            print(f"  layer {layer}: {heads['start_dormant']} / {heads['start_active']} "
                  f"(own token, on ordinary tokens: {heads['own_dormant']})")
    outcome = verdict(streaming, backcopy)
    print(f"\n{outcome['verdict']}: {outcome['evidence']}")
    log.summary(config=vars(cfg), results=results, verdict=outcome)
    return results


#
# ## The character model: streaming and RoPE scaling
def text_experiment(cfg: Config, device, out: Path, log: RunLog) -> dict:
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    seed_everything(cfg.seed)
    base = build_model(cfg).to(device)
    started = time.perf_counter()

    def text_windows(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return with_start(sample_windows(data.train, batch, n + 1 - cfg.start_token, generator), cfg)

    train(base, text_windows, cfg, length=cfg.train_len, steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, seed=cfg.seed,
          log=log)
    log.write_csv()
    results: dict = {"parameters": count_parameters(base), "train_seconds": round(time.perf_counter() - started, 1)}
    torch.save({"model": base.state_dict(), "config": vars(cfg)}, out / "checkpoint.pt")

    # Streaming far past the training length.
    text = with_start(sample_windows(data.val, cfg.streams, cfg.stream_len + 1 - cfg.start_token,
                                     batch_generator(cfg.seed, -1)), cfg).to(device)
    streaming, curves = {}, {}
    bits, seconds = stream_bits(base, text, cfg)
    for method, losses in bits.items():
        inside, beyond = losses[:cfg.train_len], losses[cfg.train_len:]
        streaming[method] = {"bpc_first_train_len": inside.mean().item(), "bpc_beyond_train_len": beyond.mean().item(),
                             "bpc_last_quarter": losses[-len(losses) // 4:].mean().item(), "seconds": seconds[method]}
        curves[method] = by_bucket(losses, max(1, cfg.train_len // 2))
    results["streaming"] = streaming
    results["streaming_curves"] = curves  # kept in summary.json, so the figure can be redrawn
    # How much attention the first token draws, against $1 / (i + 1)$ for uniform attention.
    base.eval()
    probe = text[:, :cfg.train_len]
    results["first_token_attention"] = {"per_layer": first_token_attention(base, probe),
                                        "uniform": sum(1 / (i + 1) for i in range(cfg.train_len // 2, cfg.train_len))
                                        / (cfg.train_len - cfg.train_len // 2)}
    plot_streaming(curves, out / "streaming_bpc_by_position.png", ylabel="bits per byte",
                   title=f"trained on {cfg.train_len} bytes, full attention")

    # RoPE scaling, without and with a short fine-tune at the longer length.
    factors = [int(f) for f in cfg.factors.split(",")]
    windows = with_start(sample_windows(data.val, cfg.eval_windows, cfg.train_len * max(factors) + 1 - cfg.start_token,
                                        batch_generator(cfg.seed, -2)), cfg).to(device)
    base.eval()
    rope: dict = {"train_len_bpc": window_bpc(base, windows, cfg.train_len)}
    rope_curves = {}
    for name in cfg.scalings.split(","):
        for tuned in (False, True):
            row = f"{name} (fine-tuned)" if tuned else name
            rope[row] = {}
            for s in factors:
                model = build_model(cfg, **scaling_keywords(name, float(s), cfg)).to(device)
                model.load_state_dict(base.state_dict())  # rotary frequencies are buffers, not weights
                if tuned:
                    train(model, text_windows, cfg, length=s * cfg.train_len, steps=cfg.finetune_steps, lr=cfg.finetune_lr,
                          warmup=max(1, cfg.finetune_steps // 10), seed=cfg.seed + 1000 * s)
                model.eval()
                rope[row][s * cfg.train_len] = window_bpc(model, windows, s * cfg.train_len)
            rope_curves[row] = [(cfg.train_len, rope["train_len_bpc"])] + list(rope[row].items())
    results["rope_scaling"] = rope
    plot_curves(rope_curves, out / "rope_scaling_bpc.png", xlabel="evaluation length (bytes)",
                ylabel="bits per byte", title=f"trained on {cfg.train_len} bytes")

    print("\n| cache | bpc, first train_len | bpc, beyond | bpc, last quarter |\n|---|---|---|---|")
    for method, r in streaming.items():
        print(f"| {method} | {r['bpc_first_train_len']:.3f} | {r['bpc_beyond_train_len']:.3f} "
              f"| {r['bpc_last_quarter']:.3f} |")
    lengths = [s * cfg.train_len for s in factors]
    print(f"\nbpc at the training length {cfg.train_len}: {rope['train_len_bpc']:.3f}")
    print("| scaling | " + " | ".join(f"bpc @ {n}" for n in lengths) + " |\n|---|" + "---|" * len(lengths))
    for row, scores in rope.items():
        if isinstance(scores, dict):
            print(f"| {row} | " + " | ".join(f"{scores[n]:.3f}" for n in lengths) + " |")
    return results


def verdict(streaming: dict | None, backcopy: dict | None = None) -> dict:
    """Sinks stay within 0.05 bits of recomputing each window, where window eviction is worse by more than
    0.1, on the model that forms a sink (Bigram-Backcopy) when it ran, else on the character model."""
    claim = ("StreamingLLM: on a model that forms an attention sink, keeping the first tokens keeps the loss far "
             "past the training length at the level of recomputing a sliding window, while plain window "
             "eviction degrades")
    text = "" if streaming is None else "; character model, bpc past the training length: " + ", ".join(
        f"{m} {r['bpc_beyond_train_len']:.3f}" for m, r in streaming.items())
    if backcopy is not None:
        beyond = {m: r["excess_beyond_train_len"] for m, r in backcopy["streaming"].items()}
        evidence = ("Bigram-Backcopy model, bits per token above the floor past the training length: "
                    + ", ".join(f"{m} {v:.3f}" for m, v in beyond.items()) + text)
    else:
        assert streaming is not None
        beyond = {m: r["bpc_beyond_train_len"] for m, r in streaming.items()}
        evidence = text[2:]
    if not {"sinks", "window", "sliding"} <= set(beyond):
        return claim_verdict(claim, None, "needs the sinks, window and sliding methods")
    holds = beyond["sinks"] <= beyond["sliding"] + 0.05 and beyond["window"] > beyond["sinks"] + 0.1
    return claim_verdict(claim, holds, evidence)


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
