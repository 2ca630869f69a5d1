r"""
# A GPT-2-style recipe: this library's initialisation, nanoGPT's and x-transformers'

The second recipe of the [training parity study](xtransformers_parity.md): the same small GPT in
three hands. It is nanoGPT's recipe for a CPU (its `shakespeare_char` settings, cut to 500 steps): 4
layers, 4 heads of 32, width 128, 64-byte windows, batch 12, no biases anywhere, learned absolute
positions, the token embedding tied to the output projection, AdamW at $10^{-3}$ with
$\beta_2 = 0.99$, weight decay 0.1 on matrices and embeddings only, gradient clipping at 1, a linear
warm-up and a cosine decay to a tenth. Every run sees the same batches for a given seed.

* `--lib labml`: this library's defaults;
* `--lib labml --init nanogpt`: the same model, re-initialised as nanoGPT does: every matrix and
  embedding $\mathcal N(0, 0.02^2)$, the two projections that write into the residual stream (the
  attention's $W^O$ and the feed-forward's second matrix) $\mathcal N(0, (0.02/\sqrt{2L})^2)$ for $L$
  layers, biases zero;
* `--lib labml --old-defaults`: the library's defaults before the changes this study led to (a token
  embedding of std 0.02, a position table of std 0.02 added unscaled);
* `--lib labml --pos-emb-init-std 0.02`: today's defaults with the earlier position table only (drawn
  at std 0.02, added unscaled, as GPT-2); the default is x-transformers' table, drawn
  $\mathcal N(0, 1)$ and multiplied by $D^{-1/2}$ in the forward pass, which makes the default model
  x-transformers' model under one seed;
* `--lib xtransformers`: x-transformers 2.31.10 with the same keywords (`tie_embedding=True`,
  `ff_no_bias=True`).

Both libraries multiply the hidden states by $D^{-1/2}$ before a tied output projection unless
told otherwise (`tie_embedding_scale`); GPT-2 does not, and neither does this recipe by default
(`--tie-scale 1`). `--tie-scale 0` keeps each library's default.

```
python experiments/gpt2_recipe.py --lib labml --seed 0                    # and --seed 1, 2
python experiments/gpt2_recipe.py --lib labml --init nanogpt --seed 0
python experiments/gpt2_recipe.py --lib xtransformers --seed 0
```

Validation loss (nats per byte, and bits) is on 32 fixed batches of held-out windows.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    RunConfig,
    RunLog,
    batch_generator,
    check_choices,
    count_parameters,
    lr_at,
    out_dir_for,
    run_experiment,
    seed_everything,
)
from experiments.data import load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402


@dataclass
class Config(RunConfig):
    lib: str = field(default="labml", metadata={"help": "labml | xtransformers"})
    init: str = field(default="default", metadata={"help": "default | nanogpt (this library's model only)"})
    tie_scale: float = field(default=1.0, metadata={
        "help": "scale of the hidden states before the tied output projection: 1 is GPT-2's (no scale); "
                "0 keeps each library's default, D^-1/2 in both"})
    old_defaults: bool = field(default=False, metadata={
        "help": "this library's defaults before the parity study (token embedding std 0.02)"})
    pos_emb_init_std: float = field(default=0.0, metadata={
        "help": "std of the learned position table, added unscaled (this library's model; 0: the default, "
                "x-transformers' table drawn N(0, 1) and multiplied by D^-1/2)"})
    data: str = field(default="tinyshakespeare", metadata={"help": "stdlib | tinyshakespeare | a text file"})
    cache_dir: str = field(default="", metadata={"help": "where downloaded corpora are kept"})
    dim: int = 128
    depth: int = 4
    heads: int = 4
    dim_head: int = 32
    seq_len: int = 64
    batch_size: int = 12
    steps: int = 500
    lr: float = 1e-3
    beta2: float = 0.99
    warmup: int = 50
    weight_decay: float = 0.1
    val_batches: int = 32

    RESUME_FILES = ()
    SMOKE = dict(dim=32, depth=1, heads=2, dim_head=16, seq_len=16, batch_size=4, steps=3, warmup=1,
                 data="stdlib", val_batches=2)
    # `--preset gpu`: GPT-2 small's shape (12 layers of 768, 12 heads of 64) on 256-byte windows.
    GPU = dict(dim=768, depth=12, heads=12, dim_head=64, seq_len=256, batch_size=32, steps=3000, warmup=200)

    def check(self) -> None:
        check_choices("lib", self.lib, ("labml", "xtransformers"), many=False)
        check_choices("init", self.init, ("default", "nanogpt"), many=False)
        if self.lib == "xtransformers" and (self.init != "default" or self.old_defaults or self.pos_emb_init_std):
            raise ValueError("init, old_defaults and pos_emb_init_std: they change this library's model "
                             "(lib labml) only")
        if self.pos_emb_init_std < 0:
            raise ValueError(f"pos_emb_init_std: expected a positive std, or 0 for the default; "
                             f"got {self.pos_emb_init_std}")


def build(cfg: Config) -> nn.Module:
    # GPT-2's tied head is $h E^\top$; both libraries' default is $(D^{-1/2} h) E^\top$.
    tie = dict(tie_embedding_scale=cfg.tie_scale) if cfg.tie_scale else {}
    if cfg.lib == "xtransformers":
        from x_transformers import Decoder as XDecoder
        from x_transformers import TransformerWrapper as XWrapper

        return XWrapper(num_tokens=256, max_seq_len=cfg.seq_len, tie_embedding=True, **tie,
                        attn_layers=XDecoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                             attn_dim_head=cfg.dim_head, ff_no_bias=True))
    old = dict(token_emb_init_std=0.02, pos_emb_init_std=0.02) if cfg.old_defaults else {}
    if cfg.pos_emb_init_std or cfg.init == "nanogpt":  # nanoGPT's table is GPT-2's: added unscaled
        old["pos_emb_init_std"] = cfg.pos_emb_init_std or 0.02
    model = TransformerWrapper(num_tokens=256, max_seq_len=cfg.seq_len, tie_embedding=True, **tie, **old,
                               attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                                   attn_dim_head=cfg.dim_head, ff_no_bias=True, norm_bias=False))
    if cfg.init == "nanogpt":
        nanogpt_init(model, cfg.depth)
    return model


@torch.no_grad()
def nanogpt_init(model: nn.Module, depth: int) -> None:
    r"""nanoGPT's initialisation: matrices and embeddings $\mathcal N(0, 0.02^2)$, residual outputs $0.02/\sqrt{2L}$."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
    for block in model.attn_layers.blocks:
        # $W^O$ of attention, $W_2$ of the feed-forward: each of the $2L$ branches adds to the residual stream
        out = block.fn.to_out if block.kind == "a" else block.fn.proj_out
        nn.init.normal_(out.weight, std=0.02 / math.sqrt(2 * depth))


def main(cfg: Config) -> dict:
    out = out_dir_for(cfg, "gpt2_recipe")
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None)
    seed_everything(cfg.seed)
    model = build(cfg)
    # nanoGPT decays matrices and embeddings, not gains or biases.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, cfg.beta2))
    generator = torch.Generator().manual_seed(1234)
    val = [sample_windows(data.val, cfg.batch_size, cfg.seq_len + 1, generator) for _ in range(cfg.val_batches)]
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        x = sample_windows(data.train, cfg.batch_size, cfg.seq_len + 1, batch_generator(cfg.seed, step))
        loss = F.cross_entropy(model(x[:, :-1]).transpose(1, 2), x[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        nats = sum(F.cross_entropy(model(w[:, :-1]).transpose(1, 2), w[:, 1:]).item() for w in val) / len(val)
    result = {"lib": cfg.lib, "init": cfg.init, "old_defaults": cfg.old_defaults, "seed": cfg.seed,
              "parameters": count_parameters(model), "val_nats": nats, "val_bpc": nats / math.log(2)}
    print(f"{cfg.lib} init {cfg.init}{' (old defaults)' if cfg.old_defaults else ''} seed {cfg.seed}: "
          f"{nats:.4f} nats, {result['val_bpc']:.4f} bpc ({result['parameters']:,} parameters)")
    RunLog(out).summary(config=vars(cfg), **result)
    return result


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
