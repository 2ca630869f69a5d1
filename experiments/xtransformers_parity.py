r"""
# Training parity with x-transformers

When this library and [x-transformers](https://github.com/lucidrains/x-transformers) 2.31 build the
same model from the same keywords, do they also *train* the same? This script trains one small
decoder in both, under one recipe: the same data, batches, schedule, optimiser and model size.
Options change one ingredient at a time on this library's side, so that a gap can be bisected:

* `--old-defaults`: this library's defaults before this study (a LayerNorm bias, a bias on the
  output projection, the token embedding drawn at std 0.02); without it, the defaults of today,
  which take x-transformers' choices for all three;
* `--plain-norm-gains`: norm gains stored as $\gamma$, not as $\gamma - 1$ (`norm_add_unit_offset=False`;
  with the offset, weight decay pulls a gain towards 1, not 0);
* `--xt-init`: start from x-transformers' initial weights, copied into this library's model (this
  needs today's defaults and, with the T5 bias, `--t5-scale`, which make the two models the same
  function of their parameters: forward and backward then agree to float rounding);
* `--t5-scale`: the T5 table multiplied by $\sqrt d$ in the forward pass, as x-transformers does
  (the table's entries then move $\sqrt d$ times faster under Adam);
* `--t5-init-std`: the T5 table initialised with this std instead of 1.

The [GPT-2-style recipe](gpt2_recipe.md) is the study's second recipe.

```
python experiments/xtransformers_parity.py --lib xtransformers --pos rotary --steps 500 --seed 0
python experiments/xtransformers_parity.py --lib labml --pos rotary --steps 500 --seed 0
python experiments/xtransformers_parity.py --lib labml --pos rotary --steps 500 --old-defaults --seed 0
python experiments/xtransformers_parity.py --lib labml --xt-init --t5-scale
```

Validation bits per byte are on 16 fixed batches of held-out windows. x-transformers is an optional
extra (`pip install -e ".[compare]"`).
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    RunConfig,
    RunLog,
    batch_generator,
    count_parameters,
    lr_at,
    out_dir_for,
    run_experiment,
    seed_everything,
)
from experiments.data import load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402
from labml_style_nn.models.initialisation import interleaved_rotary_rows  # noqa: E402

POSITIONS = {"t5": dict(rel_pos_bias=True), "rotary": dict(rotary_pos_emb=True), "absolute": {}}


@dataclass
class Config(RunConfig):
    lib: str = field(default="labml", metadata={"help": "labml | xtransformers"})
    pos: str = field(default="t5", metadata={"help": "t5 | rotary | absolute"})
    max_bytes: int = 2_000_000
    dim: int = 128
    depth: int = 3
    heads: int = 4
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 600
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    old_defaults: bool = field(default=False, metadata={
        "help": "this library's defaults before the study: norm and logit biases, token embedding and "
                "position table std 0.02 (the table unscaled)"})
    plain_norm_gains: bool = field(default=False, metadata={"help": "norm gains stored as gain, not gain - 1"})
    xt_init: bool = field(default=False, metadata={"help": "copy x-transformers' initial weights"})
    t5_scale: bool = field(default=False, metadata={"help": "T5 table times sqrt(dim_head) in the forward"})
    t5_init_std: float = field(default=1.0, metadata={"help": "std of the T5 table at initialisation"})

    RESUME_FILES = ()
    SMOKE = dict(dim=32, depth=1, heads=2, seq_len=16, batch_size=4, steps=3, warmup=1, max_bytes=50_000)
    # `--preset gpu`: a 6-layer, 512-wide decoder on 256-byte windows.
    GPU = dict(dim=512, depth=6, heads=8, seq_len=256, batch_size=32, steps=3000, warmup=200, lr=1e-3,
               max_bytes=4_000_000)


def build(cfg: Config) -> nn.Module:
    dim_head = 64
    if cfg.lib == "xtransformers":
        from x_transformers import Decoder as XDecoder
        from x_transformers import TransformerWrapper as XWrapper

        xkw = {"rel_pos_bias": True} if cfg.pos == "t5" else POSITIONS[cfg.pos]
        return XWrapper(num_tokens=256, max_seq_len=cfg.seq_len,
                        attn_layers=XDecoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, **xkw))
    # Only what an option changes is passed: the rest is the library's defaults.
    wrapper_kw = dict(logits_bias=True, token_emb_init_std=0.02, pos_emb_init_std=0.02) if cfg.old_defaults else {}
    stack_kw = dict(norm_bias=True) if cfg.old_defaults else {}
    if cfg.plain_norm_gains:
        stack_kw["norm_add_unit_offset"] = False
    model = TransformerWrapper(num_tokens=256, max_seq_len=cfg.seq_len, **wrapper_kw,
                               attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                                   attn_dim_head=dim_head, **stack_kw, **POSITIONS[cfg.pos]))
    rel_pos = model.attn_layers.rel_pos
    if rel_pos is not None:
        if cfg.t5_init_std != 1.0:
            nn.init.normal_(rel_pos.bias.weight, std=cfg.t5_init_std)
        if cfg.t5_scale:
            rel_pos.register_forward_hook(lambda module, args, out: out * dim_head ** 0.5)
    if cfg.xt_init:
        copy_xtransformers_init(model, cfg)
    return model


@torch.no_grad()
def copy_xtransformers_init(model: nn.Module, cfg: Config) -> None:
    """x-transformers' initial weights (same seed) into this library's model, parameter by parameter."""
    if not (cfg.t5_scale or cfg.pos != "t5") or cfg.old_defaults or cfg.plain_norm_gains:
        raise ValueError("xt_init: needs --t5-scale (for t5) and neither --old-defaults nor --plain-norm-gains, "
                         "so that the two models are the same function of their parameters")
    seed_everything(cfg.seed)
    xt = build(Config(**{**cfg.__dict__, "lib": "xtransformers"}))
    dim_head, rot = 64, 32  # x-transformers rotates half of each head
    model.token_emb.weight.copy_(xt.token_emb.emb.weight)
    if model.pos_emb is not None:  # learned absolute positions: the same table, the same $D^{-1/2}$
        model.pos_emb.emb.weight.copy_(xt.pos_emb.emb.weight)
    model.to_logits.weight.copy_(xt.to_logits.weight)
    for i, block in enumerate(model.attn_layers.blocks):
        norm, theirs = xt.attn_layers.layers[i][0][0], xt.attn_layers.layers[i][1]
        block.pre_norm.weight.copy_(norm.gamma)  # both hold gain - 1
        if block.kind == "a":
            q, k = theirs.to_q.weight, theirs.to_k.weight
            if cfg.pos == "rotary":  # their rotated pairs (2p, 2p+1) are our (p, p + r/2)
                rows = interleaved_rotary_rows(cfg.heads, dim_head, rot)
                q, k = q[rows], k[rows]
            block.fn.to_qkv.weight.copy_(torch.cat([q, k, theirs.to_v.weight]))
            block.fn.to_out.weight.copy_(theirs.to_out.weight)
        else:
            block.fn.proj_in[0].weight.copy_(theirs.ff[0][0].weight)
            block.fn.proj_in[0].bias.copy_(theirs.ff[0][0].bias)
            block.fn.proj_out.weight.copy_(theirs.ff[2].weight)
            block.fn.proj_out.bias.copy_(theirs.ff[2].bias)
    model.attn_layers.final_norm.weight.copy_(xt.attn_layers.final_norm.gamma)
    if model.attn_layers.rel_pos is not None:
        model.attn_layers.rel_pos.bias.weight.copy_(xt.attn_layers.rel_pos.relative_attention_bias.weight)


def main(cfg: Config) -> dict:
    out = out_dir_for(cfg, "xtransformers_parity")
    data = load_text("stdlib", max_bytes=cfg.max_bytes)
    seed_everything(cfg.seed)
    model = build(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(1234)
    val = [sample_windows(data.val, cfg.batch_size, cfg.seq_len + 1, generator) for _ in range(16)]
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
        bpc = sum(F.cross_entropy(model(w[:, :-1]).transpose(1, 2), w[:, 1:]).item() for w in val) / len(val)
    result = {"lib": cfg.lib, "pos": cfg.pos, "seed": cfg.seed, "old_defaults": cfg.old_defaults,
              "parameters": count_parameters(model), "val_bpc": bpc / math.log(2)}
    print(f"{cfg.lib} {cfg.pos} seed {cfg.seed}: {result['val_bpc']:.4f} bpc ({result['parameters']:,} parameters)")
    RunLog(out).summary(config=vars(cfg), **result)
    return result


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
