r"""
# Benchmark: a converted LLaMA-style model against Hugging Face `transformers`

`from_hf` turns a `transformers` model into one of ours with the same weights and the same logits.
Is the annotated model also as fast?  This script builds a LLaMA-style model in `transformers`
(grouped-query attention, rotary positions, RMSNorm, SwiGLU, random weights), converts it, checks
that both compute the same thing, and times two tasks on the CPU with 2 threads:

* **forward**: logits for a batch of one sequence of 512 tokens;
* **generation**: greedy decoding of 128 new tokens after a 16-token prompt, batch 1, with the
  key/value cache on both sides (`hf.generate(do_sample=False)` against
  `AutoregressiveWrapper(ours).generate(temperature=0.)`); the tokens must be identical.

The two models run in turns in one process (ours, theirs, ours, ...), so that drifts of a shared
machine hit both alike; we report the median of each and the ratio
$\text{speed-up} = t_{\text{transformers}} / t_{\text{ours}}$.  Goals: at least 1x on the forward
(the same matrix multiplies; nothing to lose), at least 1.5x on generation (where a step is
hundreds of small kernels and the per-step overhead of the framework is what is measured).

```bash
python experiments/benchmarks/hf_llama.py             # a few minutes on 2 cores
python experiments/benchmarks/hf_llama.py --quick     # a smoke run
```

This is a script that prints figures, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from labml_style_nn import AutoregressiveWrapper, from_hf

# LLaMA-shaped models small enough for a CPU, with LLaMA's 32000-token vocabulary.  At batch 1 a
# generation step of the `medium` model (8 layers of width 512, 8 query heads sharing 2 key/value
# heads, SwiGLU of width 1408) is dominated by reading its weights in matrix-vector products, the
# same work on both sides; the `small` one (4 layers of width 256) leaves more of each step to the
# framework's own overhead.
CONFIG = dict(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
              num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
              rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
SIZES = {
    "medium": CONFIG,
    "small": dict(CONFIG, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4),
    "quick": dict(CONFIG, vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2),
}


def build(config: dict):
    """The `transformers` model (random weights, eval mode) and our conversion of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**config, initializer_range=0.05)).eval()
    hf.generation_config.eos_token_id = None  # every run decodes all its tokens
    return hf, from_hf(hf)


def time_alternating(fns: dict[str, Callable[[], object]], rounds: int, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds of each function, called in turns after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def parse_arguments(argv, doc: str, sizes: dict, default_sizes: str, threads: int):
    """`(args, sizes to run, clock)` of a comparison script: `--quick`, `--sizes`, `--rounds`, `--threads`, `--clock`."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="a tiny model, short sequences, one round")
    parser.add_argument("--sizes", default=default_sizes, help=f"comma-separated, of {', '.join(sizes)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or the process's CPU time (steadier on a machine shared with other jobs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    return args, ["quick"] if args.quick else args.sizes.split(","), clock


def main(argv=None) -> dict[str, dict[str, float]]:
    args, sizes, clock = parse_arguments(argv, __doc__, SIZES, "small,medium", threads=2)
    return {size: run(SIZES[size], args.quick, args.rounds, args.threads, clock) for size in sizes}


def run(config: dict, quick: bool, rounds: int, threads: int, clock=time.perf_counter) -> dict[str, float]:
    """Check and time one model size; print its table."""
    seq_len, prompt_len, new_tokens, rounds = (64, 8, 16, 1) if quick else (512, 16, 128, rounds)
    hf, ours = build(config)
    generator = AutoregressiveWrapper(ours)
    x = torch.randint(3, config["vocab_size"], (1, seq_len), generator=torch.Generator().manual_seed(1))
    prompt = x[:, :prompt_len]

    with torch.inference_mode():
        # The same function first: logits within 1e-4, identical greedy tokens.
        diff = (ours(x) - hf(x).logits).abs().max().item()
        theirs_tokens = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                    do_sample=False, pad_token_id=0)[:, prompt_len:]
        ours_tokens = generator.generate(prompt, new_tokens, temperature=0.0)
        same = torch.equal(ours_tokens, theirs_tokens)
        print(f"logits max |diff| = {diff:.2e}; greedy tokens identical: {same}")

        forward = time_alternating({"ours": lambda: ours(x), "transformers": lambda: hf(x).logits}, rounds, clock)
        generate = time_alternating({
            "ours": lambda: generator.generate(prompt, new_tokens, temperature=0.0),
            "transformers": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                max_new_tokens=new_tokens, do_sample=False, pad_token_id=0),
        }, rounds, clock)

    results = {"forward_speedup": forward["transformers"] / forward["ours"],
               "generate_speedup": generate["transformers"] / generate["ours"],
               "logits_max_diff": diff, "tokens_identical": float(same)}
    print(f"model: {config['num_hidden_layers']} layers, width {config['hidden_size']}, "
          f"{config['num_attention_heads']} heads / {config['num_key_value_heads']} key-value heads, "
          f"vocabulary {config['vocab_size']}; {threads} threads, median of {rounds} "
          f"({'wall' if clock is time.perf_counter else 'CPU'} time)")
    print(f"{'task':<34}{'ours':>10}{'transformers':>14}{'speed-up':>10}{'goal':>7}")
    for task, t, goal in ((f"forward, {seq_len} tokens", forward, 1.0),
                          (f"greedy generation, {new_tokens} tokens", generate, 1.5)):
        ratio = t["transformers"] / t["ours"]
        mark = "met" if ratio >= goal else "NOT met"
        print(f"{task:<34}{t['ours']:>9.3f}s{t['transformers']:>13.3f}s{ratio:>9.2f}x{goal:>6.1f}x  {mark}")
    print(f"generation: {new_tokens / generate['ours']:.1f} tokens/s (ours), "
          f"{new_tokens / generate['transformers']:.1f} tokens/s (transformers)")
    return results


if __name__ == "__main__":
    main()
