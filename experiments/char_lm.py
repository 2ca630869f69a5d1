r"""
# Character language model

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

A small decoder-only transformer learns to predict the next byte of text. It is the quickest way
to see that the library trains, and the bench on which the techniques are compared: `--variant`
switches positions, feed-forward, normalisation and token shift through the keyword API alone,
so two runs differ only in the technique.

The model predicts $p(x_{t+1} \mid x_{\le t})$ and is trained on the cross-entropy

$$\mathcal{L} = -\frac{1}{bn} \sum_{b, t} \log p(x_{b, t+1} \mid x_{b, \le t}),$$

reported in *bits per character* (bpc), $\mathcal{L} / \ln 2$, since every byte is a character
here. A model that has learned nothing scores 8 bpc (256 equally likely bytes); the default corpus,
Python's own standard library, is compressed by `gzip` to roughly 2 bpc.

Run it (about a minute on a laptop CPU, then it prints samples):

```
python experiments/char_lm.py
python experiments/char_lm.py --variant rotary+glu+rmsnorm --steps 600
python experiments/char_lm.py --data tinyshakespeare
torchrun --nproc_per_node=2 experiments/char_lm.py --device cpu
```

Variants are joined with `+`; each maps to keywords of `Decoder`:

| variant | keywords | technique |
|---|---|---|
| `absolute` | *(none)* | learned absolute positions, added to the token embeddings |
| `rotary` | `rotary_pos_emb=True` | [RoFormer](https://arxiv.org/abs/2104.09864) |
| `alibi` | `alibi_pos_emb=True` | [ALiBi](https://arxiv.org/abs/2108.12409) |
| `t5` | `rel_pos_bias=True` | [T5 relative bias](https://arxiv.org/abs/1910.10683) |
| `plain` / `glu` / `relu2` | `ff_glu=True` / `ff_relu_squared=True` | [GLU variants](https://arxiv.org/abs/2002.05202), [Primer](https://arxiv.org/abs/2109.08668) |
| `layer` / `scale` / `rms` | `use_scalenorm=True` / `use_rmsnorm=True` | [ScaleNorm](https://arxiv.org/abs/1910.05895), [RMSNorm](https://arxiv.org/abs/1910.07467) |
| `shift` | `shift_tokens=1` | token shift |
| `rezero`, `sandwich`, `memkv`, `talking` | `use_rezero`, `sandwich_norm`, `attn_num_mem_kv=8`, `attn_talking_heads` | see the library pages |
| `reversible` | `reversible=True` | [reversible layers](https://arxiv.org/abs/1707.04585): the same parameters run as two-stream couplings, trained without keeping activations |

`absolute`, `plain` and `layer` are the defaults, named so that a table can list them.
The wrapper drops its absolute position embedding by itself when the layers bring their own
positions (rotary, ALiBi, T5).
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
    PeriodicCheckpoint,
    Progress,
    RunConfig,
    RunLog,
    StopOnInterrupt,
    all_reduce_mean,
    autocast,
    batch_generator,
    cleanup_distributed,
    count_parameters,
    interrupted,
    load_checkpoint,
    lr_at,
    maybe_compile,
    out_dir_for,
    run_experiment,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    shard,
    wrap_ddp,
)
from experiments.data import TextData, load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402

VARIANTS: dict[str, dict] = {
    "absolute": {},
    "rotary": dict(rotary_pos_emb=True),
    "alibi": dict(alibi_pos_emb=True, disable_abs_pos_emb=True),
    "t5": dict(rel_pos_bias=True),
    "plain": {},
    "glu": dict(ff_glu=True),
    # GLU with the hidden width cut to 2/3 (ff_mult 8/3): the parameters of the plain feed-forward.
    "glu_eq": dict(ff_glu=True, ff_mult=8 / 3),
    "relu2": dict(ff_relu_squared=True),
    "layer": {},
    "scale": dict(use_scalenorm=True),
    "rms": dict(use_rmsnorm=True),
    "shift": dict(shift_tokens=1),
    "rezero": dict(use_rezero=True),
    "sandwich": dict(sandwich_norm=True),
    "memkv": dict(attn_num_mem_kv=8),
    "talking": dict(attn_talking_heads=True),
    "reversible": dict(reversible=True),
}


def variant_kwargs(variant: str) -> dict:
    """`"rotary+glu"` -> `{"rotary_pos_emb": True, "ff_glu": True}`."""
    kwargs: dict = {}
    for name in variant.split("+"):
        if name not in VARIANTS:
            raise ValueError(f"variant: unknown {name!r}; expected some of {', '.join(VARIANTS)} joined by '+'")
        kwargs.update(VARIANTS[name])
    return kwargs


@dataclass
class Config(RunConfig):
    variant: str = field(default="rotary", metadata={"help": "techniques joined by '+', e.g. rotary+glu+rms"})
    data: str = field(default="stdlib", metadata={"help": "stdlib | tinyshakespeare | enwik8 | path to a text file"})
    cache_dir: str = field(default="", metadata={"help": "download cache (default ~/.cache/labml_style_nn)"})
    max_bytes: int = field(default=4_000_000, metadata={"help": "cap on the stdlib corpus"})
    dim: int = 128
    depth: int = 3
    heads: int = 4
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 300
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = field(default=0, metadata={"help": "also save a checkpoint every N steps (0 = by time only, see --checkpoint-minutes)"})
    stop_at: int = field(default=0, metadata={"help": "stop (and checkpoint) at this step, as if pre-empted; 0 = run to the end"})
    sample_len: int = field(default=300, metadata={"help": "bytes to sample after training (0 = none)"})

    def check(self) -> None:
        variant_kwargs(self.variant)  # an unknown variant is a usage error, before any setup

    SMOKE = dict(dim=32, depth=1, heads=2, seq_len=32, batch_size=8, steps=6, warmup=2, eval_every=3,
                 eval_batches=2, max_bytes=200_000, sample_len=40, log_every=2)
    # `--preset gpu`: a 6-layer, 384-wide model (11M parameters) on windows of 256 bytes.
    GPU = dict(dim=384, depth=6, heads=6, seq_len=256, batch_size=64, steps=3000, warmup=200, lr=1e-3,
               eval_every=250)


def build_model(cfg: Config, vocab_size: int = 256) -> TransformerWrapper:
    return TransformerWrapper(
        num_tokens=vocab_size,
        max_seq_len=cfg.seq_len,
        attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                            attn_dropout=cfg.dropout, ff_dropout=cfg.dropout, **variant_kwargs(cfg.variant)),
    )


@torch.no_grad()
def evaluate(model, data: torch.Tensor, cfg: Config, device) -> float:
    """Mean validation loss (nats) over fixed windows: the same windows at every evaluation."""
    model.eval()
    x = sample_windows(data, cfg.eval_batches * cfg.batch_size, cfg.seq_len + 1, batch_generator(cfg.seed, -1))
    losses = []
    for chunk in x.to(device).split(cfg.batch_size):
        with autocast(device):
            logits = model(chunk[:, :-1])
        losses.append(F.cross_entropy(logits.float().transpose(1, 2), chunk[:, 1:]))
    model.train()
    return torch.stack(losses).mean().item()


@torch.no_grad()
def sample(model, prompt: torch.Tensor, length: int, *, max_seq_len: int, temperature: float = 0.8,
           top_k: int = 20) -> torch.Tensor:
    """Sample `length` tokens after `prompt` (1-d), one at a time, from the top-`k` of $p^{1/T}$."""
    model.eval()
    x = prompt[None]
    for _ in range(length):
        logits = model(x[:, -max_seq_len:])[:, -1].float() / temperature  # (1, vocab)
        kth = logits.topk(top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
        x = torch.cat([x, torch.multinomial(logits.softmax(-1), 1)], dim=1)
    return x[0, len(prompt):]


def train(cfg: Config) -> dict:
    dist = setup_distributed(cfg.device)
    device = dist.device
    seed_everything(cfg.seed)
    out = out_dir_for(cfg, f"char_lm/{cfg.variant}")
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    model = build_model(cfg, data.vocab_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    step = 0
    if cfg.resume:
        step = load_checkpoint(cfg.resume, model=model, optimizer=optimizer, map_location=device)["step"]
    net = wrap_ddp(maybe_compile(model, cfg.compile), dist)
    log = RunLog(out, enabled=dist.is_main, append=bool(cfg.resume))
    if dist.is_main:
        print(f"{cfg.variant}: {count_parameters(model):,} parameters, {len(data.train):,} training bytes, "
              f"{dist.world_size} process(es) on {device}, {cfg.batch_size // dist.world_size} rows each")
    end = cfg.stop_at or cfg.steps
    bar = Progress(cfg.steps, initial=step, enabled=dist.is_main)
    periodic = PeriodicCheckpoint(cfg.checkpoint_minutes, cfg.checkpoint_every)
    # A first Ctrl-C or SIGTERM lets the step finish, then the run is checkpointed and can be resumed.
    with StopOnInterrupt(enabled=not dist.enabled) as stop:
        while step < end and not stop.requested:
            # Every process draws the same global batch (a function of seed and step) and keeps its rows.
            x = sample_windows(data.train, cfg.batch_size, cfg.seq_len + 1, batch_generator(cfg.seed, step))
            x = shard(x, dist).to(device)  # (b / processes, n + 1)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            # Inputs are bytes $x_{\le n}$, targets the same bytes shifted by one.
            with autocast(device):
                logits = net(x[:, :-1])  # (b, n, vocab)
            loss = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            #
            train_loss = all_reduce_mean(loss, dist).item()
            bar.update(loss=train_loss, items=cfg.batch_size * cfg.seq_len)
            if step % cfg.log_every == 0:
                log.log(step, train_loss=train_loss, lr=optimizer.param_groups[0]["lr"])
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_loss = evaluate(model, data.val, cfg, device)
                log.log(step, val_loss=val_loss, val_bpc=val_loss / math.log(2))
            if dist.is_main and (periodic.due(step) or step == end):
                save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
    if stop.requested:
        bar.close()
        save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
        interrupted(out / "checkpoint.pt", step)
    bar.close()
    #
    result = {"variant": cfg.variant, "steps": step, "parameters": count_parameters(model)}
    if dist.is_main:
        val_loss = evaluate(model, data.val, cfg, device)
        result.update(val_loss=val_loss, val_bpc=val_loss / math.log(2), tokens_per_s=bar.items / max(
            1e-9, bar.bar.format_dict["elapsed"]))
        log.plot(title=f"char LM ({cfg.variant}) on {data.name}")
        if cfg.sample_len:
            prompt = TextData.encode("def ")
            text = TextData.decode(sample(model, prompt.to(device), cfg.sample_len, max_seq_len=cfg.seq_len))
            result["sample"] = "def " + text
            print(f"\nval {result['val_bpc']:.3f} bpc after {step} steps. Sample:\n{'-' * 40}\ndef {text}\n{'-' * 40}")
        log.summary(**result)
    cleanup_distributed(dist)
    return result


if __name__ == "__main__":
    run_experiment(train, Config, __doc__)
