r"""
# Benchmarks against x-transformers, feedback-transformer-pytorch and Hugging Face's GPT-2

How fast is this library next to the implementations its keyword API comes from?  This script
times the same model, built with the same keywords, in `labml_style_nn` and in
[x-transformers](https://github.com/lucidrains/x-transformers) (and the Feedback Transformer in
[feedback-transformer-pytorch](https://github.com/lucidrains/feedback-transformer-pytorch)), and
prints the ratio of their times.  GPT-2-style training is also timed against `transformers`'
`GPT2LMHeadModel`, with our model converted from it (the same function, the same weights).

```bash
pip install -e ".[compare,hf]"   # x-transformers==2.31.10, feedback-transformer-pytorch==0.0.11, transformers
python experiments/benchmarks/benchmark.py              # the full run, a few minutes on 2 cores
python experiments/benchmarks/benchmark.py --quick      # tiny sizes, a smoke run for CI
```

The compared libraries are an optional extra, never a dependency: a case whose library is not installed reports
only our own time.

## Method

**Alternation.**  Both models live in one process and run in turns: ours, theirs, ours, theirs...
Slow drifts of the machine (frequency scaling, another process waking up) then hit both alike, and
the ratio of the two medians

$$\text{speed-up} = \frac{\operatorname{median}_r\, t^{\text{theirs}}_r}{\operatorname{median}_r\, t^{\text{ours}}_r}$$

is far steadier than either time.  A speed-up above 1 means we are faster.

**Peak memory.**  Tensors on the CPU are allocated by the C++ allocator, which Python's
`tracemalloc` does not see.  We measure the operating system's view instead: each model runs in a
fresh subprocess, which builds the model and its input, resets the kernel's record of its peak
resident set size to the current size (writing `5` to `/proc/self/clear_refs` on Linux), runs the
forward pass once and reads the peak (`VmHWM`).  Peak minus the size before the forward is the extra
memory the forward pass needed at its worst moment, activations and temporaries included.  A fresh
process per model keeps one model's freed memory from hiding the other's peak.  Where `/proc` is
missing, `resource.getrusage(...).ru_maxrss` deltas stand in (they cannot be reset, so they
undercount when building the model peaked higher).

**Model FLOPs utilisation.**  The FLOPs of a training step follow the usual count for a
decoder (Chowdhery et al., 2022, appendix B): $6N$ per token for the $N$ weights of the matrix
multiplies (forward $2N$, backward $4N$) plus $12\,L\,n\,D$ per token for the attention scores and
their values, counted over the full square although a causal kernel may skip half of it.  Divided
by the step time and by the rate this machine reaches on one large `fp32` matrix multiply, it says
how much of the machine the step uses.

Shapes: `b` batch, `n` tokens, `D` model width, `L` depth.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import labml_style_nn as ours  # noqa: E402


def peer(name: str):
    """The peer module `name`, or `None` when the optional extra is not installed."""
    try:
        return __import__(name)
    except ImportError:
        return None


#
# ## Sizes
@dataclass
class Sizes:
    dim: int = 256
    depth: int = 4
    heads: int = 4
    batch: int = 8
    seq: int = 256
    vocab: int = 256
    enc_seq: int = 4096
    enc_batch: int = 1
    xl_segments: int = 4
    xl_seq: int = 128
    xl_mem: int = 256
    mfu_dim: int = 512
    mfu_heads: int = 8
    fb_dim: int = 256
    fb_seq_len: int = 32
    fb_mem_len: int = 128
    fb_batch: int = 4
    fb_tokens: int = 128
    # GPT-2-style training, nanoGPT's CPU recipe (`train_shakespeare_char.py` with `--device=cpu`):
    # 4 layers, 4 heads, width 128, 64 tokens, batch 12, a 65-character vocabulary; the wide case is
    # the same at width 512 with 8 heads over 256 tokens.
    gpt_dim: int = 128
    gpt_heads: int = 4
    gpt_seq: int = 64
    gpt_wide_dim: int = 512
    gpt_wide_heads: int = 8
    gpt_wide_seq: int = 256
    gpt_batch: int = 12
    gpt_vocab: int = 65
    warmup: int = 1
    iters: int = 5


QUICK = dict(dim=32, depth=2, heads=2, batch=2, seq=32, enc_seq=128, xl_seq=16, xl_mem=32,
             mfu_dim=64, mfu_heads=2, fb_dim=32, fb_seq_len=8, fb_mem_len=16, fb_batch=2, fb_tokens=16,
             gpt_dim=32, gpt_heads=2, gpt_seq=16, gpt_wide_dim=64, gpt_wide_heads=2, gpt_wide_seq=32, gpt_batch=2,
             warmup=1, iters=2)


# Seed features switched on all at once: T5 bias, GLU, memory key/values, talking heads, sandwich
# norm, head scale, post-activation norm and token shift, in each library's spelling.
FEATURES_OURS = dict(rel_pos_bias=True, ff_glu=True, attn_num_mem_kv=16, attn_talking_heads=True,
                     sandwich_norm=True, attn_head_scale=True, ff_post_act_ln=True, shift_tokens=1)
FEATURES_XT = dict(rel_pos_bias=True, ff_glu=True, attn_num_mem_kv=16, attn_pre_talking_heads=True,
                   attn_post_talking_heads=True, sandwich_norm=True, attn_head_scale=True,
                   ff_post_act_ln=True, shift_tokens=1)


#
# ## Models
def decoder_lm(lib, s: Sizes, dim: int, heads: int, seq: int, max_mem_len: int = 0, **kw):
    """A decoder language model of either library, from the same keywords."""
    dec = lib.Decoder(dim=dim, depth=s.depth, heads=heads, attn_dim_head=dim // heads, **kw)
    extra = dict(max_mem_len=max_mem_len) if max_mem_len else {}
    return lib.TransformerWrapper(num_tokens=s.vocab, max_seq_len=seq, attn_layers=dec, **extra)


def train_step_fn(model, tokens: torch.Tensor) -> Callable[[], None]:
    """One training step: forward, next-token cross-entropy, backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inp, target = tokens[:, :-1], tokens[:, 1:]

    def step():
        logits = model(inp)
        loss = F.cross_entropy(logits.transpose(1, 2), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def xl_step_fn(model, tokens: torch.Tensor, segments: int) -> Callable[[], None]:
    """Training on `segments` consecutive segments, each attending to the memories of the last."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    chunks = tokens.chunk(segments, dim=1)

    def step():
        mems = None
        for seg in chunks:
            logits, mems = model(seg[:, :-1], mems=mems, return_mems=True)
            loss = F.cross_entropy(logits.transpose(1, 2), seg[:, 1:])
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def encoder_forward_fn(lib, s: Sizes, flash: bool):
    """Build an encoder with rotary positions and a padded batch; return its forward pass."""
    kw = dict(attn_flash=True) if flash else {}
    enc = lib.Encoder(dim=s.dim, depth=s.depth, heads=s.heads, attn_dim_head=s.dim // s.heads,
                      rotary_pos_emb=True, **kw).eval()
    x = torch.randn(s.enc_batch, s.enc_seq, s.dim)
    mask = torch.ones(s.enc_batch, s.enc_seq, dtype=torch.bool)
    mask[:, -s.enc_seq // 8:] = False  # the last eighth is padding

    def forward():
        with torch.no_grad():
            enc(x, mask=mask)
    return forward


#
# ## Timing, alternating the two models
# The clock: wall time by default; `--clock cpu` reads the process's CPU time instead, which a busy
# machine disturbs far less (other processes' time is not counted), at the price of counting the
# threads' spin-waits.
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def time_alternating(fns: dict[str, Callable[[], None]], warmup: int, iters: int) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turns."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_rate(n: int, iters: int = 5) -> float:
    """FLOP/s of an `n x n` fp32 matrix multiply: the machine's reachable peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(iters):
        t0 = clock()
        a @ b
        times.append(clock() - t0)
    return 2 * n ** 3 / min(times)


def training_flops(model, s: Sizes, dim: int, tokens: int, seq: int) -> float:
    """$6N + 12 L n D$ FLOPs per token, times the tokens of the batch (embedding lookups excluded)."""
    n_params = sum(p.numel() for name, p in model.named_parameters()
                   if p.dim() == 2 and "token_emb" not in name and "pos_emb" not in name)
    return tokens * (6 * n_params + 12 * s.depth * seq * dim)


#
# ## Peak memory, one subprocess per model
def _status_kib(field: str) -> int:
    """A field of `/proc/self/status` in KiB (`VmRSS` now, `VmHWM` the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _memory_worker(which: str, quick: bool) -> None:
    s = Sizes(**QUICK) if quick else Sizes()
    torch.manual_seed(0)
    lib = ours if which == "ours" else peer("x_transformers")
    forward = encoder_forward_fn(lib, s, flash=which != "ours")
    try:
        # Linux: reset the peak to the current size, so that only the forward pass can raise it.
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        forward()
        peak = _status_kib("VmHWM")
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        forward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_kib": peak - before}))


def peak_memory_mib(which: str, quick: bool) -> float:
    cmd = [sys.executable, __file__, "--memory-worker", which] + (["--quick"] if quick else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_kib"] / 1024


#
# ## The cases
@dataclass
class Result:
    case: str
    peer: str
    ours_s: float
    peer_s: Optional[float] = None
    goal: str = ""
    target: Optional[float] = None  # the speed-up the goal asks for
    notes: list = field(default_factory=list)

    @property
    def speedup(self) -> Optional[float]:
        return None if self.peer_s is None else self.peer_s / self.ours_s

    @property
    def of_goal(self) -> Optional[float]:
        """The speed-up over the goal's: 1 or more when the goal is met."""
        return None if self.speedup is None or self.target is None else self.speedup / self.target


def case_train(s: Sizes, features: bool) -> Result:
    xt = peer("x_transformers")
    tokens = torch.randint(0, s.vocab, (s.batch, s.seq + 1))
    kw_ours = dict(FEATURES_OURS) if features else dict(rotary_pos_emb=True)
    kw_xt = dict(FEATURES_XT) if features else dict(rotary_pos_emb=True, attn_flash=True)
    torch.manual_seed(0)
    fns = {"ours": train_step_fn(decoder_lm(ours, s, s.dim, s.heads, s.seq, **kw_ours), tokens)}
    if xt is not None:
        fns["peer"] = train_step_fn(decoder_lm(xt, s, s.dim, s.heads, s.seq, **kw_xt), tokens)
    t = time_alternating(fns, s.warmup, s.iters)
    name = "training step, many seed features" if features else "training step, rotary"
    return Result(name, "x-transformers" + ("" if features else " (attn_flash)"), t["ours"], t.get("peer"),
                  ">= 1.2x" if features else ">= 1.1x", target=1.2 if features else 1.1)


#
# ## GPT-2-style training at equal architecture
#
# nanoGPT's recipe trains with AdamW and clips the gradient's norm to 1 at each step.  Two pairs run
# in turns in one process, on the same batches:
#
# * **GPT-2 itself**: Hugging Face's `GPT2LMHeadModel` (SDPA attention, dropout 0) and ours built
#   from the same config by the [GPT-2 conversion](../../labml_style_nn/pretrained/gpt2.md), which
#   computes the same function (biases in every linear, GELU's tanh form, tied embeddings, learned
#   positions); the weights are copied and the logits compared before anything is timed;
# * **no biases** (nanoGPT's `bias=False`): `Decoder(..., ff_no_bias=True)` in both libraries, against
#   x-transformers.
def gpt_step_fn(logits_of, model, batches: list[torch.Tensor]) -> Callable[[], None]:
    """One nanoGPT training step: next-token cross-entropy, backward, clip the norm to 1, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    turn = iter(range(1 << 30))

    def step():
        tokens = batches[next(turn) % len(batches)]
        logits = logits_of(model, tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def gpt2_pair(hf, s: Sizes, dim: int, heads: int, seq: int):
    """`(ours, theirs)`: a `GPT2LMHeadModel` with SDPA attention and no dropout, and ours with its weights."""
    from labml_style_nn.pretrained import from_hf
    config = hf.GPT2Config(vocab_size=s.gpt_vocab, n_positions=seq, n_embd=dim, n_layer=s.depth, n_head=heads,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                           attn_implementation="sdpa")
    theirs = hf.GPT2LMHeadModel(config)
    if theirs.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers chose {theirs.config._attn_implementation!r} attention, not 'sdpa'")
    return from_hf(theirs).train(), theirs.train()


def case_gpt(s: Sizes, wide: bool) -> list[Result]:
    dim, heads, seq = (s.gpt_wide_dim, s.gpt_wide_heads, s.gpt_wide_seq) if wide else (s.gpt_dim, s.gpt_heads, s.gpt_seq)
    size = f"GPT-2-style training, depth {s.depth}, width {dim}, {heads} heads, batch {s.gpt_batch} x {seq}"
    hf, xt = peer("transformers"), peer("x_transformers")
    batches = [torch.randint(0, s.gpt_vocab, (s.gpt_batch, seq + 1)) for _ in range(4)]

    def ours_logits(model, t):
        return model(t)

    fns, notes = {}, []
    torch.manual_seed(0)
    if hf is not None:
        mine, theirs = gpt2_pair(hf, s, dim, heads, seq)
        with torch.no_grad():
            gap = (mine(batches[0][:, :-1]) - theirs(batches[0][:, :-1]).logits).abs().max().item()
        notes.append(f"GPT-2: logits of ours and transformers' GPT2LMHeadModel differ by at most {gap:.1e}")
        fns["ours_gpt2"] = gpt_step_fn(ours_logits, mine, batches)
        fns["hf"] = gpt_step_fn(lambda m, t: m(t).logits, theirs, batches)
    else:
        notes.append("transformers is not installed: no GPT2LMHeadModel to compare with")

    def no_bias(lib):
        dec = lib.Decoder(dim=dim, depth=s.depth, heads=heads, attn_dim_head=dim // heads, ff_no_bias=True)
        return lib.TransformerWrapper(num_tokens=s.gpt_vocab, max_seq_len=seq, attn_layers=dec, tie_embedding=True)
    fns["ours_no_bias"] = gpt_step_fn(ours_logits, no_bias(ours), batches)
    if xt is not None:
        fns["xt"] = gpt_step_fn(ours_logits, no_bias(xt), batches)
    t = time_alternating(fns, s.warmup, s.iters)
    results = []
    if "hf" in t:
        results.append(Result(f"{size}, GPT-2's biases", "transformers GPT2LMHeadModel (sdpa)",
                              t["ours_gpt2"], t["hf"], ">= 1.1x", target=1.1, notes=notes))
    results.append(Result(f"{size}, no biases", "x-transformers", t["ours_no_bias"], t.get("xt"), ">= 1.1x",
                          target=1.1, notes=[] if results else notes))
    return results


def case_encoder(s: Sizes, quick: bool) -> Result:
    xt = peer("x_transformers")
    torch.manual_seed(0)
    fns = {"ours": encoder_forward_fn(ours, s, flash=False)}
    if xt is not None:
        fns["peer"] = encoder_forward_fn(xt, s, flash=True)
    t = time_alternating(fns, s.warmup, s.iters)
    r = Result(f"encoder forward, {s.enc_seq} tokens, rotary, padding mask", "x-transformers (attn_flash)",
               t["ours"], t.get("peer"), ">= 1.2x, <= 0.5x peak memory", target=1.2)
    mem_ours = peak_memory_mib("ours", quick)
    r.notes.append(f"peak memory of the forward: ours {mem_ours:.1f} MiB")
    if xt is not None:
        mem_peer = peak_memory_mib("peer", quick)
        r.notes[-1] += f", peer {mem_peer:.1f} MiB, ratio {mem_ours / max(mem_peer, 1e-9):.2f}"
    return r


def case_xl(s: Sizes) -> Result:
    xt = peer("x_transformers")
    tokens = torch.randint(0, s.vocab, (s.batch, s.xl_segments * (s.xl_seq + 1)))
    torch.manual_seed(0)
    def make(lib):
        return decoder_lm(lib, s, s.dim, s.heads, s.xl_seq, max_mem_len=s.xl_mem, rotary_pos_emb=True)
    fns = {"ours": xl_step_fn(make(ours), tokens, s.xl_segments)}
    if xt is not None:
        fns["peer"] = xl_step_fn(make(xt), tokens, s.xl_segments)
    t = time_alternating(fns, s.warmup, s.iters)
    return Result(f"Transformer-XL, {s.xl_segments} segments of {s.xl_seq}, memory {s.xl_mem}",
                  "x-transformers", t["ours"], t.get("peer"), ">= 1.2x", target=1.2)


#
# ## The matrix products of a step, replayed alone
#
# What a step costs when everything but its matrix products were free: the products are recorded
# once (operator, shapes, strides), then replayed on random tensors of the same layout, timed in turns
# with the steps themselves.  The reference's step over this is the most any work on the rest
# (elementwise operators, Python, autograd) could gain without removing arithmetic.
_MATMULS = {"mm", "addmm", "addmm_", "bmm", "baddbmm", "_grouped_mm"}


def record_matmuls(step: Callable[[], None]) -> tuple[Callable[[], None], float]:
    """A function replaying every matrix product one call of `step` issues, and their FLOPs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    def like(t):
        return torch.randn_like(t) if torch.is_tensor(t) and t.is_floating_point() else t

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in _MATMULS:
                calls.append((func, [like(a) for a in args], dict(kwargs or {})))
            return func(*args, **(kwargs or {}))

    with Record():
        step()
    flops = 0
    for func, args, _ in calls:
        # `addmm(c, a, b)`: the product is of the second and third arguments
        a, b = args[1:3] if func.overloadpacket.__name__ in ("addmm", "addmm_", "baddbmm") else args[:2]
        flops += 2 * a.numel() * b.shape[-1]

    def replay():
        for func, args, kwargs in calls:
            func(*args, **kwargs)
    return replay, flops


def case_feedback(s: Sizes) -> Result:
    name = "Feedback Transformer fwd + bwd, GEGLU feed-forward in both"
    try:
        from labml_style_nn.feedback import FeedbackTransformer
    except ImportError:
        return Result(name, "feedback-transformer-pytorch", float("nan"), goal=">= 2x",
                      notes=["skipped: labml_style_nn.feedback.FeedbackTransformer does not exist yet"])
    fb = peer("feedback_transformer_pytorch")
    heads, dim_head = s.heads, s.fb_dim // s.heads
    kw = dict(num_tokens=s.vocab, dim=s.fb_dim, depth=s.depth, seq_len=s.fb_seq_len, mem_len=s.fb_mem_len,
              heads=heads, dim_head=dim_head)
    tokens = torch.randint(0, s.vocab, (s.fb_batch, s.fb_tokens))
    torch.manual_seed(0)

    def fwd_bwd(model):
        def step():
            model(tokens).float().mean().backward()
            model.zero_grad(set_to_none=True)
        return step
    # feedback-transformer-pytorch's feed-forward layers are GEGLU (`dim -> 8 dim -> 4 dim -> dim`);
    # ours are GELU unless `ff_glu=True`.  Equal architecture: both GEGLU, the same number of
    # multiply-adds (the parameter counts differ by 512 of 3.9M: norms and biases).
    fns = {"ours": fwd_bwd(FeedbackTransformer(ff_glu=True, **kw))}
    if fb is not None:
        fns["peer"] = fwd_bwd(fb.FeedbackTransformer(**kw))
    fns["ours"]()
    fns["matmuls"], flops = record_matmuls(fns["ours"])
    t = time_alternating(fns, s.warmup, s.iters)
    note = (f"our step's matrix products alone ({flops / 1e9:.2f} GFLOP): {1e3 * t['matmuls']:.1f} ms, "
            f"{flops / t['matmuls'] / 1e9:.0f} GFLOP/s")
    if "peer" in t:
        note += f"; the reference's step over them: {t['peer'] / t['matmuls']:.2f}x, the most without less arithmetic"
    return Result(name, "feedback-transformer-pytorch", t["ours"], t.get("peer"), ">= 2x", target=2.0,
                  notes=[note])


def case_mfu(s: Sizes) -> Result:
    xt = peer("x_transformers")
    tokens = torch.randint(0, s.vocab, (s.batch, s.seq + 1))
    torch.manual_seed(0)
    models = {"ours": decoder_lm(ours, s, s.mfu_dim, s.mfu_heads, s.seq, rotary_pos_emb=True)}
    if xt is not None:
        models["peer"] = decoder_lm(xt, s, s.mfu_dim, s.mfu_heads, s.seq, rotary_pos_emb=True, attn_flash=True)
    t = time_alternating({k: train_step_fn(m, tokens) for k, m in models.items()}, s.warmup, s.iters)
    peak = matmul_rate(512 if s.dim < 100 else 2048)
    flops = training_flops(models["ours"], s, s.mfu_dim, s.batch * s.seq, s.seq)
    mfu = {k: flops / v / peak for k, v in t.items()}
    r = Result(f"MFU of the training step, dim {s.mfu_dim}", "x-transformers (attn_flash)",
               t["ours"], t.get("peer"), ">= 85% MFU")
    r.notes.append(f"matmul peak {peak / 1e9:.1f} GFLOP/s; MFU ours {100 * mfu['ours']:.1f}%"
                   + (f", peer {100 * mfu['peer']:.1f}%" if "peer" in mfu else ""))
    return r


#
# ## The table
def main(argv=None) -> list[Result]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1].lstrip("# "))
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the goals are for 2)")
    p.add_argument("--cases", default="train,features,gpt,gpt_wide,encoder,xl,feedback,mfu",
                   help="comma-separated subset of: train,features,gpt,gpt_wide,encoder,xl,feedback,mfu")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="wall time, or the process's CPU time")
    p.add_argument("--iters", type=int, default=0, help="timed calls per model (default: 5, quick: 2)")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument("--memory-worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCK[args.clock]
    if args.memory_worker:
        _memory_worker(args.memory_worker, args.quick)
        return []
    s = Sizes(**QUICK) if args.quick else Sizes()
    s.iters = args.iters or s.iters
    runners = dict(train=lambda: case_train(s, False), features=lambda: case_train(s, True),
                   gpt=lambda: case_gpt(s, False), gpt_wide=lambda: case_gpt(s, True),
                   encoder=lambda: case_encoder(s, args.quick), xl=lambda: case_xl(s),
                   feedback=lambda: case_feedback(s), mfu=lambda: case_mfu(s))
    results: list[Result] = []
    print("| case | compared with | ours (ms) | theirs (ms) | speed-up | goal | speed-up / goal |\n"
          "|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        if name not in runners:
            raise ValueError(f"--cases: unknown case {name!r}; expected some of {sorted(runners)}")
        got = runners[name]()
        for r in got if isinstance(got, list) else [got]:
            results.append(r)
            peer_ms = "-" if r.peer_s is None else f"{1e3 * r.peer_s:.1f}"
            speed = "-" if r.speedup is None else f"{r.speedup:.2f}x"
            of_goal = "-" if r.of_goal is None else f"{r.of_goal:.3f} ({'met' if r.of_goal >= 1 else 'not met'})"
            print(f"| {r.case} | {r.peer} | {1e3 * r.ours_s:.1f} | {peer_ms} | {speed} | {r.goal} | {of_goal} |",
                  flush=True)
    for r in results:
        for note in r.notes:
            print(f"* {r.case}: {note}")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(r.__dict__, speedup=r.speedup, of_goal=r.of_goal)
                                               for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
