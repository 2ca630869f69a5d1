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

```
python experiments/long_context.py
```

The measured tables and plots are on the
[results page](../docs/results.md#long-context-attention-sinks-rope-scaling-the-rolling-cache).
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

    # `--preset gpu`: a 6-layer, 384-wide model trained on 256 bytes, streamed over 8,192.
    GPU = dict(dim=384, depth=6, heads=6, train_len=256, batch_size=64, steps=3000, stream_len=8192, streams=16,
               finetune_steps=200, eval_windows=64)
    SMOKE = dict(dim=32, depth=1, heads=2, train_len=16, batch_size=8, steps=4, warmup=1, stream_len=48, streams=2,
                 sinks=2, finetune_steps=2, eval_windows=2, max_bytes=50_000, log_every=2)


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
# ## Training (and fine-tuning) on random windows
def train(model, data, cfg: Config, *, length: int, steps: int, lr: float, warmup: int, seed: int, log=None):
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    # The same number of bytes per step at every length.
    batch = max(1, cfg.batch_size * cfg.train_len // length)
    bar = Progress(steps)
    model.train()
    for step in range(steps):
        x = with_start(sample_windows(data.train, batch, length + 1 - cfg.start_token,
                                      batch_generator(seed, step)), cfg).to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, total=steps)
        loss = F.cross_entropy(model(x[:, :-1]).transpose(1, 2), x[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.update(loss=loss.item(), items=batch * length)
        if log is not None and (step + 1) % cfg.log_every == 0:
            log.log(step + 1, train_loss=loss.item())
    bar.close()
    model.eval()


#
# ## Streaming: the loss at each position under each cache
@torch.no_grad()
def stream_losses(model, text: torch.Tensor, method: str, cfg: Config) -> torch.Tensor:
    """Loss (nats) at each position of `text` `(b, T + 1)`, read one byte at a time; returns `(T,)`."""
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
    return losses.mean(0)


@torch.no_grad()
def first_token_attention(model, windows: torch.Tensor) -> list[float]:
    """Mean attention weight on the first token from the second half of each window, per layer (a sink's mark)."""
    _, maps = model(windows, return_attn=True)  # each (b, h, i, j)
    half = windows.shape[1] // 2
    return [m[:, :, half:, 0].mean().item() for m in maps]


@torch.no_grad()
def window_bpc(model, windows: torch.Tensor, n: int) -> float:
    """Bits per byte over every byte of the first `n + 1` bytes of each window."""
    x = windows[:, :n + 1]
    return F.cross_entropy(model(x[:, :-1]).float().transpose(1, 2), x[:, 1:]).item() / math.log(2)


def main(cfg: Config) -> dict:
    out = out_dir_for(cfg, "long_context")
    if cfg.resume:
        raise ValueError("resume: long_context.py does not resume (one short run); run it again instead")
    device = resolve_device(cfg.device)
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    seed_everything(cfg.seed)
    base = build_model(cfg).to(device)
    started = time.perf_counter()
    log = RunLog(out)
    train(base, data, cfg, length=cfg.train_len, steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, seed=cfg.seed,
          log=log)
    log.write_csv()
    results: dict = {"parameters": count_parameters(base), "train_seconds": round(time.perf_counter() - started, 1)}
    torch.save({"model": base.state_dict(), "config": vars(cfg)}, out / "checkpoint.pt")

    # Streaming far past the training length.
    text = with_start(sample_windows(data.val, cfg.streams, cfg.stream_len + 1 - cfg.start_token,
                                     batch_generator(cfg.seed, -1)), cfg).to(device)
    streaming, curves = {}, {}
    bucket = max(1, cfg.train_len // 2)
    for method in cfg.methods.split(","):
        started = time.perf_counter()
        losses = stream_losses(base, text, method, cfg) / math.log(2)  # bits, (T,)
        inside, beyond = losses[:cfg.train_len], losses[cfg.train_len:]
        streaming[method] = {"bpc_first_train_len": inside.mean().item(), "bpc_beyond_train_len": beyond.mean().item(),
                             "bpc_last_quarter": losses[-len(losses) // 4:].mean().item(),
                             "seconds": round(time.perf_counter() - started, 1)}
        whole = len(losses) // bucket * bucket
        curves[method] = [(i * bucket + bucket / 2, v) for i, v in enumerate(losses[:whole].view(-1, bucket).mean(1).tolist())]
    results["streaming"] = streaming
    # How much attention the first token draws, against $1 / (i + 1)$ for uniform attention.
    base.eval()
    probe = text[:, :cfg.train_len]
    results["first_token_attention"] = {"per_layer": first_token_attention(base, probe),
                                        "uniform": sum(1 / (i + 1) for i in range(cfg.train_len // 2, cfg.train_len))
                                        / (cfg.train_len - cfg.train_len // 2)}
    plot_curves(curves, out / "streaming_bpc_by_position.png", xlabel="position in stream",
                ylabel="bits per byte", title=f"trained on {cfg.train_len} bytes, full attention")

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
                    train(model, data, cfg, length=s * cfg.train_len, steps=cfg.finetune_steps, lr=cfg.finetune_lr,
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
    outcome = verdict(streaming)
    print(f"\n{outcome['verdict']}: {outcome['evidence']}")
    log.summary(config=vars(cfg), results=results, verdict=outcome)
    return results


def verdict(streaming: dict) -> dict:
    """Sinks stay within 0.05 bpc of recomputing each window, where window eviction is worse by more than 0.1."""
    claim = ("StreamingLLM: with the first tokens kept as attention sinks, bpc far past the training length stays "
             "at the level of recomputing a sliding window, while plain window eviction degrades")
    if not {"sinks", "window", "sliding"} <= set(streaming):
        return claim_verdict(claim, None, "needs the sinks, window and sliding methods")
    beyond = {m: r["bpc_beyond_train_len"] for m, r in streaming.items()}
    holds = beyond["sinks"] <= beyond["sliding"] + 0.05 and beyond["window"] > beyond["sinks"] + 0.1
    return claim_verdict(claim, holds, "bpc past the training length: " + ", ".join(
        f"{m} {v:.3f}" for m, v in beyond.items()))


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
