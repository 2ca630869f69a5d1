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
   sources, byte level), and a draft with a sixth of its layer weights (two layers of width 128
   instead of four of width 256; `--draft-dim 256 --draft-depth 1` gives the one-layer draft of a
   quarter), distilled from it (below); eagerly, and with `compile=True` (the draft's steps and
   the target's passes compiled).  Goal: at least 1.5x the target alone; the target's own
   `compile=True` decoding is printed beside it, the fair baseline for the compiled rows.  The acceptance rate $\alpha$, the tokens per target pass, and
   the measured cost of each part of a round are printed, with the speed-up they predict.  The
   costs are also measured for a larger pair whose weights do not fit in the last-level cache
   (`dim=512`, depth 8 and depth 2).

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
import contextlib
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
from labml_style_nn.generation import AutoregressiveWrapper, speculative  # noqa: E402
from labml_style_nn.generation.compiled_decoding import DirectStep  # noqa: E402
from labml_style_nn.generation.kv_cache import LayersCache  # noqa: E402
from labml_style_nn.generation.static_cache import StaticLayersCache, round_up  # noqa: E402

MODEL = dict(dim=256, depth=4, heads=4, rotary_pos_emb=True)
DRAFT = dict(dim=128, depth=2, heads=4, rotary_pos_emb=True)  # a sixth of the target's layer weights
LARGE_MODEL = dict(dim=512, depth=8, heads=8, rotary_pos_emb=True)
LARGE_DRAFT = dict(dim=512, depth=2, heads=8, rotary_pos_emb=True)
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
    """Seconds `fn()` took, or the seconds it returns (a function that times only part of itself)."""
    start = clock()
    seconds = fn()
    return seconds if isinstance(seconds, float) else clock() - start


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
# a draft of the target's width starts from its embedding, first layer, final norm and output layer
# (a narrower one, the default, from scratch), and it learns to
# match the target's next-byte distribution on the training text, the forward KL
# $\mathrm{KL}(p_{\text{target}} \,\|\, q_{\text{draft}})$ averaged over positions, instead of the
# text's own next byte.  What speculative decoding needs of a draft is agreement with the target,
# and the target's whole distribution says more about that than the one byte that followed.
def train(net: TransformerWrapper, data: torch.Tensor, steps: int, batch: int, length: int, lr: float,
          seed: int = 0, teacher: Optional[TransformerWrapper] = None, generated: Optional[torch.Tensor] = None
          ) -> float:
    """Train `net`; with a `teacher`, on the KL to its distributions, and with `generated` rows
    `(N, length + 1)`, half of each batch drawn from them.  Returns the last batch's bits per byte
    (of the text; with a teacher, the KL in bits)."""
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
        if generated is not None:
            x[batch // 2:] = generated[torch.randint(0, len(generated), (batch - batch // 2,), generator=gen)]
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


def continuations(target: TransformerWrapper, data: torch.Tensor, rows: int, length: int, prompt: int = 16,
                  seed: int = 1) -> torch.Tensor:
    """`rows` greedy continuations by `target` of `prompt`-byte prompts from `data`, `(rows, length)` with the prompts."""
    gen, model = torch.Generator().manual_seed(seed), AutoregressiveWrapper(target)
    out = []
    for i in range(0, rows, 64):
        prompts = sample_windows(data, min(64, rows - i), prompt, gen)
        out.append(torch.cat((prompts, model.generate(prompts, length - prompt, temperature=0)), dim=1))
    return torch.cat(out)


def init_from(draft: TransformerWrapper, target: TransformerWrapper) -> None:
    """Copy into `draft` every weight of `target` with the same name and shape (embedding, first layers, head)."""
    theirs = target.state_dict()
    own = {k: v for k, v in draft.state_dict().items() if k in theirs and theirs[k].shape == v.shape}
    draft.load_state_dict({**draft.state_dict(), **{k: theirs[k] for k in own}})


def trained_models(args, text) -> tuple[TransformerWrapper, TransformerWrapper]:
    """The target, then the draft (distilled from it, or trained on the text), then the draft tuned
    on the target's own continuations; each stage cached under `args.cache`."""
    model_kw, draft_kw = (QUICK_MODEL, draft_config(args)) if args.quick else (MODEL, draft_config(args))
    size = "quick" if args.quick else "full"
    cache = Path(args.cache)
    target_path = cache / f"fast_decoding_{size}_target_{args.train_steps}x{args.train_batch}.pt"
    draft_path = cache / (f"fast_decoding_{size}_draft_{draft_kw['dim']}x{draft_kw['depth']}_"
                          f"{args.draft_steps}x{args.train_batch}_"
                          f"{'distilled' if args.distill else 'plain'}_from_{args.train_steps}.pt")
    tuned_path = draft_path.with_name(draft_path.stem + f"_then_{args.tune_steps}_on_continuations.pt")
    torch.manual_seed(0)
    target, draft = build(model_kw), build(draft_kw)
    stages = [("target", target, target_path, args.train_steps), ("draft", draft, draft_path, args.draft_steps)]
    if args.distill and args.tune_steps:
        stages.append(("draft, tuned on the target's continuations", draft, tuned_path, args.tune_steps))
    for i, (name, net, path, steps) in enumerate(stages):
        if path.exists() and (i + 1 == len(stages) or not stages[i + 1][2].exists() or stages[i + 1][1] is not net):
            net.load_state_dict(torch.load(path))
            print(f"loaded the trained {name} from {path}")
            continue
        if path.exists():
            continue  # the next stage, of the same network, is cached
        teacher, generated, lr = None, None, 2e-3
        if net is draft and args.distill:
            teacher = target.eval()
            if path == draft_path:
                init_from(draft, target)
            else:
                # On-policy data (DistillSpec): the target's greedy continuations of training prompts,
                # the kind of text the draft must predict when the target decodes greedily.
                generated, lr = continuations(target, text.train, 512 if not args.quick else 16, 129), 1e-3
        start = time.perf_counter()
        bpc = train(net, text.train, steps, batch=args.train_batch, length=128, lr=lr, teacher=teacher,
                    generated=generated)
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
    fns["ours, compile=True"]()  # compiles the step (once; Inductor's on-disk cache makes later processes faster)
    print(f"compiling the static step took {time.perf_counter() - start:.0f} s", flush=True)
    # Same tokens as eager decoding: sampled with one seed (the step draws the eager path's noise).
    outs = []
    for compile in (False, True):
        torch.manual_seed(1)
        outs.append(ours.generate(prompt, new_tokens, compile=compile, **sample))
    assert torch.equal(*outs), "compiled decoding differs from eager decoding"
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


#
# ### Where a speculative round's time goes
#
# A round costs $k$ draft steps and one target pass over $k + 1$ tokens, and yields on average
# $1 + k\alpha$ tokens ($\alpha$ the fraction of guesses accepted), so with costs in units of one
# cached target step
#
# $$\text{speed-up} \approx \frac{1 + k\alpha}{k\, c_{\text{draft}} + c_{\text{pass}}(k + 1)}.$$
#
# The costs are measured here directly, through a cache holding the prompt, so that the formula can
# be checked against the measured speed-up and says what it would take to reach the goal.
def round_costs(target: TransformerWrapper, draft: TransformerWrapper, prompt: torch.Tensor, ks, rounds: int,
                reps: int = 20) -> dict:
    """Seconds of a one-token target step (`"step"`), a one-token draft step (`"draft"`), and target
    passes over `j` tokens through `nn.Linear` (`("pass", j)`) and packed (`("packed", j)`); compiled:
    the draft's step, the target's one-token step and its packed passes (`("compiled", j)`)."""
    caches = {}

    def fed(net):
        if id(net) not in caches:
            cache = LayersCache(net.attn_layers, 1, prompt.shape[1] + 16)
            net(prompt, cache=cache)
            caches[id(net)] = cache
        return caches[id(net)]

    @torch.no_grad()
    def calls(net, j, packed=False):
        cache, x = fed(net), prompt[:, -j:]
        with speculative.packed_linears(net, j) if packed else contextlib.nullcontext():
            start = clock()  # (packing the weights is not timed: a `generate` call does it once)
            for _ in range(reps):
                cache.rewind(prompt.shape[1])
                net(x, cache=cache)
            return clock() - start

    @torch.no_grad()
    def compiled_calls(net, j, packed=False):
        # A call as `generate(..., compile=True)` makes it: one graph, called directly; the target's
        # passes with `packed` weights (the packed operator), the draft's steps and the target's own
        # compiled one-token step (less sampling) without.
        cache = StaticLayersCache(net.attn_layers, 1, round_up(prompt.shape[1] + 16))
        window, out = prompt[:, -j:].clone(), torch.empty(1, j, net.num_tokens)
        step = DirectStep(speculative.logits_into, AutoregressiveWrapper._compile_options(True, prompt.device))
        with speculative.packed_linears(net, j, traceable=True) if packed else contextlib.nullcontext():
            net(prompt, cache=cache)
            step(net, cache, window, out, {})  # (through Dynamo; the timed calls run the graph directly)
            start = clock()  # (packing the weights and the prompt are not timed)
            for _ in range(reps):
                cache.rewind(prompt.shape[1])
                step(net, cache, window, out, {})
            return clock() - start

    fns = {"step": lambda: calls(target, 1), "draft": lambda: calls(draft, 1),
           "compiled draft": lambda: compiled_calls(draft, 1), ("packed", 1): lambda: calls(target, 1, packed=True),
           "compiled step": lambda: compiled_calls(target, 1)}
    for k in ks:
        fns[("pass", k + 1)] = lambda j=k + 1: calls(target, j)
        fns[("packed", k + 1)] = lambda j=k + 1: calls(target, j, packed=True)
        fns[("compiled", k + 1)] = lambda j=k + 1: compiled_calls(target, j, packed=True)
    for fn in fns.values():
        fn()
    return {name: seconds / reps for name, seconds in alternate(fns, rounds).items()}


def print_costs(costs: dict, stats: dict, measured: Optional[dict] = None) -> None:
    """The cost terms of a round and the speed-up they predict: eager (eager draft, packed eager pass)
    and compiled (both compiled, as `compile=True` runs them)."""
    print("| k | alpha | tokens per pass | draft step, eager / compiled | pass of k + 1 tokens: nn.Linear / packed "
          "/ compiled | predicted speed-up, eager / compiled | measured | predicted over the compiled target "
          "|\n|---|---|---|---|---|---|---|---|")
    step = costs["step"]
    c_draft, c_compiled = costs["draft"] / step, costs["compiled draft"] / step
    for k, s in stats.items():
        c_pass, c_packed, c_graph = (costs[(kind, k + 1)] / step for kind in ("pass", "packed", "compiled"))
        predicted = [s.tokens_per_round / (k * c + p) for c, p in ((c_draft, c_packed), (c_compiled, c_graph))]
        got = " / ".join("-" if m is None else f"{m:.2f}x" for m in measured[k]) if measured else "-"
        over = predicted[1] * costs["compiled step"] / step
        print(f"| {k} | {s.acceptance_rate:.2f} | {s.tokens_per_round:.2f} | {c_draft:.2f} / {c_compiled:.2f} "
              f"| {c_pass:.2f} / {c_packed:.2f} / {c_graph:.2f} | {predicted[0]:.2f}x / {predicted[1]:.2f}x | {got} "
              f"| {over:.2f}x |", flush=True)
    print(f"\n(costs in units of one cached target step, {step * 1e3:.2f} ms; the same step with its weights "
          f"packed: {costs[('packed', 1)] / step:.2f}; compiled: {costs['compiled step'] / step:.2f})")


def case_speculative(args) -> None:
    text = load_text("stdlib", max_bytes=400_000 if args.quick else 4_000_000)
    target, draft = trained_models(args, text)
    model = AutoregressiveWrapper(target).eval()
    new_tokens = 32 if args.quick else 256
    # Prompts from the validation text: the 64 bytes after line breaks spread over its first 200 kB.
    # The acceptance rate varies from prompt to prompt (0.4-0.7 here), so several are decoded.
    breaks = (text.val[:200_000] == ord("\n")).nonzero()[:, 0]
    prompts = [text.val[int(s) + 1:int(s) + 65].long()[None]
               for s in breaks[torch.linspace(0, len(breaks) - 2, args.prompts).long()]]

    def decode_all(**kw) -> list:
        return [model.generate(prompt, new_tokens, temperature=0, **kw) for prompt in prompts]
    alone = decode_all()

    def alone_packed() -> list:
        # The same packing that speculative decoding gives the target's pass, here for one-token
        # steps: a fair baseline, since it makes the plain decoder faster too.
        with speculative.packed_linears(target, 1):
            return decode_all()
    fns = {"target alone": decode_all, "target alone, weights packed": alone_packed}
    if args.compile:
        # The fair baseline for the compiled rows: the target's own compiled decoding.
        started = time.perf_counter()
        assert all(torch.equal(a, b) for a, b in zip(decode_all(compile=True), alone, strict=True))
        print(f"compiling the target's step took {time.perf_counter() - started:.0f} s", flush=True)
        fns["target alone, compile=True"] = lambda: decode_all(compile=True)
    stats = {}
    variants = [(k, False) for k in args.num_speculative] + [(k, True) for k in args.num_speculative
                                                              if args.compile]
    for k, compiled in variants:
        name = f"draft, k={k}" + (", compile=True" if compiled else "")
        total = speculative.SpeculativeStats()

        def run(k=k, compiled=compiled, total=total):
            outs = []
            for prompt in prompts:
                outs.append(model.generate(prompt, new_tokens, temperature=0, draft=draft, num_speculative=k,
                                           compile=compiled))
                for field in ("rounds", "proposed", "accepted", "emitted"):
                    setattr(total, field, getattr(total, field) + getattr(model.speculative_stats, field))
            return outs
        started = time.perf_counter()
        same = all(torch.equal(a, b) for a, b in zip(run(), alone, strict=True))
        assert same, "speculative greedy output differs from the target's"
        if compiled:
            print(f"compiling the draft's step and the target's pass (k={k}) took {time.perf_counter() - started:.0f} s",
                  flush=True)
        stats[name] = total
        fns[name] = run
    draft_alone = AutoregressiveWrapper(draft).eval()
    fns["draft alone"] = lambda: [draft_alone.generate(prompt, new_tokens, temperature=0) for prompt in prompts]
    t = alternate(fns, args.rounds)
    new_tokens *= len(prompts)
    prompt = prompts[0]

    def params(net):
        return sum(p.numel() for n, p in net.named_parameters() if "attn_layers" in n)
    print(f"\n### Speculative decoding, greedy, {new_tokens // len(prompts)} tokens after each of {len(prompts)} "
          f"64-byte prompts from the validation text\n")
    print(f"target {MODEL if not args.quick else QUICK_MODEL} ({params(target) / 1e6:.2f}M layer weights), "
          f"draft {draft_config(args)} ({params(draft) / 1e6:.2f}M"
          f"{', distilled' if args.distill else ''}); output identical to the "
          f"target alone for every k.  Sample: {text_of(alone[0][0, :80])!r}\n")
    compiled_alone = t.get("target alone, compile=True")
    print("| decoder | tokens/s | acceptance rate | tokens per target pass | speed-up | goal | met "
          "| over the compiled target |\n|---|---|---|---|---|---|---|---|")
    for name, seconds in t.items():
        s = stats.get(name)
        acc = f"{s.acceptance_rate:.2f}" if s else "-"
        per = f"{s.tokens_per_round:.2f}" if s else "-"
        up = t["target alone"] / seconds
        goal, met = (">= 1.5x", "yes" if up >= 1.5 else "no") if s and not args.quick else ("", "")
        over = f"{compiled_alone / seconds:.2f}x" if compiled_alone else "-"
        print(f"| {name} | {new_tokens / seconds:.0f} | {acc} | {per} | {up:.2f}x | {goal} | {met} | {over} |",
              flush=True)
    eager = {k: stats[f"draft, k={k}"] for k in args.num_speculative}
    print("\n#### Where the time goes\n")
    measured = {k: (t["target alone"] / t[f"draft, k={k}"],
                    t["target alone"] / t[f"draft, k={k}, compile=True"] if args.compile else None)
                for k in args.num_speculative}
    print_costs(round_costs(target, draft, prompt, args.num_speculative, args.rounds), eager, measured)
    if args.large and not args.quick:
        # A target whose weights do not fit in the last-level cache, with a draft of a quarter of its
        # layer weights; untrained, since only the costs are measured.
        torch.manual_seed(0)
        big, small = build(LARGE_MODEL).eval(), build(LARGE_DRAFT).eval()
        print(f"\n#### A larger pair: target {LARGE_MODEL} ({params(big) / 1e6:.1f}M layer weights, "
              f"{weight_bytes(big) / 2 ** 20:.0f} MiB read per token), draft {LARGE_DRAFT} "
              f"({params(small) / 1e6:.1f}M); costs measured, speed-up predicted at the acceptance above\n")
        print_costs(round_costs(big, small, prompt, args.num_speculative, args.rounds), eager)


def draft_config(args) -> dict:
    """The draft's keywords: `DRAFT` (or `QUICK_DRAFT`) with `--draft-dim` / `--draft-depth`."""
    base = QUICK_DRAFT if args.quick else DRAFT
    return {**base, "dim": args.draft_dim or base["dim"], "depth": args.draft_depth or base["depth"]}


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
    p.add_argument("--draft-steps", type=int, default=1000, help="training steps of the draft")
    p.add_argument("--tune-steps", type=int, default=300,
                   help="then steps of the distilled draft on the target's greedy continuations (0: none)")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                   help="train the draft on the target's distributions, starting from its first layer")
    p.add_argument("--draft-dim", type=int, default=None, help=f"the draft's width (default {DRAFT['dim']})")
    p.add_argument("--draft-depth", type=int, default=None, help=f"the draft's layers (default {DRAFT['depth']})")
    p.add_argument("--train-batch", type=int, default=8, help="sequences of 128 bytes per training step")
    p.add_argument("--num-speculative", type=int, nargs="+", default=[2, 3, 4], help="guesses per target pass")
    p.add_argument("--prompts", type=int, default=4, help="prompts decoded one after the other (batch 1)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time generate(..., compile=True) with the draft (draft steps and target passes "
                        "compiled) and the target's own compile=True")
    p.add_argument("--large", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the costs of a larger pair (dim 512, depth 8 and 2)")
    p.add_argument("--cache", default=str(REPO_ROOT / "runs" / "fast_decoding"), help="where trained weights are kept")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.train_steps = 1, min(args.train_steps, 20)
        args.draft_steps, args.tune_steps = min(args.draft_steps, 20), min(args.tune_steps, 10)
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
