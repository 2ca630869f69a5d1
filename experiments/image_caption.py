r"""
# Image captioning: a ViT encoder and a cross-attending decoder

*Paper:* [An Image is Worth 16x16 Words](https://arxiv.org/abs/2010.11929) (Dosovitskiy et al., 2020) and [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

The captioner is two library pieces joined by cross-attention: a Vision Transformer turns the
image into one embedding per patch (`return_embeddings=True` skips its classification head), and
a decoder built with `cross_attend=True` generates the caption, each layer attending to its own
past words (causal self-attention) and then to the patch embeddings $c$:

$$\operatorname{CrossAttn}(h, c) = \operatorname{softmax}\!\Big(\frac{(h W_q)(c W_k)^\top}{\sqrt{d}}\Big)\, c W_v$$

The task is the procedural shapes data set (`experiments/data.py`) with a five-word caption,
`<colour> <size> <shape> <vertical> <horizontal>`, e.g. "red large circle top left". Each word
needs a different look at the image: colour is a global statistic, shape and size a local
pattern, position the place where that pattern is. We report per-word accuracy and the
exact-match rate of greedy captions on held-out images.

```
python experiments/image_caption.py
```
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin: see experiments/common.py

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    PeriodicCheckpoint,
    Progress,
    RunConfig,
    RunLog,
    StopOnInterrupt,
    autocast,
    batch_generator,
    batches,
    claim_verdict,
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
)
from experiments.data import CAPTION_WORDS, caption_text, caption_tokens, make_shapes  # noqa: E402
from labml_style_nn import Decoder, Encoder, TransformerWrapper, ViTransformerWrapper  # noqa: E402

ATTRIBUTES = ("colour", "size", "shape", "vertical", "horizontal")


@dataclass
class Config(RunConfig):
    train_size: int = field(default=8000, metadata={"help": "procedural training images"})
    test_size: int = 500
    image_size: int = 32
    patch_size: int = 4
    dim: int = 64
    encoder_depth: int = 3
    decoder_depth: int = 2
    heads: int = 4
    batch_size: int = 64
    steps: int = 2000
    lr: float = 2e-3
    warmup: int = 40
    eval_every: int = 250

    SMOKE = dict(train_size=64, test_size=16, dim=32, encoder_depth=1, decoder_depth=1, heads=2, batch_size=16,
                 steps=4, warmup=1, eval_every=2, log_every=2)
    # `--preset gpu`: a 6-layer encoder and 4-layer decoder, 256 wide, 30,000 images, more steps.
    GPU = dict(train_size=30000, test_size=1000, dim=256, encoder_depth=6, decoder_depth=4, heads=8, batch_size=256,
               steps=4000, warmup=200, lr=1e-3, eval_every=500)


class Captioner(nn.Module):
    """A ViT encoder whose patch embeddings are the context of a cross-attending decoder."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.encoder = ViTransformerWrapper(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                            attn_layers=Encoder(dim=cfg.dim, depth=cfg.encoder_depth, heads=cfg.heads))
        self.decoder = TransformerWrapper(num_tokens=len(CAPTION_WORDS), max_seq_len=8,
                                          attn_layers=Decoder(dim=cfg.dim, depth=cfg.decoder_depth, heads=cfg.heads,
                                                              cross_attend=True))

    def forward(self, images: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        context = self.encoder(images, return_embeddings=True)  # (b, patches, d)
        return self.decoder(words, context=context)  # (b, n, vocab)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, length: int = 6) -> torch.Tensor:
        """Greedy decoding: start from `<bos>`, append the most likely next word `length` times."""
        context = self.encoder(images, return_embeddings=True)
        words = torch.ones(images.shape[0], 1, dtype=torch.long, device=images.device)  # <bos> = 1
        for _ in range(length):
            next_word = self.decoder(words, context=context)[:, -1].argmax(-1, keepdim=True)
            words = torch.cat([words, next_word], dim=1)
        return words


@torch.no_grad()
def evaluate(model: Captioner, images, tokens, device) -> dict:
    """Per-word accuracy of greedy captions, and the rate of captions right in every word."""
    model.eval()
    predicted = torch.cat([model.caption(images[s].to(device)).cpu() for s in batches(len(images), 256)])
    model.train()
    right = predicted[:, 1:6] == tokens[:, 1:6]  # (n, 5): one column per attribute
    return {"exact_match": right.all(1).float().mean().item(),
            **{name: right[:, i].float().mean().item() for i, name in enumerate(ATTRIBUTES)},
            "examples": [(caption_text(tokens[i]), caption_text(predicted[i])) for i in range(4)]}


def main(cfg: Config) -> dict:
    device = setup_distributed(cfg.device).device
    seed_everything(cfg.seed)
    out = out_dir_for(cfg, "image_caption")
    train, test = make_shapes(cfg.train_size, seed=cfg.seed), make_shapes(cfg.test_size, seed=cfg.seed + 10_000)
    train_words, test_words = caption_tokens(train), caption_tokens(test)  # (n, 7): <bos> five words <eos>
    model = Captioner(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    step = 0
    if cfg.resume:
        step = load_checkpoint(cfg.resume, model=model, optimizer=optimizer, map_location=device)["step"]
    net = maybe_compile(model, cfg.compile)
    log, bar = RunLog(out, append=bool(cfg.resume)), Progress(cfg.steps, initial=step, unit="img")
    print(f"captioner: {count_parameters(model):,} parameters")
    periodic = PeriodicCheckpoint(cfg.checkpoint_minutes)
    # A first Ctrl-C or SIGTERM lets the step finish, then the run is checkpointed and can be resumed.
    with StopOnInterrupt() as stop:
        while step < cfg.steps and not stop.requested:
            index = torch.randint(0, cfg.train_size, (cfg.batch_size,), generator=batch_generator(cfg.seed, step))
            x, words = train.images[index].to(device), train_words[index].to(device)  # (b, 3, h, w), (b, 7)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            # Teacher forcing: read words $w_{<t}$, predict $w_t$.
            with autocast(device):
                logits = net(x, words[:, :-1])  # (b, 6, vocab)
            loss = F.cross_entropy(logits.float().transpose(1, 2), words[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            bar.update(loss=loss.item(), items=cfg.batch_size)
            if step % cfg.log_every == 0:
                log.log(step, train_loss=loss.item())
            if step % cfg.eval_every == 0 or step == cfg.steps:
                scores = evaluate(model, test.images, test_words, device)
                log.log(step, **{k: v for k, v in scores.items() if k != "examples"})
            if periodic.due(step):
                save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
    if stop.requested:
        bar.close()
        save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
        interrupted(out / "checkpoint.pt", step)
    bar.close()
    save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
    log.plot(("exact_match", *ATTRIBUTES), ylabel="held-out accuracy", filename="accuracy.png",
             title="greedy captions on held-out shapes")
    result = {"parameters": count_parameters(model), "steps": step, **evaluate(model, test.images, test_words, device)}
    print("\n| " + " | ".join(("exact match", *ATTRIBUTES)) + " |\n|" + "---|" * 6)
    print("| " + " | ".join(f"{result[k]:.1%}" for k in ("exact_match", *ATTRIBUTES)) + " |")
    for truth, guess in result["examples"]:
        print(f"  truth: {truth:40s} caption: {guess}")
    # Position words are a two-way choice each: "learned" means well above the 50% of chance.
    positions = min(result["vertical"], result["horizontal"])
    result["verdict"] = claim_verdict("the captioner learns the position words too, not only colour and size",
                                      positions >= 0.9, "per-word accuracy " + ", ".join(
                                          f"{k} {result[k]:.1%}" for k in ATTRIBUTES) + " (position words: chance 50%)")
    print(f"{result['verdict']['verdict']}: {result['verdict']['evidence']}")
    log.summary(**result)
    return result


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
