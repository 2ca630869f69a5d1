"""The Feedback-vs-XL comparison: its verdict rule over seeds, and its parameter-matched baseline."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments import common, feedback_lm  # noqa: E402


def result(model: str, per_seed: list[float], parameters: int = 1000) -> dict:
    mean = sum(per_seed) / len(per_seed)
    std = (sum((b - mean) ** 2 for b in per_seed) / (len(per_seed) - 1)) ** 0.5 if len(per_seed) > 1 else 0.0
    return {"model": model, "parameters": parameters, "val_bpc": mean, "std": std, "per_seed": per_seed}


def test_verdict_over_seeds_against_the_best_baseline():
    fb = result("feedback", [3.00, 3.02, 3.01])
    # A clear lead over the better baseline holds; the worse baseline is not the one compared
    clear = feedback_lm.verdict([fb, result("xl_relative", [3.20, 3.22, 3.21]), result("xl_t5", [3.5, 3.6, 3.4])])
    assert clear["verdict"] == "holds" and "xl_relative" in clear["evidence"]
    # A lead smaller than twice the combined spread is not shown
    noisy = feedback_lm.verdict([fb, result("xl_relative", [2.90, 3.10, 3.15])])
    assert noisy["verdict"] == "not shown" and noisy["holds"] is None
    # Behind by far more than the spread: does not hold
    behind = feedback_lm.verdict([fb, result("xl_relative", [2.80, 2.81, 2.82])])
    assert behind["verdict"] == "does not hold"
    # One seed decides nothing, and unequal parameters are no comparison
    assert feedback_lm.verdict([result("feedback", [3.0]), result("xl_relative", [3.5])])["verdict"] == "not tested"
    assert feedback_lm.verdict([fb, result("xl_relative", [3.5, 3.6, 3.7], parameters=2000)])["holds"] is None


def test_undecided_label_is_checked():
    assert common.claim_verdict("c", None, "e", undecided="not shown")["verdict"] == "not shown"
    with pytest.raises(ValueError, match="undecided"):
        common.claim_verdict("c", None, "e", undecided="maybe")


def test_xl_relative_baseline_matches_the_feedback_parameters():
    models = feedback_lm.build_models(feedback_lm.Config())
    ratio = common.count_parameters(models["feedback"]) / common.count_parameters(models["xl_relative"])
    assert 0.99 < ratio < 1.01, ratio


def test_a_single_seed_is_asked_for_with_seeds():
    with pytest.raises(ValueError, match="--seeds 3"):
        feedback_lm.Config(seed=3).check()
    feedback_lm.Config(seeds="3").check()
