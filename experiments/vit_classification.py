r"""
# Vision Transformer classification

*Paper:* [An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale](https://arxiv.org/abs/2010.11929) (Dosovitskiy et al., 2020)

A Vision Transformer cuts an image into $p \times p$ patches, flattens and projects each one to a
token, adds a learned position per patch and runs an ordinary encoder over the
$(H / p)(W / p)$ tokens. The class is read from the pooled output. Nothing in the architecture
knows that patches next to each other are neighbours; the position embeddings must learn it,
which is why ViTs want more data than convolutional networks.

$$z_0 = [\,x_1 E; \dots; x_N E\,] + E_{pos}, \qquad x_i \in \mathbb{R}^{p^2 C}$$

The default data set is procedural (see `experiments/data.py`): 32x32 images of five shapes at
two sizes, in any of four colours and four quadrants, on a noisy background; the 10 classes are
`shape x size`, so the model must ignore colour and position. The default 2,000 steps train in
about 7 minutes on a CPU core and reach 94% on held-out images. `--dataset mnist` and `--dataset cifar10` download the real thing (checked against
SHA-256 digests) into the cache folder.

```
python experiments/vit_classification.py
python experiments/vit_classification.py --dataset mnist --image-size 28 --patch-size 4
```
"""

from __future__ import annotations

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
    autocast,
    batch_generator,
    batches,
    check_choices,
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
from experiments.data import SHAPES, SIZES, load_cifar10, load_mnist, make_shapes  # noqa: E402
from labml_style_nn import Encoder, ViTransformerWrapper  # noqa: E402


@dataclass
class Config(RunConfig):
    dataset: str = field(default="shapes", metadata={"help": "shapes | mnist | cifar10"})
    cache_dir: str = ""
    train_size: int = field(default=8000, metadata={"help": "procedural training images"})
    test_size: int = 1000
    image_size: int = 32
    patch_size: int = 4
    dim: int = 64
    depth: int = 3
    heads: int = 4
    batch_size: int = 64
    steps: int = 2000
    lr: float = 2e-3
    warmup: int = 40
    eval_every: int = 250

    def check(self) -> None:
        check_choices("dataset", self.dataset, ("shapes", "mnist", "cifar10"), many=False)

    SMOKE = dict(train_size=64, test_size=32, dim=32, depth=1, heads=2, batch_size=16, steps=4, warmup=1,
                 eval_every=2, log_every=2)
    # `--preset gpu`: a 6-layer, 256-wide ViT, 30,000 images, ten times the steps.
    GPU = dict(train_size=30000, test_size=2000, dim=256, depth=6, heads=8, batch_size=256, steps=4000,
               warmup=200, lr=1e-3, eval_every=500)


def load_images(cfg: Config):
    """`(train_x, train_y), (test_x, test_y), class names` for the chosen data set."""
    if cfg.dataset == "shapes":
        train, test = make_shapes(cfg.train_size, seed=cfg.seed), make_shapes(cfg.test_size, seed=cfg.seed + 10_000)
        names = [f"{size} {shape}" for shape in SHAPES for size in SIZES]
        return (train.images, train.labels), (test.images, test.labels), names
    if cfg.dataset in ("mnist", "cifar10"):
        train, test = (load_mnist if cfg.dataset == "mnist" else load_cifar10)(cfg.cache_dir or None)
        return train, test, [str(i) for i in range(10)]
    raise ValueError(f"dataset: expected shapes, mnist or cifar10, got {cfg.dataset!r}")


@torch.no_grad()
def accuracy(model, images, labels, cfg: Config, device) -> float:
    model.eval()
    correct = sum((model(images[s].to(device)).argmax(-1).cpu() == labels[s]).sum().item()
                  for s in batches(len(labels), 256))
    model.train()
    return correct / len(labels)


def main(cfg: Config) -> dict:
    device = setup_distributed(cfg.device).device
    seed_everything(cfg.seed)
    out = out_dir_for(cfg, f"vit_classification/{cfg.dataset}")
    (train_x, train_y), (test_x, test_y), names = load_images(cfg)
    model = ViTransformerWrapper(image_size=cfg.image_size, patch_size=cfg.patch_size, num_classes=len(names),
                                 attn_layers=Encoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    step = 0
    if cfg.resume:
        step = load_checkpoint(cfg.resume, model=model, optimizer=optimizer, map_location=device)["step"]
    net = maybe_compile(model, cfg.compile)
    log, bar = RunLog(out, append=bool(cfg.resume)), Progress(cfg.steps, initial=step, unit="img")
    print(f"ViT: {count_parameters(model):,} parameters, {(cfg.image_size // cfg.patch_size) ** 2} patches, "
          f"{len(train_y):,} training images, chance {1 / len(names):.0%}")
    periodic = PeriodicCheckpoint(cfg.checkpoint_minutes)
    # A first Ctrl-C or SIGTERM lets the step finish, then the run is checkpointed and can be resumed.
    with StopOnInterrupt() as stop:
        while step < cfg.steps and not stop.requested:
            index = torch.randint(0, len(train_y), (cfg.batch_size,), generator=batch_generator(cfg.seed, step))
            x, y = train_x[index].to(device), train_y[index].to(device)  # (b, c, h, w), (b,)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            with autocast(device):
                logits = net(x)  # (b, classes)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            bar.update(loss=loss.item(), items=cfg.batch_size)
            if step % cfg.log_every == 0:
                log.log(step, train_loss=loss.item())
            if step % cfg.eval_every == 0 or step == cfg.steps:
                log.log(step, test_accuracy=accuracy(model, test_x, test_y, cfg, device))
            if periodic.due(step):
                save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
    if stop.requested:
        bar.close()
        save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
        interrupted(out / "checkpoint.pt", step)
    bar.close()
    save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, step=step, config=cfg)
    log.plot(("train_loss",), title=f"ViT on {cfg.dataset}")
    log.plot(("test_accuracy",), ylabel="test accuracy", filename="accuracy.png", title=f"ViT on {cfg.dataset}")
    result = {"dataset": cfg.dataset, "parameters": count_parameters(model), "steps": step,
              "test_accuracy": accuracy(model, test_x, test_y, cfg, device)}
    print(f"test accuracy {result['test_accuracy']:.1%} ({cfg.dataset}, {step} steps)")
    # "High accuracy": at least 90% on held-out images (chance is 10% on all three datasets).
    result["verdict"] = claim_verdict("the ViT reaches high accuracy (at least 90%) on its task",
                                      result["test_accuracy"] >= 0.9,
                                      f"{result['test_accuracy']:.1%} on {cfg.dataset} after {step} steps")
    log.summary(**result)
    return result


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
