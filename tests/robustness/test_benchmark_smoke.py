"""The benchmark script runs, and its FLOP count is the documented $6N + 12 L n D$ per token."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "benchmarks"))
import benchmark  # noqa: E402


def test_training_flops_follow_the_formula():
    s = benchmark.Sizes(depth=2, vocab=16)
    model = benchmark.decoder_lm(benchmark.ours, s, dim=32, heads=4, seq=8)
    weights = sum(p.numel() for n, p in model.named_parameters()
                  if p.dim() == 2 and "token_emb" not in n and "pos_emb" not in n)  # lookups, not matmuls
    assert benchmark.training_flops(model, s, 32, tokens=10, seq=8) == 10 * (6 * weights + 12 * 2 * 8 * 32)


def test_alternating_timer_returns_a_median_per_function():
    calls = []
    t = benchmark.time_alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, 3)
    assert calls == ["a", "b"] * 4 and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())


def test_recorded_matmuls_are_a_linear_layers_three_products():
    # fwd + bwd of a (5, 3) -> (5, 4) linear layer: x W^T, G W and G^T x, each 2 * 5 * 3 * 4 FLOPs.
    lin, x = torch.nn.Linear(3, 4), torch.randn(5, 3, requires_grad=True)
    replay, flops = benchmark.record_matmuls(lambda: lin(x).sum().backward())
    assert flops == 3 * 2 * 5 * 3 * 4
    lin.zero_grad(set_to_none=True)
    replay()  # the products alone: random inputs, no autograd
    assert lin.weight.grad is None


@pytest.mark.slow
def test_quick_training_case_runs():
    threads = torch.get_num_threads()
    try:
        results = benchmark.main(["--quick", "--cases", "train", "--iters", "1"])
    finally:
        torch.set_num_threads(threads)
    (r,) = results
    assert r.ours_s > 0
    if benchmark.peer("x_transformers") is not None:
        assert r.speedup is not None and r.speedup > 0
    else:
        pytest.skip("x-transformers not installed: only our time was measured")


def test_gpt2_case_trains_the_same_model_on_both_sides():
    """The GPT-2 case times equal work: after two nanoGPT steps (AdamW, clipping) on the same batches,
    ours and transformers' `GPT2LMHeadModel` still compute the same logits."""
    hf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    s = benchmark.Sizes(depth=1, gpt_vocab=11)
    ours, theirs = benchmark.gpt2_pair(hf, s, dim=16, heads=2, seq=8)
    batches = [torch.randint(0, 11, (2, 9)) for _ in range(2)]
    ours_step = benchmark.gpt_step_fn(lambda m, t: m(t), ours, batches)
    theirs_step = benchmark.gpt_step_fn(lambda m, t: m(t).logits, theirs, batches)
    probe = batches[0][:, :-1]
    with torch.no_grad():
        before = ours(probe)
    for _ in range(2):
        ours_step()
        theirs_step()
    with torch.no_grad():
        after = ours(probe)
        torch.testing.assert_close(after, theirs(probe).logits, atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 1e-3  # the steps did train


def test_moe_benchmark_runs_as_a_script_from_anywhere(tmp_path):
    # `python experiments/benchmarks/moe.py` imports its sibling script through the repository root
    pytest.importorskip("transformers")
    script = Path(__file__).resolve().parents[2] / "experiments" / "benchmarks" / "moe.py"
    run = subprocess.run([sys.executable, str(script), "--quick", "--rounds", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "MoE block forward" in run.stdout and "greedy generation" in run.stdout
