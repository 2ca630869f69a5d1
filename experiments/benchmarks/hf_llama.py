r"""
# Benchmark: a converted LLaMA-style model against Hugging Face `transformers`

`from_hf` turns a `transformers` model into one of ours with the same weights and the same logits.
Is the annotated model also as fast?  This script builds a LLaMA-style model in `transformers`
(grouped-query attention, rotary positions, RMSNorm, SwiGLU, random weights), converts it, checks
that both compute the same thing, and times two tasks on the CPU with 2 threads:

* **forward**: logits for a batch of one sequence of 512 tokens;
* **generation**: greedy decoding of 128 new tokens after a 32-token prompt, batch 1, with the
  key/value cache on both sides (`hf.generate(do_sample=False)` against
  `AutoregressiveWrapper(ours).generate(temperature=0.)`); the tokens must be identical;
* **compiled generation** (`--compiled`): the same, both sides compiled: `transformers` with its
  static cache and `torch.compile` of the decoding forward (`cache_implementation="static"` and a
  `CompileConfig` that allows the CPU), ours with `generate(..., compile=True)` (one compiled graph
  per step on a static cache, [compiled decoding](../../labml_style_nn/generation/compiled_decoding.md)).
  Goal: 1.2x.

`--family gpt2` runs the same comparison on a GPT-2 (`GPT2LMHeadModel`: learned positions,
LayerNorm, GELU, fused $W_{QKV}$ with biases) of the same width and depth; `--vocab` replaces the
vocabulary size (32000 for LLaMA, 50257 for GPT-2): with a small vocabulary the output projection
no longer dominates a step and the framework's own overhead per layer is what is measured.

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


def build(config: dict, family: str = "llama"):
    """The `transformers` model (random weights, eval mode) and our conversion of it."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if family == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(
            vocab_size=config["vocab_size"], n_embd=config["hidden_size"], n_layer=config["num_hidden_layers"],
            n_head=config["num_attention_heads"], n_positions=config["max_position_embeddings"],
            bos_token_id=1, eos_token_id=2, initializer_range=0.05)).eval()
    else:
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


def parse_arguments(argv, doc: str, sizes: dict, default_sizes: str, threads: int, extra=None):
    """`(args, sizes to run, clock)` of a comparison script: `--quick`, `--sizes`, `--rounds`, `--threads`, `--clock`.

    `extra(parser)` adds a script's own arguments."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[1])
    if extra is not None:
        extra(parser)
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


def own_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the family's)")
    parser.add_argument("--compiled", action="store_true", help="also time both sides compiled (static caches)")
    parser.add_argument("--no-forward", action="store_true", help="skip the forward over a long sequence")


def main(argv=None) -> dict[str, dict[str, float]]:
    args, sizes, clock = parse_arguments(argv, __doc__, SIZES, "small,medium", threads=2, extra=own_arguments)
    vocab = args.vocab or (50257 if args.family == "gpt2" and not args.quick else None)
    return {size: run(dict(SIZES[size], **({"vocab_size": vocab} if vocab else {})), args.quick, args.rounds,
                      args.threads, clock, family=args.family, compiled=args.compiled, forward=not args.no_forward)
            for size in sizes}


def hf_compiled_generate(hf, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """`transformers`' greedy generation on its static cache with the decoding forward compiled (also on a CPU)."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    config._compile_all_devices = True  # `transformers` compiles only on accelerators unless told
    return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=0, cache_implementation="static", compile_config=config)


def run(config: dict, quick: bool, rounds: int, threads: int, clock=time.perf_counter, family: str = "llama",
        compiled: bool = False, forward: bool = True) -> dict[str, float]:
    """Check and time one model size; print its table."""
    seq_len, prompt_len, new_tokens, rounds = (64, 8, 16, 1) if quick else (512, 32, 128, rounds)
    hf, ours = build(config, family)
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

        forward_times = time_alternating({"ours": lambda: ours(x), "transformers": lambda: hf(x).logits},
                                         rounds, clock) if forward else None
        generate = time_alternating({
            "ours": lambda: generator.generate(prompt, new_tokens, temperature=0.0),
            "transformers": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                max_new_tokens=new_tokens, do_sample=False, pad_token_id=0),
        }, rounds, clock)
        compiled_times = None
        if compiled:
            # Both compile on their first call (minutes on a CPU); the tokens must still be the eager ones.
            start = time.perf_counter()
            same_compiled = torch.equal(generator.generate(prompt, new_tokens, temperature=0.0, compile=True),
                                        ours_tokens)
            ours_compile_s = time.perf_counter() - start
            start = time.perf_counter()
            same_compiled &= torch.equal(hf_compiled_generate(hf, prompt, new_tokens)[:, prompt_len:], theirs_tokens)
            print(f"compiled: greedy tokens identical to eager: {same_compiled}; first call (compiling) "
                  f"{ours_compile_s:.0f} s ours, {time.perf_counter() - start:.0f} s transformers")
            compiled_times = time_alternating({
                "ours": lambda: generator.generate(prompt, new_tokens, temperature=0.0, compile=True),
                "transformers": lambda: hf_compiled_generate(hf, prompt, new_tokens),
            }, rounds, clock)

    results = {"generate_speedup": generate["transformers"] / generate["ours"],
               "logits_max_diff": diff, "tokens_identical": float(same)}
    rows = [(f"greedy generation, {new_tokens} tokens", generate, 1.5)]
    if forward_times is not None:
        results["forward_speedup"] = forward_times["transformers"] / forward_times["ours"]
        rows.insert(0, (f"forward, {seq_len} tokens", forward_times, 1.0))
    if compiled_times is not None:
        results["compiled_generate_speedup"] = compiled_times["transformers"] / compiled_times["ours"]
        rows.append((f"compiled generation, {new_tokens} tokens", compiled_times, 1.2))
    heads = f"{config['num_attention_heads']} heads" + (
        f" / {config['num_key_value_heads']} key-value heads" if family == "llama" else "")
    print(f"{family} model: {config['num_hidden_layers']} layers, width {config['hidden_size']}, {heads}, "
          f"vocabulary {config['vocab_size']}; {threads} threads, median of {rounds} "
          f"({'wall' if clock is time.perf_counter else 'CPU'} time)")
    print(f"{'task':<38}{'ours':>10}{'transformers':>14}{'speed-up':>10}{'goal':>7}")
    for task, t, goal in rows:
        ratio = t["transformers"] / t["ours"]
        mark = "met" if ratio >= goal else "NOT met"
        print(f"{task:<38}{t['ours']:>9.3f}s{t['transformers']:>13.3f}s{ratio:>9.2f}x{goal:>6.1f}x  {mark}")
    print(f"generation: {new_tokens / generate['ours']:.1f} tokens/s (ours), "
          f"{new_tokens / generate['transformers']:.1f} tokens/s (transformers)")
    return results


if __name__ == "__main__":
    main()
