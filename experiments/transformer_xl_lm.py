r"""
# Transformer-XL: segment recurrence on a character language model

*Paper:* [Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context](https://arxiv.org/abs/1901.02860) (Dai et al., 2019)

A transformer trained on segments of $n$ characters sees, at the start of each segment, almost no
context. Transformer-XL keeps the hidden states of the previous segment, one tensor per layer,
and lets the next segment attend to them as extra keys and values (gradients do not flow into
them). With $L$ layers, information can travel up to $L \cdot m$ positions back, with $m$ the
memory length, for the price of attending over $m + n$ keys instead of $n$.

The memory of layer $l$ for segment $\tau + 1$ is that layer's input on segment $\tau$:

$$\tilde{h}^{l-1}_{\tau+1} = \big[\,\mathrm{sg}(h^{l-1}_{\tau}) \circ h^{l-1}_{\tau+1}\big]$$

where $\mathrm{sg}$ stops the gradient and $\circ$ concatenates along the sequence. Absolute
positions would be ambiguous across the two segments, so the positions must be relative:
`rel_pos_bias=True` (the T5 bias), `rotary_pos_emb=True` or `alibi_pos_emb=True`.

This script trains **the same model twice** on the same stream of segments: once carrying the
memory from segment to segment (`mems=` / `return_mems=True`), once starting each segment
empty. Both are evaluated the way they were trained, on the validation stream, in bits per
character. Training reads the text as `batch_size` parallel contiguous streams, so row $r$ of
segment $\tau + 1$ continues row $r$ of segment $\tau$ and the memory is the true preceding text.

```
python experiments/transformer_xl_lm.py
python experiments/transformer_xl_lm.py --pos rotary --mem-len 128
```
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin: see experiments/common.py

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.common import (  # noqa: E402
    PeriodicCheckpoint,
    Progress,
    RunConfig,
    RunLog,
    StopOnInterrupt,
    autocast,
    check_choices,
    check_int_list,
    claim_verdict,
    count_parameters,
    interrupted,
    load_checkpoint,
    lr_at,
    maybe_compile,
    out_dir_for,
    plot_curves,
    run_experiment,
    save_checkpoint,
    seed_everything,
    setup_distributed,
)
from experiments.data import contiguous_streams, load_text  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402
from labml_style_nn.transformer_xl import FeedForward as XLFeedForward  # noqa: E402
from labml_style_nn.transformer_xl import (  # noqa: E402
    RelativeMultiHeadAttention,
    TransformerXL,
    TransformerXLLayer,
    causal_mask_with_memory,
    relative_mha,
    update_memory,
)


@dataclass
class Config(RunConfig):
    data: str = field(default="stdlib", metadata={"help": "stdlib | tinyshakespeare | enwik8 | path"})
    cache_dir: str = ""
    max_bytes: int = 2_000_000
    pos: str = field(default="rel_pos_bias", metadata={
        "help": "rel_pos_bias | rotary | alibi | xl_relative (labml.ai's Transformer-XL attention)"})
    dim: int = 128
    depth: int = 3
    heads: int = 4
    seq_len: int = field(default=16, metadata={"help": "segment length n"})
    mem_len: int = field(default=64, metadata={"help": "memory length m"})
    batch_size: int = 16
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 100
    eval_every: int = 250
    eval_segments: int = 128
    modes: str = field(default="memory,no_memory", metadata={"help": "which runs to train"})
    eval_mem_lens: str = field(default="0,8,16,32,128,256", metadata={
        "help": "also evaluate the memory model with these memory lengths (comma-separated; 0 = no memory): "
                "shorter ones show how much context it uses, longer ones whether more memory helps"})
    track_mem_lens: str = field(default="", metadata={
        "help": "at every evaluation during training, also evaluate the memory model with these memory lengths "
                "(comma-separated), to follow how the effect of a longer memory changes with training"})
    clamp_distances: bool = field(default=False, metadata={
        "help": "also evaluate the longer memories with every distance beyond the training ones scored as the "
                "farthest trained one (xl_relative only): separates unseen distances from the extra context"})
    resume: str = field(default="", metadata={"help": "folder of an earlier run (memory.pt, no_memory.pt) to resume"})

    # `--resume` takes the run folder (or either checkpoint in it).
    RESUME_FILES = ("memory.pt", "no_memory.pt")

    def check(self) -> None:
        check_choices("pos", self.pos, ("rel_pos_bias", "rotary", "alibi", "xl_relative"), many=False)
        check_choices("modes", self.modes, ("memory", "no_memory"))
        if self.track_mem_lens:
            check_int_list("track_mem_lens", self.track_mem_lens)
        if self.clamp_distances and self.pos != "xl_relative":
            raise ValueError(f"argument --clamp-distances: needs --pos xl_relative, got --pos {self.pos}")
        if self.eval_mem_lens:
            # 0 is allowed here: the memory model evaluated without memory
            items = [m.strip() for m in self.eval_mem_lens.split(",")]
            if not all(m.isdigit() for m in items):
                raise ValueError("argument --eval-mem-lens: expected comma-separated integers >= 0 "
                                 f"(0 = no memory), got {self.eval_mem_lens!r}")
    SMOKE = dict(dim=32, depth=1, heads=2, seq_len=16, mem_len=16, batch_size=4, steps=4, warmup=1, eval_every=2,
                 eval_segments=3, max_bytes=100_000, log_every=2, eval_mem_lens="32")
    # `--preset gpu`: a 25M-parameter model on longer segments, bf16 on one GPU.
    GPU = dict(dim=512, depth=8, heads=8, seq_len=128, mem_len=256, batch_size=32, steps=5000, warmup=200,
               eval_every=500, eval_segments=64, max_bytes=4_000_000, lr=1e-3, eval_mem_lens="512,1024")


class RelativeXLLM(nn.Module):
    """A byte LM on labml.ai's Transformer-XL (`transformer_xl/`): the paper's relative attention with
    its sinusoidal $R_{i-j}$ and global biases $u, v$, called like the wrapper (`mems=`, `return_mems=`).
    The feed-forward is GELU with a hidden width `d_ff` (default $4D$); `feedback_lm.py` reuses it."""

    def __init__(self, *, dim: int, depth: int, heads: int, mem_len: int, d_ff: int | None = None):
        super().__init__()
        self.max_mem_len = mem_len
        self.token_emb = nn.Embedding(256, dim)
        layer = TransformerXLLayer(d_model=dim, self_attn=RelativeMultiHeadAttention(heads, dim, 0.0),
                                   feed_forward=XLFeedForward(dim, d_ff or 4 * dim, 0.0, nn.GELU()), dropout_prob=0.0)
        self.xl = TransformerXL(layer, depth)
        self.to_logits = nn.Linear(dim, 256)

    def forward(self, x: torch.Tensor, *, mems=None, return_mems: bool = False):
        h = self.token_emb(x).transpose(0, 1)  # (n, b, D): sequence first
        mems = [m.transpose(0, 1) for m in mems] if mems else []
        mask = causal_mask_with_memory(h.shape[0], mems[0].shape[0] if mems else 0, device=h.device)
        h, new = self.xl(h, mems, mask)
        logits = self.to_logits(h).transpose(0, 1)  # (b, n, 256)
        new = update_memory(mems, new, self.max_mem_len)
        return (logits, [m.transpose(0, 1) for m in new]) if return_mems else logits


def build_model(cfg: Config) -> nn.Module:
    if cfg.pos == "xl_relative":
        return RelativeXLLM(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, mem_len=cfg.mem_len)
    positions = {"rel_pos_bias": dict(rel_pos_bias=True), "rotary": dict(rotary_pos_emb=True),
                 "alibi": dict(alibi_pos_emb=True, disable_abs_pos_emb=True)}[cfg.pos]
    return TransformerWrapper(num_tokens=256, max_seq_len=cfg.seq_len, max_mem_len=cfg.mem_len,
                              attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, **positions))


def segment(stream: torch.Tensor, index: int, n: int) -> torch.Tensor:
    """Segment `index` of every row, with one extra byte for the last target; wraps around the stream."""
    count = (stream.shape[1] - 1) // n
    start = (index % count) * n
    return stream[:, start : start + n + 1]  # (b, n + 1)


def lm_loss(model, x: torch.Tensor, mems, use_memory: bool):
    """Next-byte cross-entropy on one segment; returns the loss and the memory for the next segment."""
    logits, new_mems = model(x[:, :-1], mems=mems if use_memory else None, return_mems=True)  # (b, n, 256)
    loss = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:])
    return loss, [m.detach() for m in new_mems]


@torch.no_grad()
def evaluate(model, stream: torch.Tensor, cfg: Config, use_memory: bool, device, mem_len: int | None = None) -> float:
    """Bits per character over the first `eval_segments` consecutive validation segments.

    `mem_len` evaluates with a memory of that length instead of the training one: the model keeps
    the last `mem_len` hidden states, and its relative positions cover the other distances; 0 runs
    it without memory."""
    model.eval()
    trained_len = model.max_mem_len
    # Memory 0 runs the memory model without memory (the wrapper keeps its own length, unused)
    model.max_mem_len = mem_len or trained_len
    use_memory = use_memory and mem_len != 0
    mems, losses = None, []
    for i in range(cfg.eval_segments):
        with autocast(device):
            loss, mems = lm_loss(model, segment(stream, i, cfg.seq_len).to(device), mems, use_memory)
        losses.append(loss)
    model.max_mem_len = trained_len
    model.train()
    return torch.stack(losses).mean().item() / math.log(2)


def train(cfg: Config, use_memory: bool, data, out: Path) -> dict:
    device = setup_distributed(cfg.device).device
    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    train_stream = contiguous_streams(data.train, cfg.batch_size)  # (b, N)
    val_stream = contiguous_streams(data.val, 8)
    name = "memory" if use_memory else "no_memory"
    step, mems = 0, None
    # A run stopped during the first model has no checkpoint of the second: that one starts afresh.
    if cfg.resume and (Path(cfg.resume) / f"{name}.pt").is_file():
        state = load_checkpoint(Path(cfg.resume) / f"{name}.pt", model=model, optimizer=optimizer, map_location=device)
        step, mems = state["step"], state["extra"]["mems"]
    net = maybe_compile(model, cfg.compile)
    log = RunLog(out / name, append=bool(cfg.resume))
    bar = Progress(cfg.steps, initial=step)
    periodic = PeriodicCheckpoint(cfg.checkpoint_minutes)
    # A first Ctrl-C or SIGTERM lets the step finish, then the run is checkpointed and can be resumed.
    with StopOnInterrupt() as stop:
        while step < cfg.steps and not stop.requested:
            x = segment(train_stream, step, cfg.seq_len).to(device)
            # The stream wraps around at its end: the memory of the last segment is not the past of the first.
            if step % ((train_stream.shape[1] - 1) // cfg.seq_len) == 0:
                mems = None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            with autocast(device):
                loss, mems = lm_loss(net, x, mems, use_memory)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            bar.update(loss=loss.item(), items=x.shape[0] * cfg.seq_len)
            if step % cfg.log_every == 0:
                log.log(step, train_bpc=loss.item() / math.log(2))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                tracked = {f"val_bpc_mem{m}": evaluate(model, val_stream, cfg, True, device, mem_len=int(m))
                           for m in (cfg.track_mem_lens.split(",") if use_memory and cfg.track_mem_lens else [])}
                log.log(step, val_bpc=evaluate(model, val_stream, cfg, use_memory, device), **tracked)
            if periodic.due(step):
                save_checkpoint(out / f"{name}.pt", model=model, optimizer=optimizer, step=step, config=cfg,
                                extra={"mems": mems})
    if stop.requested:
        bar.close()
        save_checkpoint(out / f"{name}.pt", model=model, optimizer=optimizer, step=step, config=cfg,
                        extra={"mems": mems})
        interrupted(out / f"{name}.pt", step)
    bar.close()
    save_checkpoint(out / f"{name}.pt", model=model, optimizer=optimizer, step=step, config=cfg,
                    extra={"mems": mems})
    log.write_csv()
    result = {"run": name, "parameters": count_parameters(model), "steps": step,
              "val_bpc": evaluate(model, val_stream, cfg, use_memory, device), "curve": log.rows}
    if use_memory:
        # The same trained model, evaluated with longer memories than it was trained with.
        result["val_bpc_by_eval_mem_len"] = {
            m: evaluate(model, val_stream, cfg, True, device, mem_len=m) for m in eval_mem_lens(cfg)}
        if cfg.clamp_distances:
            with clamped_distances(cfg.mem_len + cfg.seq_len - 1):
                result["val_bpc_by_eval_mem_len_clamped"] = {
                    m: evaluate(model, val_stream, cfg, True, device, mem_len=m)
                    for m in eval_mem_lens(cfg) if m > cfg.mem_len}
        longest = max(eval_mem_lens(cfg))
        if longest > cfg.mem_len:
            result["attention_beyond_training_memory"] = {
                "eval_mem_len": longest, "by_layer": attention_beyond(model, val_stream, cfg, device, longest)}
    return result


@contextmanager
def clamped_distances(limit: int):
    """An evaluation probe for labml.ai's attention: distances beyond `limit` (the farthest key seen in
    training, $m + n - 1$) get the encoding $r_{limit}$, so that every key has a trained position score."""
    original = relative_mha.sinusoidal_embeddings
    relative_mha.sinusoidal_embeddings = lambda distances, d_model: original(distances.clamp(max=limit), d_model)
    try:
        yield
    finally:
        relative_mha.sinusoidal_embeddings = original


@torch.no_grad()
def attention_beyond(model, stream: torch.Tensor, cfg: Config, device, mem_len: int) -> list[float]:
    """The share of each layer's attention on the memory slots older than the training memory.

    With an evaluation memory of $M > m$ the keys of a segment are $M$ memory slots and the $n$
    segment bytes; the first $M - m$ slots are farther back than any key seen in training. This
    averages, over the queries, heads and rows of the segments after the memory has filled up, the
    attention weight on those slots. A model that ignores them gains nothing from the longer memory."""
    model.eval()
    trained_len, model.max_mem_len = model.max_mem_len, mem_len
    far = mem_len - trained_len
    sums, count, mems = [0.0] * cfg.depth, 0, None
    maps: list[torch.Tensor] = []
    # The explicit path of labml.ai's attention passes the weights `(i, j, b, h)` through its dropout
    xl_attns = [m for m in model.modules() if isinstance(m, RelativeMultiHeadAttention)]
    fused = [a.fused for a in xl_attns]
    hooks = [a.dropout.register_forward_hook(lambda _m, _i, out: maps.append(out.permute(2, 3, 0, 1)))  # (b, h, i, j)
             for a in xl_attns]
    for a in xl_attns:
        a.fused = False
    for i in range(cfg.eval_segments):
        x = segment(stream, i, cfg.seq_len).to(device)[:, :-1]
        maps.clear()
        if isinstance(model, RelativeXLLM):
            _, new = model(x, mems=mems, return_mems=True)
        else:
            _, new, attn = model(x, mems=mems, return_mems=True, return_attn=True)
            maps.extend(attn)
        full = mems is not None and mems[0].shape[1] == mem_len
        mems = [m.detach() for m in new]
        if full:
            for layer, a in enumerate(maps):  # (b, h, i, j): the first `mem_len` keys are the memory
                sums[layer] += a[..., :far].sum(-1).mean().item()
            count += 1
    for h in hooks:
        h.remove()
    for a, was_fused in zip(xl_attns, fused, strict=True):
        a.fused = was_fused
    model.max_mem_len = trained_len
    model.train()
    return [s / max(count, 1) for s in sums]


def eval_mem_lens(cfg: Config) -> list[int]:
    """The training memory and `--eval-mem-lens`, sorted."""
    return sorted({cfg.mem_len, *(int(m) for m in cfg.eval_mem_lens.split(",") if m)})


def verdict(cfg: Config, results: list[dict]) -> dict:
    """Memory lowers val bpc at a fixed segment length; a longer memory at evaluation lowers it further.

    The evidence also says how much memory the model uses (the shortest evaluated memory within
    0.005 bpc of the training one) and how much of its attention goes beyond the training memory."""
    claim = ("carrying memory lowers validation bpc at a fixed segment length, and evaluating with a longer "
             "memory than in training lowers it further")
    runs = {r["run"]: r for r in results}
    if "memory" not in runs or "no_memory" not in runs:
        return claim_verdict(claim, None, "needs both runs (--modes memory,no_memory)")
    with_mem, without = runs["memory"]["val_bpc"], runs["no_memory"]["val_bpc"]
    by_len = runs["memory"]["val_bpc_by_eval_mem_len"]
    trained = by_len[cfg.mem_len]
    longer = {m: v for m, v in by_len.items() if m > cfg.mem_len}
    evidence = (f"{cfg.pos}: {with_mem:.3f} bpc with memory {cfg.mem_len} vs {without:.3f} without; evaluated with "
                + ", ".join(f"memory {m}: {v:.3f}" for m, v in sorted(by_len.items())))
    used = min(m for m, v in by_len.items() if m <= cfg.mem_len and v - trained <= 0.005)
    evidence += f"; the bpc stops falling at memory {used} (within 0.005 of memory {cfg.mem_len})"
    if not longer:
        return claim_verdict(claim, None, evidence + "; no longer memory evaluated (--eval-mem-lens)")
    longer_helps = min(longer.values()) < trained
    evidence += f"; a longer memory {'lowers' if longer_helps else 'does not lower'} it"
    far = runs["memory"].get("attention_beyond_training_memory")
    if far:
        evidence += (f"; with memory {far['eval_mem_len']} the layers put "
                     + ", ".join(f"{100 * v:.1f}%" for v in far["by_layer"])
                     + " of their attention on the slots older than the training memory")
    return claim_verdict(claim, with_mem < without and longer_helps, evidence)


def main(cfg: Config) -> list[dict]:
    out = out_dir_for(cfg, "transformer_xl_lm")
    data = load_text(cfg.data, cache_dir=cfg.cache_dir or None, max_bytes=cfg.max_bytes)
    results = [train(cfg, mode == "memory", data, out) for mode in cfg.modes.split(",")]
    plot_curves({r["run"]: [(row["step"], row["val_bpc"]) for row in r["curve"] if "val_bpc" in row]
                 for r in results}, out / "val_bpc.png", ylabel="validation bits per character",
                title=f"segments of {cfg.seq_len}, memory {cfg.mem_len} ({cfg.pos})")
    by_len = {r["run"]: sorted(r["val_bpc_by_eval_mem_len"].items()) for r in results if "val_bpc_by_eval_mem_len" in r}
    if by_len:
        plot_curves(by_len, out / "eval_memory.png", xlabel="memory length at evaluation",
                    ylabel="validation bits per character", title=f"trained with memory {cfg.mem_len} ({cfg.pos})")
    print("\n| run | parameters | val bpc |\n|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['parameters']:,} | {r['val_bpc']:.3f} |")
    for r in results:
        for m, v in r.get("val_bpc_by_eval_mem_len", {}).items():
            print(f"| {r['run']}, evaluated with memory {m} | {r['parameters']:,} | {v:.3f} |")
        for m, v in r.get("val_bpc_by_eval_mem_len_clamped", {}).items():
            print(f"| {r['run']}, evaluated with memory {m}, distances clamped | {r['parameters']:,} | {v:.3f} |")
        if "attention_beyond_training_memory" in r:
            far = r["attention_beyond_training_memory"]
            print(f"\nattention on memory slots older than the training memory ({cfg.mem_len}) when evaluated "
                  f"with memory {far['eval_mem_len']}, per layer: "
                  + ", ".join(f"{100 * v:.1f}%" for v in far["by_layer"]))
    outcome = verdict(cfg, results)
    print(f"\n{outcome['verdict']}: {outcome['evidence']}")
    RunLog(out).summary(config=vars(cfg), results=[{k: v for k, v in r.items() if k != "curve"} for r in results],
                        verdict=outcome)
    return results


if __name__ == "__main__":
    run_experiment(main, Config, __doc__)
