"""The benchmark script runs, and its FLOP count is the documented $6N + 12 L n D$ per token."""

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
