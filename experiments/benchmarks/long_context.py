r"""
# Benchmark: memory of rolling-window generation as the sequence grows

A sliding-window model (`attn_max_attend_past=W`) generates with a
[rolling cache](../../labml_style_nn/generation/rolling_cache.md) of $W + 1$ keys per layer, so the
memory a generation needs should not depend on how long it runs.  This script generates 1, 2, 3
and 4 times `max_seq_len` tokens and reports the peak memory of each call, next to the same model
with the growing cache (`RollingLayersCache` replaced by `LayersCache`), whose peak grows with the
length.  The goal:

$$\frac{\max_\ell \text{peak}(\ell)}{\min_\ell \text{peak}(\ell)} \le 1.10 \quad \text{for } \ell = 1\times \dots 4\times \texttt{max\_seq\_len}.$$

**Peak memory.**  Tensors on the CPU are allocated by the C++ allocator, which Python's
`tracemalloc` does not see; the PyTorch profiler with `profile_memory=True` records every
allocation and free of a tensor, so the running sum of their sizes, in time order, is the memory
the call holds beyond what existed before it, and its maximum is the call's peak.  (The profiler
slows the call down, so no speed is reported.)  On CUDA, `torch.cuda.max_memory_allocated` after a
reset gives the same quantity directly.

The model: `dim=256, depth=4, heads=4, rotary_pos_emb=True`, `max_seq_len=128`,
`attn_max_attend_past=127`, a 256-token vocabulary, batch 1, a 16-token prompt, top-$k$ sampling.

```bash
python experiments/benchmarks/long_context.py            # ~3 minutes on 2 cores
python experiments/benchmarks/long_context.py --quick    # a smoke run
```
"""

from __future__ import annotations

import argparse

import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation import AutoregressiveWrapper, LayersCache

MODEL = dict(dim=256, depth=4, heads=4, rotary_pos_emb=True)
NUM_TOKENS, PROMPT = 256, 16


def build(max_seq_len: int, device) -> AutoregressiveWrapper:
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=NUM_TOKENS, max_seq_len=max_seq_len,
                             attn_layers=Decoder(**MODEL, attn_max_attend_past=max_seq_len - 1))
    return AutoregressiveWrapper(net).to(device).eval()


def growing(total: int):
    """A cache factory that keeps every key: the growing cache, for comparison."""
    return lambda layers, batch: LayersCache(layers, batch, total)


def peak_bytes(fn, device: torch.device) -> int:
    """The most memory `fn()` held at once beyond what existed before it, in bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Allocations are positive, frees negative: the running sum is the memory held at each moment.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="a short max_seq_len: a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    max_seq_len = 32 if args.quick else args.max_seq_len
    model = build(max_seq_len, device)
    prompt = torch.randint(0, NUM_TOKENS, (1, PROMPT), device=device)
    model.generate(prompt, 8)  # warm-up: first-call allocations are not the generation's
    rows = []
    for multiple in (1, 2, 3, 4):
        total = multiple * max_seq_len
        new = total - PROMPT
        rolling = peak_bytes(lambda new=new: model.generate(prompt, new, filter_kwargs=dict(k=25)), device)
        full = peak_bytes(lambda new=new, total=total: model.generate(
            prompt, new, filter_kwargs=dict(k=25), cache_kv=growing(total)), device)
        rows.append((multiple, total, rolling, full))
    mib = 2 ** 20
    print(f"\nmodel {MODEL}, max_seq_len={max_seq_len}, attn_max_attend_past={max_seq_len - 1}, batch 1, "
          f"{device.type}, {torch.get_num_threads()} threads\n")
    print("| tokens generated | x max_seq_len | peak, rolling cache (MiB) | peak, growing cache (MiB) |")
    print("|---|---|---|---|")
    for multiple, total, rolling, full in rows:
        print(f"| {total} | {multiple}x | {rolling / mib:.2f} | {full / mib:.2f} |")
    peaks = [r[2] for r in rows]
    ratio = max(peaks) / min(peaks)
    growth = rows[-1][3] / rows[0][3]
    print("\n| figure | value | goal | met |\n|---|---|---|---|")
    print(f"| rolling peak, max / min over 1x..4x | {ratio:.3f} | <= 1.10 | {'yes' if ratio <= 1.10 else 'no'} |")
    print(f"| growing cache peak, 4x / 1x (for comparison) | {growth:.2f} | - | - |")


if __name__ == "__main__":
    main()
