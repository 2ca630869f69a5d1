"""The measurements of `experiments/transformer_xl_lm.py` beyond training: evaluation with other
memory lengths (0 = none) and the attention on memory slots older than the training memory."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import common, transformer_xl_lm  # noqa: E402

CPU = torch.device("cpu")


def tiny(pos: str) -> tuple[transformer_xl_lm.Config, torch.nn.Module, torch.Tensor]:
    cfg = transformer_xl_lm.Config(**{**transformer_xl_lm.Config.SMOKE, "pos": pos, "eval_segments": 6})
    torch.manual_seed(0)
    model = transformer_xl_lm.build_model(cfg)
    stream = torch.randint(0, 256, (2, 6 * cfg.seq_len + 1))  # (b, N): two streams of random bytes
    return cfg, model, stream


def test_eval_mem_lens_takes_zero_and_rejects_negative(capsys):
    assert common.parse_config(transformer_xl_lm.Config, ["--eval-mem-lens", "0,8,128"]).eval_mem_lens == "0,8,128"
    for bad in ("0,-8", "8,x"):
        with pytest.raises(SystemExit):
            common.parse_config(transformer_xl_lm.Config, ["--eval-mem-lens", bad])
        assert "argument --eval-mem-lens: expected comma-separated integers >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        common.parse_config(transformer_xl_lm.Config, ["--track-mem-lens", "32,0"])
    assert "argument --track-mem-lens: expected comma-separated positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        common.parse_config(transformer_xl_lm.Config, ["--clamp-distances", "--pos", "alibi"])
    assert "argument --clamp-distances: needs --pos xl_relative" in capsys.readouterr().err


def test_clamped_distances_score_far_keys_as_the_farthest_trained_one():
    attn = transformer_xl_lm.RelativeMultiHeadAttention(2, 32, 0.0)
    q = torch.randn(4, 1, 2, 16)  # (n, b, h, d)
    plain = attn.position_scores(q, 20)  # (i, j, b, h): 16 memory slots and 4 segment keys
    with transformer_xl_lm.clamped_distances(5):
        clamped = attn.position_scores(q, 20)
    # Key 0 is at distance 16 + i from query i, beyond 5: it gets distance 5's score, that of key 11 - i...
    for i in range(4):
        assert torch.allclose(clamped[i, 0], plain[i, 11 + i], atol=1e-5)
    # ... the keys within distance 5 keep theirs, and the module is restored afterwards
    assert torch.allclose(clamped[:, 15:], plain[:, 15:]) and torch.equal(attn.position_scores(q, 20), plain)


@pytest.mark.parametrize("pos", ["xl_relative", "alibi"])
def test_memory_zero_evaluates_without_memory(pos):
    cfg, model, stream = tiny(pos)
    without = transformer_xl_lm.evaluate(model, stream, cfg, False, CPU)
    assert transformer_xl_lm.evaluate(model, stream, cfg, True, CPU, mem_len=0) == pytest.approx(without, abs=1e-6)
    # With memory the bpc differs, and the model's own memory length is restored afterwards
    assert transformer_xl_lm.evaluate(model, stream, cfg, True, CPU, mem_len=32) != pytest.approx(without, abs=1e-4)
    assert model.max_mem_len == cfg.mem_len


@pytest.mark.parametrize("pos", ["xl_relative", "alibi"])
def test_attention_beyond_training_memory_is_a_share(pos):
    cfg, model, stream = tiny(pos)
    # Trained memory 16; evaluated with 32, the 16 oldest slots are farther back than training saw
    shares = transformer_xl_lm.attention_beyond(model, stream, cfg, CPU, 32)
    assert len(shares) == cfg.depth and all(0.0 < s < 1.0 for s in shares), shares
    # With the training memory itself there is nothing beyond it
    assert transformer_xl_lm.attention_beyond(model, stream, cfg, CPU, cfg.mem_len) == [0.0] * cfg.depth
    # The attention goes back to its fused path and the model to its memory length
    if pos == "xl_relative":
        attns = [m for m in model.modules() if isinstance(m, transformer_xl_lm.RelativeMultiHeadAttention)]
        assert len(attns) == cfg.depth and all(a.fused for a in attns)
    assert model.max_mem_len == cfg.mem_len and model.training


def test_verdict_needs_a_longer_memory_that_lowers_bpc():
    cfg = transformer_xl_lm.Config(pos="xl_relative", mem_len=16)
    no_memory = {"run": "no_memory", "val_bpc": 3.0}

    def memory(by_len):
        return {"run": "memory", "val_bpc": by_len[16], "val_bpc_by_eval_mem_len": by_len,
                "attention_beyond_training_memory": {"eval_mem_len": max(by_len), "by_layer": [0.25, 0.5]}}

    flat = transformer_xl_lm.verdict(cfg, [memory({0: 3.1, 8: 2.702, 16: 2.7, 64: 2.71}), no_memory])
    assert flat["holds"] is False and "does not lower" in flat["evidence"]
    assert "stops falling at memory 8" in flat["evidence"] and "25.0%, 50.0% of their attention" in flat["evidence"]
    lower = transformer_xl_lm.verdict(cfg, [memory({0: 3.1, 16: 2.7, 64: 2.69}), no_memory])
    assert lower["holds"] is True and "a longer memory lowers it" in lower["evidence"]
    assert "stops falling at memory 16" in lower["evidence"]
    # Without a longer memory the second half of the claim is not tested
    assert transformer_xl_lm.verdict(cfg, [memory({0: 3.1, 16: 2.7}), no_memory])["holds"] is None
