r"""
# Benchmark: fast decoding, and how far it is from reading every weight once per token

Three figures for batch-1 generation on the CPU, each beside its goal:

1. **The compiled static step** (`generate(..., compile=True)`, [static cache](../../labml_style_nn/generation/static_cache.md))
   against [x-transformers](https://github.com/lucidrains/x-transformers) 2.31.10's cached `generate`
   on the same model (`dim=256, depth=4, heads=4, rotary_pos_emb=True`, 256-token vocabulary),
   256 new tokens after a 16-token prompt, top-$k$ sampling ($k = 25$).  Goal: at least 3x.
2. **The eager step** on the same task, against x-transformers.  Goal: no slower than before this
   benchmark existed (about 2x x-transformers).
3. **Speculative decoding** ([speculative](../../labml_style_nn/generation/speculative.md)), greedy:
   the same target trained for a few minutes on the embedded corpus (the Python standard library's
   sources, byte level), and a draft with a quarter of its layer weights (one layer instead of
   four), trained the same way.  Goal: at least 1.5x the target alone; the acceptance rate
   $\alpha$ and the tokens per target pass are printed.

**The bound.**  A batch-1 step multiplies one vector by every weight matrix, so it must at least
read every weight once; no decoder can produce tokens faster than

$$\text{tokens/s} \le \frac{B}{W}, \qquad W = \text{bytes of the weights read per token}, \quad
B = \text{memory bandwidth},$$

where $B$ is measured here as the bytes read plus written per second by `copy_` of a 256 MiB
tensor on the same threads, and $W$ counts every parameter except the embedding tables (of which a
step reads one row each).  The fraction of the bound reached says how much of a step is still overhead.
At these sizes the weights (12.3 MiB) fit in the 32 MiB last-level cache of the machine used, so
the DRAM bound could in principle be exceeded.

All models live in one process and run in turns (ours eager, ours compiled, x-transformers, ...),
so that drifts of a shared machine hit all alike; medians over the rounds are reported.

```bash
python experiments/benchmarks/fast_decoding.py                 # trains the two models once (cached), then times
python experiments/benchmarks/fast_decoding.py --quick         # a smoke run: tiny sizes, no goals
python experiments/benchmarks/fast_decoding.py --threads 1 --clock cpu   # steadier on a busy machine
```
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.data import load_text, sample_windows  # noqa: E402
from labml_style_nn import Decoder, TransformerWrapper  # noqa: E402
from labml_style_nn.generation import AutoregressiveWrapper  # noqa: E402

MODEL = dict(dim=256, depth=4, heads=4, rotary_pos_emb=True)
DRAFT = dict(dim=256, depth=1, heads=4, rotary_pos_emb=True)
QUICK_MODEL = dict(dim=32, depth=2, heads=2, rotary_pos_emb=True)
QUICK_DRAFT = dict(dim=32, depth=1, heads=2, rotary_pos_emb=True)
NUM_TOKENS, MAX_SEQ_LEN = 256, 512
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def build(layers: dict) -> TransformerWrapper:
    return TransformerWrapper(num_tokens=NUM_TOKENS, max_seq_len=MAX_SEQ_LEN, attn_layers=Decoder(**layers))


def build_theirs(layers: dict):
    """x-transformers' model with the same keywords, or `None` when it is not installed."""
    try:
        import x_transformers
    except ImportError:
        return None
    net = x_transformers.TransformerWrapper(num_tokens=NUM_TOKENS, max_seq_len=MAX_SEQ_LEN,
                                            attn_layers=x_transformers.Decoder(**layers))
    return x_transformers.AutoregressiveWrapper(net).eval()


#
# ## The machine: memory bandwidth, and the weights a step reads
def copy_bandwidth(numel: int = 64 * 2 ** 20, iters: int = 5) -> float:
    """Bytes read plus written per second by `dst.copy_(src)` of `numel` floats (256 MiB by default)."""
    src, dst = torch.randn(numel), torch.empty(numel)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(iters))
    return 2 * src.numel() * src.element_size() / best


def weight_bytes(net: TransformerWrapper) -> int:
    """Bytes of every weight a batch-1 step reads: every parameter, but one row of each embedding table."""
    tables = [m.weight for m in net.modules() if isinstance(m, torch.nn.Embedding)]
    rows = sum(t[0].numel() * t.element_size() for t in tables)
    return sum(p.numel() * p.element_size() for p in net.parameters() if all(p is not t for t in tables)) + rows


def _timed(fn) -> float:
    start = clock()
    fn()
    return clock() - start


def alternate(fns: dict, rounds: int) -> dict:
    """Median seconds of each function, calling them in turns."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


#
# ## A short training run for the speculative case
#
# Byte-level language modelling on the standard library's sources; AdamW with a linear warm-up and
# a cosine decay.  The weights are cached, so the timing can be rerun without training again.
#
# The draft is **distilled** from the trained target (DistillSpec, [Zhou et al., 2023](https://arxiv.org/abs/2310.08461)):
# it starts from the target's embedding, first layer, final norm and output layer, and learns to
# match the target's next-byte distribution on the training text, the forward KL
# $\mathrm{KL}(p_{\text{target}} \,\|\, q_{\text{draft}})$ averaged over positions, instead of the
# text's own next byte.  What speculative decoding needs of a draft is agreement with the target,
# and the target's whole distribution says more about that than the one byte that followed.
def train(net: TransformerWrapper, data: torch.Tensor, steps: int, batch: int, length: int, lr: float,
          seed: int = 0, teacher: Optional[TransformerWrapper] = None) -> float:
    """Train `net`; with a `teacher`, on the KL to its distributions.  Returns the last batch's
    bits per byte (of the text; with a teacher, the KL in bits)."""
    model = AutoregressiveWrapper(net).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 10)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        x = sample_windows(data, batch, length + 1, gen).long()
        if teacher is None:
            loss = model(x)
        else:
            with torch.no_grad():
                p_log = teacher(x[:, :-1]).log_softmax(dim=-1)  # (b, n, V)
            q_log = net(x[:, :-1]).log_softmax(dim=-1)
            # $\sum_x p(x) (\log p(x) - \log q(x))$, averaged over the positions
            loss = F.kl_div(q_log.flatten(0, 1), p_log.flatten(0, 1), log_target=True, reduction="batchmean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            print(f"  step {step + 1}: {loss.item() / math.log(2):.3f} bits per byte", flush=True)
    net.eval()
    return loss.item() / math.log(2)


def init_from(draft: TransformerWrapper, target: TransformerWrapper) -> None:
    """Copy into `draft` every weight of `target` with the same name and shape (embedding, first layers, head)."""
    theirs = target.state_dict()
    own = {k: v for k, v in draft.state_dict().items() if k in theirs and theirs[k].shape == v.shape}
    draft.load_state_dict({**draft.state_dict(), **{k: theirs[k] for k in own}})


def trained_models(args, text) -> tuple[TransformerWrapper, TransformerWrapper]:
    model_kw, draft_kw = (QUICK_MODEL, QUICK_DRAFT) if args.quick else (MODEL, DRAFT)
    size = "quick" if args.quick else "full"
    target_path = Path(args.cache) / f"fast_decoding_{size}_target_{args.train_steps}x{args.train_batch}.pt"
    draft_path = Path(args.cache) / (f"fast_decoding_{size}_draft_{args.draft_steps}x{args.train_batch}_"
                                     f"{'distilled' if args.distill else 'plain'}_from_{args.train_steps}.pt")
    torch.manual_seed(0)
    target, draft = build(model_kw), build(draft_kw)
    for name, net, path in (("target", target, target_path), ("draft", draft, draft_path)):
        if path.exists():
            net.load_state_dict(torch.load(path))
            print(f"loaded the trained {name} from {path}")
            continue
        teacher = None
        if name == "draft" and args.distill:
            init_from(draft, target)
            teacher = target.eval()
        steps = args.train_steps if name == "target" else args.draft_steps
        start = time.perf_counter()
        bpc = train(net, text.train, steps, batch=args.train_batch, length=128, lr=2e-3, teacher=teacher)
        what = "KL to the target" if teacher is not None else "bits per byte"
        print(f"trained the {name} ({sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters) for "
              f"{steps} steps in {time.perf_counter() - start:.0f} s: last batch {bpc:.3f} {what}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
    return target.eval(), draft.eval()


#
# ## The cases
def case_compiled(args, bandwidth: float) -> None:
    model_kw = QUICK_MODEL if args.quick else MODEL
    new_tokens = 16 if args.quick else 256
    torch.manual_seed(0)
    ours = AutoregressiveWrapper(build(model_kw)).eval()
    theirs = build_theirs(model_kw)
    prompt = torch.randint(0, NUM_TOKENS, (1, 16))
    sample = dict(filter_kwargs=dict(k=25))
    fns = {"ours, eager": lambda: ours.generate(prompt, new_tokens, **sample),
           "ours, compile=True": lambda: ours.generate(prompt, new_tokens, compile=True, **sample)}
    if theirs is not None:
        fns["x-transformers"] = lambda: theirs.generate(prompt, new_tokens, **sample)
    start = time.perf_counter()
    fns["ours, compile=True"]()  # compiles the step (once)
    print(f"compiling the static step took {time.perf_counter() - start:.0f} s", flush=True)
    for fn in fns.values():
        fn()
    t = alternate(fns, args.rounds)
    w = weight_bytes(ours.net)
    bound = bandwidth / w
    print(f"\n### Batch 1, {new_tokens} new tokens, {model_kw}, top-k 25\n")
    print(f"weights read per token {w / 2 ** 20:.1f} MiB; copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"bound {bound:.0f} tokens/s\n")
    print("| decoder | tokens/s | fraction of the bound | vs x-transformers | goal |\n|---|---|---|---|---|")
    goals = {"ours, eager": "no slower than before (about 2x)", "ours, compile=True": ">= 3x", "x-transformers": ""}
    for name, seconds in t.items():
        rate = new_tokens / seconds
        ratio = f"{t['x-transformers'] / seconds:.2f}x" if "x-transformers" in t else "-"
        print(f"| {name} | {rate:.0f} | {rate / bound:.2f} | {ratio} | {goals[name]} |", flush=True)


def case_speculative(args) -> None:
    text = load_text("stdlib", max_bytes=400_000 if args.quick else 4_000_000)
    target, draft = trained_models(args, text)
    model = AutoregressiveWrapper(target).eval()
    new_tokens = 32 if args.quick else 256
    # A prompt from the validation text: the first 64 bytes after a line break.
    start = int((text.val[:4096] == ord("\n")).nonzero()[0]) + 1
    prompt = text.val[start:start + 64].long()[None]
    alone = model.generate(prompt, new_tokens, temperature=0)
    fns = {"target alone": lambda: model.generate(prompt, new_tokens, temperature=0)}
    stats = {}
    for k in args.num_speculative:
        out = model.generate(prompt, new_tokens, temperature=0, draft=draft, num_speculative=k)
        assert torch.equal(out, alone), "speculative greedy output differs from the target's"
        stats[k] = model.speculative_stats
        fns[f"draft, k={k}"] = lambda k=k: model.generate(prompt, new_tokens, temperature=0, draft=draft,
                                                          num_speculative=k)
    draft_alone = AutoregressiveWrapper(draft).eval()
    fns["draft alone"] = lambda: draft_alone.generate(prompt, new_tokens, temperature=0)
    t = alternate(fns, args.rounds)

    def params(net):
        return sum(p.numel() for n, p in net.named_parameters() if "attn_layers" in n)
    print(f"\n### Speculative decoding, greedy, {new_tokens} tokens after a 64-byte prompt from the "
          f"validation text\n")
    print(f"target {MODEL if not args.quick else QUICK_MODEL} ({params(target) / 1e6:.2f}M layer weights), "
          f"draft {DRAFT if not args.quick else QUICK_DRAFT} ({params(draft) / 1e6:.2f}M); output identical to the "
          f"target alone for every k.  Sample: {text_of(alone[0][:80])!r}\n")
    print("| decoder | tokens/s | acceptance rate | tokens per target pass | speed-up | goal |\n|---|---|---|---|---|---|")
    for name, seconds in t.items():
        k = int(name.split("=")[1]) if name.startswith("draft, k=") else None
        s = stats.get(k)
        acc = f"{s.acceptance_rate:.2f}" if s else "-"
        per = f"{s.tokens_per_round:.2f}" if s else "-"
        goal = ">= 1.5x" if s else ""
        print(f"| {name} | {new_tokens / seconds:.0f} | {acc} | {per} | {t['target alone'] / seconds:.2f}x | {goal} |",
              flush=True)


def text_of(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="fast decoding: compiled static step, speculative decoding, the bound")
    p.add_argument("--quick", action="store_true", help="tiny models, few tokens: a smoke run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="wall time, or the process's CPU time")
    p.add_argument("--cases", default="compiled,speculative", help="comma-separated: compiled,speculative")
    p.add_argument("--train-steps", type=int, default=600, help="training steps of the target")
    p.add_argument("--draft-steps", type=int, default=None, help="training steps of the draft (default: --train-steps)")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                   help="train the draft on the target's distributions, starting from its first layer")
    p.add_argument("--train-batch", type=int, default=8, help="sequences of 128 bytes per training step")
    p.add_argument("--num-speculative", type=int, nargs="+", default=[2, 3, 4], help="guesses per target pass")
    p.add_argument("--cache", default=str(REPO_ROOT / "runs" / "fast_decoding"), help="where trained weights are kept")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.train_steps = 1, min(args.train_steps, 20)
    if args.draft_steps is None or args.quick:
        args.draft_steps = args.train_steps if args.draft_steps is None else min(args.draft_steps, 20)
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCK[args.clock]
    bandwidth = copy_bandwidth(2 ** 20 if args.quick else 64 * 2 ** 20)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, {args.rounds} alternating rounds")
    cases = args.cases.split(",")
    if "compiled" in cases:
        case_compiled(args, bandwidth)
    if "speculative" in cases:
        case_speculative(args)


if __name__ == "__main__":
    main()
