r"""
# Benchmark: the mixture-of-experts layer against Hugging Face's Mixtral

`from_hf` turns a `transformers` Mixtral into one of ours with the same weights
([Mixtral page](../../labml_style_nn/pretrained/mixtral.md)).  This script builds a small Mixtral
with random weights, converts it, checks that both compute the same thing, and times on the CPU:

* **the sparse-MoE block alone** (`MixtralSparseMoeBlock` against our `MixtureOfExperts`, the same
  weights): a forward over 256 tokens, and one decoding step of 1 and of 8 tokens;
* **generation**: greedy decoding of 64 tokens after a 16-token prompt, batch 1, cached on both
  sides (`hf.generate(do_sample=False)` against `AutoregressiveWrapper(ours).generate(temperature=0.)`);
  the tokens must be identical.

`transformers` 5 has several implementations of the experts; on the CPU it picks `grouped_mm`
(sorted tokens, `torch.nn.functional.grouped_mm`); `eager` loops over the experts that have tokens.
Both are timed.  The runs alternate (ours, theirs, ours, ...) in one process so that a shared
machine's drifts hit all alike; each timed run of a block calls it 20 to 200 times in a row (one
sub-millisecond call is too short to time on a shared machine); each figure is a median and the ratio is
$t_{\text{transformers}} / t_{\text{ours}}$.  Goal: 1.5x at small sizes.

**The ceiling.**  For each block the script also records our block's matrix products once
(operator, shapes, strides: the two grouped products, or the batched products of the dense step) and
replays them alone on random tensors, timed in turns with the blocks: `transformers`' block over
that replay is the most any work on the rest (the small operators, Python) could gain without
removing arithmetic.

**The forms of the product** (`--forms`): the expert products of a forward at the benchmark's
shapes (512 assignments over 8 experts, as the router of the check splits them) and of an 8-token
step (16 assignments), timed alone in four forms: `grouped_mm`, one `mm` per expert, one `bmm` with
every expert's rows padded to the largest group, and the dense `bmm` of every expert on every token.
It prints the multiply-adds per second each reaches, counting only the assignments' own work.

```bash
python experiments/benchmarks/moe.py                 # a few minutes on 2 cores
python experiments/benchmarks/moe.py --clock cpu     # process CPU time: steadier on a busy machine
python experiments/benchmarks/moe.py --forms         # also the product forms
python experiments/benchmarks/moe.py --quick         # a smoke run
```

A script that prints figures, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `python experiments/benchmarks/moe.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from experiments.benchmarks.benchmark import record_matmuls  # noqa: E402
from experiments.benchmarks.hf_llama import parse_arguments, time_alternating  # noqa: E402
from labml_style_nn import AutoregressiveWrapper, from_hf  # noqa: E402

CONFIG = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=512,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
SIZES = {
    "small": CONFIG,
    "tiny": dict(CONFIG, hidden_size=64, intermediate_size=128),
    "quick": dict(CONFIG, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_local_experts=4),
}


def build(config: dict):
    """The `transformers` Mixtral (random weights, eval mode), a copy with eager experts, and ours."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    hf = MixtralForCausalLM(MixtralConfig(**config, initializer_range=0.05)).eval()
    hf.generation_config.eos_token_id = None  # every run decodes all its tokens
    eager = copy.deepcopy(hf)
    eager.config._experts_implementation = "eager"
    for layer in eager.model.layers:
        layer.mlp.experts.config = eager.config
    return hf, eager, from_hf(hf)


def repeated(fn, calls: int):
    """A function that runs `fn()` `calls` times."""
    def run():
        for _ in range(calls):
            fn()
    return run


def main(argv=None) -> dict[str, dict[str, float]]:
    def forms_argument(parser):
        parser.add_argument("--forms", action="store_true", help="also time the forms of the expert products")

    args, sizes, clock = parse_arguments(argv, __doc__, SIZES, "tiny,small", threads=1, extra=forms_argument)
    results = {size: run(SIZES[size], args.quick, 1 if args.quick else args.rounds, args.threads, clock)
               for size in sizes}
    if args.forms:
        for size in sizes:
            product_forms(SIZES[size], 1 if args.quick else args.rounds, clock)
    return results


def product_forms(config: dict, rounds: int, clock) -> None:
    """Multiply-adds per second of four forms of the two expert products, at a forward's and a step's counts."""
    E, D, H = config["num_local_experts"], config["hidden_size"], config["intermediate_size"]
    g = torch.Generator().manual_seed(2)
    w_in, w_out = torch.randn(E, D, 2 * H, generator=g), torch.randn(E, H, D, generator=g)
    router = torch.randn(D, E, generator=g)
    print(f"Expert products, width {D}, {E} experts of width {H}: G multiply-adds/s (median of {rounds})")
    for tokens in (256, 8):
        x = torch.randn(tokens, D, generator=g)
        expert = (x @ router).topk(config["num_experts_per_tok"], dim=-1).indices.flatten()
        counts = torch.bincount(expert, minlength=E)
        forms = _forms(x, counts, w_in, w_out)
        calls = max(1, 4096 // len(expert))
        t = time_alternating({name: repeated(fn, calls) for name, fn in forms.items()}, rounds, clock)
        useful = len(expert) * D * 3 * H  # both products, the assignments' rows only
        print(f"  {tokens} tokens, {len(expert)} assignments (counts {counts.tolist()}): " + ", ".join(
            f"{name} {t[name] / calls * 1e6:.1f} us = {useful / (t[name] / calls) / 1e9:.0f} G/s" for name in forms))


def _forms(x: torch.Tensor, counts: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor) -> dict:
    """The two products of the experts with `counts` rows each, in four forms (random rows of the right shapes)."""
    import torch.nn.functional as F

    (E, D, H), S, m = w_out.transpose(1, 2).shape, int(counts.sum()), int(counts.max())
    ends = torch.cumsum(counts, 0, dtype=torch.int32)
    blocks = [(e, a, b) for e, (a, b) in enumerate(zip([0] + ends.tolist()[:-1], ends.tolist(), strict=True)) if b > a]
    rows, hidden = torch.randn(S, D), torch.randn(S, H)
    padded_rows, padded_hidden, dense_hidden = torch.randn(E, m, D), torch.randn(E, m, H), torch.randn(E, len(x), H)
    return {
        "grouped_mm": lambda: (F.grouped_mm(rows, w_in, offs=ends), F.grouped_mm(hidden, w_out, offs=ends)),
        "mm per expert": lambda: [(rows[a:b] @ w_in[e], hidden[a:b] @ w_out[e]) for e, a, b in blocks],
        f"bmm padded to {m}": lambda: (torch.bmm(padded_rows, w_in), torch.bmm(padded_hidden, w_out)),
        "bmm dense": lambda: (torch.bmm(x.expand(E, len(x), D), w_in), torch.bmm(dense_hidden, w_out)),
    }


def run(config: dict, quick: bool, rounds: int, threads: int, clock) -> dict[str, float]:
    """Check and time one size; print its table."""
    tokens, prompt_len, new_tokens = (32, 8, 8) if quick else (256, 16, 64)
    hf, eager, ours = build(config)
    theirs_block, eager_block = hf.model.layers[0].mlp, eager.model.layers[0].mlp
    ours_block = ours.attn_layers.blocks[1].fn
    generator = AutoregressiveWrapper(ours)
    g = torch.Generator().manual_seed(1)
    dim = config["hidden_size"]
    x = torch.randint(3, config["vocab_size"], (1, tokens), generator=g)
    prompt = x[:, :prompt_len]

    def hf_generate(model):
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=0)[:, prompt_len:]

    rows, results = [], {}
    with torch.inference_mode():
        h = torch.randn(1, tokens, dim, generator=g)
        block_diff = (ours_block(h) - theirs_block(h)).abs().max().item()
        diff = (ours(x) - hf(x).logits).abs().max().item()
        same = torch.equal(generator.generate(prompt, new_tokens, temperature=0.0), hf_generate(hf))
        print(f"block max |diff| = {block_diff:.2e}, logits max |diff| = {diff:.2e}; greedy tokens identical: {same}; "
              f"transformers' experts: {hf.config._experts_implementation} (its default)")
        # Each timed call of a block runs it `calls` times in a row: one sub-millisecond call is too short
        # for a process clock on a shared machine
        tasks = [(f"MoE block forward, {tokens} tokens", h, 20),
                 ("MoE block, decoding step of 1 token", h[:, :1], 200),
                 ("MoE block, decoding step of 8 tokens", h[0, :8, None], 100)]
        for name, inp, calls in tasks:
            calls = 1 if quick else calls
            # Our block's matrix products, recorded once, replayed alone (the ceiling)
            products, _ = record_matmuls(lambda inp=inp: ours_block(inp))
            fns = {side: repeated(lambda block=block, inp=inp: block(inp), calls) for side, block in
                   (("ours", ours_block), ("transformers", theirs_block), ("eager", eager_block))}
            t = time_alternating(dict(fns, products=repeated(products, calls)), rounds, clock)
            rows.append((name, {side: seconds / calls for side, seconds in t.items()}))
        t = time_alternating({"ours": lambda: generator.generate(prompt, new_tokens, temperature=0.0),
                              "transformers": lambda: hf_generate(hf), "eager": lambda: hf_generate(eager)},
                             rounds, clock)
        rows.append((f"greedy generation, {new_tokens} tokens", t))

    print(f"Mixtral: {config['num_hidden_layers']} layers, width {dim}, {config['num_local_experts']} experts of "
          f"width {config['intermediate_size']}, top-{config['num_experts_per_tok']}; {threads} thread(s), median of "
          f"{rounds} ({'wall' if clock is time.perf_counter else 'CPU'} time)")
    print(f"{'task':<40}{'ours':>10}{'grouped_mm':>12}{'eager':>10}{'vs grouped':>12}{'vs eager':>10}{'goal':>6}"
          f"{'':>9}{'our products alone':>20}{'ceiling':>9}")
    for name, t in rows:
        vs_grouped, vs_eager = t["transformers"] / t["ours"], t["eager"] / t["ours"]
        results[name] = vs_grouped
        mark = "met" if min(vs_grouped, vs_eager) >= 1.5 else "NOT met"
        ceiling = (f"{t['products'] * 1e3:>18.3f}ms{t['transformers'] / t['products']:>8.2f}x" if "products" in t
                   else "")
        print(f"{name:<40}{t['ours'] * 1e3:>8.2f}ms{t['transformers'] * 1e3:>10.2f}ms{t['eager'] * 1e3:>8.2f}ms"
              f"{vs_grouped:>11.2f}x{vs_eager:>9.2f}x{1.5:>5.1f}x  {mark:<7}{ceiling}")
    results.update(block_max_diff=block_diff, logits_max_diff=diff, tokens_identical=float(same))
    return results


if __name__ == "__main__":
    main()
