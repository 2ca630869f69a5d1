r"""
# GPU check: the CUDA paths in one run

The library is developed on CPUs; this script is the one place its CUDA paths are exercised, in
one go of under five minutes on a single GPU. It prints every figure it measures and writes them
to `gpu_check.json`, so that the output can be pasted on the benchmarks page as it is.

```bash
python experiments/benchmarks/gpu_check.py                 # on a machine with a CUDA GPU
python experiments/benchmarks/gpu_check.py --cpu-dry-run        # the same steps, tiny, on CPU
```

Seven steps, each reported as `ok`, `FAILED` or `skipped` (a failure does not stop the others):

1. **CUDA tests**: `pytest -k cuda` over `tests/`, the tests that need a GPU (autocast in bf16 and
   fp16 for every technique).
2. **Training step**: a GPT-2-small-sized decoder (12 layers, width 768, 12 heads, 50,257 tokens,
   1,024 positions) trained in bf16 autocast with AdamW. Reported: tokens per second and the
   model FLOPs utilisation

   $$\mathrm{MFU} = \frac{(6N + 12\,L\,n\,D)\cdot \text{tokens/s}}{\text{peak bf16 FLOP/s}}$$

   with $N$ the weights of the matrix multiplies, $L$ layers, $n$ tokens, $D$ width; the peak is
   looked up from the GPU's name (dense bf16, no sparsity) or given with `--peak-tflops`.
3. **Fused attention**: the fused kernel (`F.scaled_dot_product_attention`) against the explicit
   path, in float32 and bf16, with a padding mask, a causal mask, the T5 bias, ALiBi and XL memory.
4. **Cached generation**: greedy decoding with the key/value cache gives the tokens of decoding
   without it; tokens per second for both.
5. **An experiment**: `transformer_xl_lm.py --preset gpu`, cut to `--experiment-steps` steps (both
   runs, with and without memory), stopped after `--experiment-timeout` seconds at most.
6. **Techniques**: for a handful of representative keywords of attention (grouped keys and values,
   qk RMSNorm, ALiBi, gated values, memory slots), of the stack (sandwich norm, macaron,
   hyper-connections, value residual, token shift) and of the experts (softmax top-2, DeepSeek's
   sigmoid routing with a shared expert, Switch's capacity), one bf16 autocast training step
   (finite loss and gradients), and greedy generation with the cache (the lean one-token step where
   the stack is plain) equal to generation without it.
7. **Mixture-of-experts layer**: the grouped multiply (`grouped_mm`, bf16 on CUDA) against the
   per-expert loop on the same weights, forward and gradients, and the layer's forward and
   backward time over 8K tokens.

On a machine without CUDA (and without `--device cpu`), the script says so and exits with status 0
without running anything: there is nothing to check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper  # noqa: E402
from labml_style_nn.moe import MixtureOfExperts  # noqa: E402

# Dense bf16 peaks in TFLOP/s (no structured sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 756.0, "GH200": 989.0,
    "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0,
}


def peak_tflops(name: str) -> float | None:
    """The bf16 peak of a GPU from its name (longest matching key first), or None if unknown."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_cuda_tests(args, device) -> dict:
    if device.type != "cuda":
        return {"status": "skipped", "why": "the CUDA tests need a CUDA device"}
    cmd = [sys.executable, "-m", "pytest", "tests", "-k", "cuda", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts="]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.tests_seconds)
    tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
    return {"status": "ok" if result.returncode == 0 else "FAILED", "pytest": " / ".join(tail)}


def step_training(args, device) -> dict:
    dim, depth, heads, vocab, n, b = (64, 2, 4, 256, 64, 2) if args.tiny else (768, 12, 12, 50257, 1024, args.batch)
    torch.manual_seed(0)
    model = TransformerWrapper(num_tokens=vocab, max_seq_len=n, attn_layers=Decoder(
        dim=dim, depth=depth, heads=heads, attn_dim_head=dim // heads, rotary_pos_emb=True)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    x = torch.randint(0, vocab, (b, n + 1), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def train_step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    first = train_step()
    for _ in range(2):  # warm-up: kernels chosen, allocator settled
        train_step()
    sync(device)
    start, steps = time.perf_counter(), 2 if args.tiny else 10
    for _ in range(steps):
        last = train_step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    # $N$: weights of the matrix multiplies (everything but the token embedding lookup and the norms).
    matmul_weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "token_emb" not in name)
    flops_per_token = 6 * matmul_weights + 12 * depth * n * dim
    tokens_per_s = b * n / seconds
    peak = args.peak_tflops or (peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None)
    out = {"status": "ok" if last < first else "FAILED", "parameters": sum(p.numel() for p in model.parameters()),
           "batch": b, "seq_len": n, "step_ms": round(seconds * 1000, 1), "tokens_per_s": round(tokens_per_s),
           "loss_first_last": [round(first, 3), round(last, 3)]}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if peak:
        out["peak_bf16_tflops"] = peak
        out["mfu"] = round(flops_per_token * tokens_per_s / (peak * 1e12), 4)
    return out


def step_fused_attention(args, device) -> dict:
    """Fused and explicit paths agree with padding, causality, T5 bias, ALiBi and XL memory."""
    torch.manual_seed(0)
    cases = {"t5": dict(rel_pos_bias=True), "alibi": dict(alibi_pos_emb=True), "rotary": dict(rotary_pos_emb=True)}
    out: dict = {"status": "ok"}
    for name, kwargs in cases.items():
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 6e-2)):
            stack = Decoder(dim=64, depth=2, heads=4, attn_dim_head=16, **kwargs).to(device, dtype).eval()
            x = torch.randn(2, 24, 64, device=device, dtype=dtype)
            mask = torch.ones(2, 24, dtype=torch.bool, device=device)
            mask[1, :5] = False  # a left-padded row
            mems = [torch.randn(2, 8, 64, device=device, dtype=dtype) for _ in range(2)]
            with torch.no_grad():
                fused = stack(x, mask=mask, mems=mems)
                explicit_maps: list = []
                explicit = stack(x, mask=mask, mems=mems, attn_sink=explicit_maps)  # the explicit path
            diff = (fused.float() - explicit.float())[mask].abs().max().item()
            out[f"{name}_{str(dtype).split('.')[-1]}_max_diff"] = diff
            if not diff < tol:
                out["status"] = "FAILED"
    return out


def step_generation(args, device) -> dict:
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=256, max_seq_len=512, attn_layers=Decoder(
        dim=256, depth=4, heads=4, rotary_pos_emb=True)).to(device).eval()
    model = AutoregressiveWrapper(net)
    prompt = torch.randint(0, 256, (4, 16), device=device)
    length = 16 if args.tiny else 256
    timings, outputs = {}, {}
    for cached in (True, False):
        sync(device)
        start = time.perf_counter()
        outputs[cached] = model.generate(prompt, length, temperature=0.0, cache_kv=cached)
        sync(device)
        timings[cached] = time.perf_counter() - start
    same = torch.equal(outputs[True], outputs[False])
    return {"status": "ok" if same else "FAILED", "same_tokens": same, "new_tokens": length,
            "tokens_per_s_cached": round(4 * length / timings[True]),
            "tokens_per_s_uncached": round(4 * length / timings[False])}


def step_experiment(args, device) -> dict:
    if device.type != "cuda":
        return {"status": "skipped", "why": "the --preset gpu run needs a CUDA device"}
    out_dir = Path(args.out_dir) / "transformer_xl_lm"
    cmd = [sys.executable, str(ROOT / "experiments" / "transformer_xl_lm.py"), "--preset", "gpu",
           "--steps", str(args.experiment_steps), "--eval-every", str(args.experiment_steps // 4),
           "--out-dir", str(out_dir)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.experiment_timeout)
    summary = out_dir / "summary.json"
    out = {"status": "ok" if result.returncode == 0 and summary.is_file() else "FAILED", "command": " ".join(cmd[1:])}
    if summary.is_file():
        out["summary"] = json.loads(summary.read_text()).get("verdict")
    else:
        out["stderr"] = result.stderr[-1500:]
    return out


# Representative keywords of each group of techniques, each checked alone on a small decoder.
TECHNIQUES = {
    "attention": [dict(attn_kv_heads=2), dict(attn_qk_rmsnorm=True), dict(alibi_pos_emb=True, rotary_pos_emb=False),
                  dict(attn_gate_values=True), dict(attn_num_mem_kv=4)],
    "stack": [dict(sandwich_norm=True), dict(macaron=True), dict(num_residual_streams=2),
              dict(add_value_residual=True), dict(shift_tokens=1)],
    "experts": [dict(ff_num_experts=4, ff_top_k=2),
                dict(ff_num_experts=4, ff_top_k=2, ff_router="sigmoid", ff_num_shared_experts=1),
                dict(ff_num_experts=4, ff_top_k=1, ff_capacity_factor=1.25)],
}


def step_techniques(args, device) -> dict:
    """One bf16 training step and cached-equals-uncached greedy generation per representative keyword."""
    dim, vocab, n = (32, 64, 16) if args.tiny else (256, 512, 256)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out: dict = {"status": "ok"}
    for group, cases in TECHNIQUES.items():
        for kwargs in cases:
            name = f"{group}:" + ",".join(f"{k}={v}" for k, v in kwargs.items())
            torch.manual_seed(0)
            net = TransformerWrapper(num_tokens=vocab, max_seq_len=2 * n, attn_layers=Decoder(
                dim=dim, depth=2, heads=4, **{"rotary_pos_emb": True, **kwargs})).to(device)
            optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
            x = torch.randint(0, vocab, (4, n + 1), device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                loss = F.cross_entropy(net(x[:, :-1]).float().transpose(1, 2), x[:, 1:])
            loss.backward()
            grads_finite = all(torch.isfinite(p.grad).all().item() for p in net.parameters() if p.grad is not None)
            optimizer.step()
            model = AutoregressiveWrapper(net.eval())
            prompt = x[:2, :8]
            with torch.no_grad():
                cached = model.generate(prompt, 12, temperature=0.0, cache_kv=True)
                full = model.generate(prompt, 12, temperature=0.0, cache_kv=False)
            ok = bool(torch.isfinite(loss).item()) and grads_finite and torch.equal(cached, full)
            out[name] = {"loss": round(loss.item(), 3), "grads_finite": grads_finite,
                         "cached_equals_full": torch.equal(cached, full)}
            if not ok:
                out["status"] = "FAILED"
    return out


def step_moe_layer(args, device) -> dict:
    """The experts' grouped multiply equals the per-expert loop; forward and backward time of the layer."""
    from labml_style_nn.moe import Experts, SoftmaxRouter
    dim, hidden, experts, tokens = (32, 64, 4, 64) if args.tiny else (1024, 2816, 8, 8192)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    layer = MixtureOfExperts(dim, router=SoftmaxRouter(dim, experts, 2),
                             experts=Experts(experts, dim, hidden)).to(device, dtype)
    x = torch.randn(2, tokens // 2, dim, device=device, dtype=dtype, requires_grad=True)
    results = {}
    for grouped in (True, False):
        layer.experts.grouped_mm = grouped
        x.grad = None
        layer.zero_grad(set_to_none=True)
        y = layer(x)
        y.float().square().mean().backward()
        results[grouped] = (y.detach().float(), x.grad.float(), layer.experts.w_in.grad.float())
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-4
    diffs = [((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()
             for a, b in zip(results[True], results[False], strict=True)]
    layer.experts.grouped_mm = None  # the default choice
    sync(device)
    start, steps = time.perf_counter(), 2 if args.tiny else 20
    for _ in range(steps):
        layer(x).float().square().mean().backward()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {"status": "ok" if max(diffs) < tol else "FAILED",
            "grouped_vs_loop_relative_diff_out_dx_dw": [round(d, 5) for d in diffs],
            "forward_backward_ms": round(seconds * 1000, 2), "tokens": tokens, "dim": dim, "experts": experts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="GPU check: CUDA tests, a bf16 training step with MFU, fused "
                                     "attention with masks and biases, cached generation, one --preset gpu run.")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu (with --tiny) to check the script itself")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (for a CPU check of the script)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="--device cpu --tiny, and no subprocess steps")
    parser.add_argument("--batch", type=int, default=8, help="rows of 1,024 tokens in the training step")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("--tests-seconds", type=int, default=120)
    parser.add_argument("--experiment-steps", type=int, default=400, help="training steps of the --preset gpu run")
    parser.add_argument("--experiment-timeout", type=int, default=180, help="seconds before that run is stopped")
    parser.add_argument("--out-dir", default="runs/gpu_check")
    args = parser.parse_args(argv)
    if args.cpu_dry_run:
        args.device, args.tiny = "cpu", True
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was measured. "
              "Run it on a machine with a GPU, or with --device cpu --tiny to check the script.")
        return 0
    device = torch.device(args.device)
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "tiny": args.tiny}
    print(json.dumps(report))
    steps = {"cuda_tests": step_cuda_tests, "training_step": step_training, "fused_attention": step_fused_attention,
             "generation": step_generation, "experiment": step_experiment, "techniques": step_techniques,
             "moe_layer": step_moe_layer}
    for name, fn in steps.items():
        start = time.perf_counter()
        try:
            result = fn(args, device)
        except Exception as error:  # report and go on: one broken path must not hide the others
            result = {"status": "FAILED", "error": f"{type(error).__name__}: {error}",
                      "where": traceback.format_exc().splitlines()[-3:]}
        result["seconds"] = round(time.perf_counter() - start, 1)
        report[name] = result
        print(f"{name}: {json.dumps(result)}", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    (Path(args.out_dir) / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("status") == "FAILED"]
    print("gpu_check:", "all steps ok" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
