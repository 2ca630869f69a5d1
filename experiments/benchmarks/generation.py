r"""
# Benchmark: tokens per second of cached generation

How fast does `AutoregressiveWrapper.generate` sample with its key/value cache, next to
[x-transformers](https://github.com/lucidrains/x-transformers) 2.31.10 on the same model?

The model: a decoder with `dim=256, depth=4, heads=4, rotary_pos_emb=True` and a 256-token
vocabulary.  The task: sample 256 new tokens after a 16-token prompt with top-$k$ filtering
($k = 25$), at batch 1 and batch 16, on the CPU with 2 threads.  Both models live in one process
and run in turns (ours, theirs, ours, ...), so that drifts of a shared machine hit both alike; we
report the median over the rounds and the ratio

$$\text{speed-up} = \frac{\text{tokens/s (ours)}}{\text{tokens/s (x-transformers)}}.$$

At batch 1 a step is a few hundred tiny kernels, so what is measured is mostly the per-step
overhead: embedding only the new token, a cache written in place, one matrix multiply for $q, k, v$,
no mask, no synchronising checks.

```bash
pip install x-transformers==2.31.10          # optional: without it only our side runs
python experiments/benchmarks/generation.py             # ~2 minutes on 2 cores
python experiments/benchmarks/generation.py --quick     # a smoke run
```

This is a script that prints figures, not a test: timings depend on the machine.  On a machine
shared with other busy processes two threads can be many times slower than one (the threads wait
for each other at every small kernel); compare with `--threads 1` before trusting a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation import AutoregressiveWrapper

MODEL = dict(dim=256, depth=4, heads=4, rotary_pos_emb=True)
NUM_TOKENS, MAX_SEQ_LEN = 256, 512


def build_ours():
    net = TransformerWrapper(num_tokens=NUM_TOKENS, max_seq_len=MAX_SEQ_LEN, attn_layers=Decoder(**MODEL))
    return AutoregressiveWrapper(net).eval()


def build_theirs():
    """x-transformers' model with the same keywords, or `None` when it is not installed."""
    try:
        import x_transformers
    except ImportError:
        return None
    net = x_transformers.TransformerWrapper(num_tokens=NUM_TOKENS, max_seq_len=MAX_SEQ_LEN,
                                            attn_layers=x_transformers.Decoder(**MODEL))
    return x_transformers.AutoregressiveWrapper(net).eval()


def tokens_per_second(model, prompt: torch.Tensor, new_tokens: int) -> float:
    start = time.perf_counter()
    out = model.generate(prompt, new_tokens, filter_kwargs=dict(k=25))
    elapsed = time.perf_counter() - start
    assert out.shape == (prompt.shape[0], new_tokens)
    return prompt.shape[0] * new_tokens / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="a few tokens, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    new_tokens, rounds = (16, 1) if args.quick else (256, args.rounds)
    ours, theirs = build_ours(), build_theirs()
    if theirs is None:
        print("x-transformers is not installed (pip install x-transformers==2.31.10): timing ours only")
    print(f"decoder {MODEL}, prompt 16 tokens, {new_tokens} new tokens, top-k 25, "
          f"{args.threads} threads, {rounds} alternating rounds")
    for batch in (1, 16):
        prompt = torch.randint(0, NUM_TOKENS, (batch, 16))
        models = {"ours": ours, "x-transformers": theirs}
        models = {name: m for name, m in models.items() if m is not None}
        for m in models.values():
            m.generate(prompt, 8, filter_kwargs=dict(k=25))  # warm up
        # Alternate: ours, theirs, ours, theirs, ...
        rates = {name: [] for name in models}
        for _ in range(rounds):
            for name, m in models.items():
                rates[name].append(tokens_per_second(m, prompt, new_tokens))
        medians = {name: statistics.median(r) for name, r in rates.items()}
        line = ", ".join(f"{name} {rate:8.1f} tokens/s" for name, rate in medians.items())
        if len(medians) == 2:
            line += f", speed-up {medians['ours'] / medians['x-transformers']:.2f}x"
        print(f"batch {batch:2d}: {line}")


if __name__ == "__main__":
    main()
