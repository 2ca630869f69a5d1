"""The experiments' shared helpers: command line, schedule, sharding, checkpoints, exact resume."""

import dataclasses
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import char_lm, common  # noqa: E402


@dataclass
class Toy(common.RunConfig):
    steps: int = 100
    lr: float = 1e-3
    name: str = field(default="a", metadata={"help": "a name"})
    flag: bool = False

    SMOKE = dict(steps=3, lr=0.5)


def test_config_command_line():
    assert common.parse_config(Toy, []) == Toy()
    cfg = common.parse_config(Toy, ["--steps", "7", "--name", "b", "--flag", "--device", "cpu"])
    assert (cfg.steps, cfg.name, cfg.flag, cfg.device) == (7, "b", True, "cpu")
    # --smoke applies the class's overrides; an explicit option still wins over them.
    cfg = common.parse_config(Toy, ["--smoke", "--lr", "0.1"])
    assert (cfg.steps, cfg.lr) == (3, 0.1) and isinstance(cfg.lr, float)
    with pytest.raises(SystemExit):
        common.parse_config(Toy, ["--no-such-option", "1"])


@dataclass
class Negated(common.RunConfig):
    no_norm_bias: bool = False
    flag: bool = True


def test_boolean_fields_named_no_something_switch_on_and_off():
    # `--no-norm-bias` is the field `no_norm_bias` itself, not the negation of a `norm_bias`.
    assert common.parse_config(Negated, ["--no-norm-bias"]).no_norm_bias is True
    assert common.parse_config(Negated, ["--no-norm-bias", "--no-no-norm-bias"]).no_norm_bias is False
    assert common.parse_config(Negated, ["--no-flag"]).flag is False
    assert common.parse_config(Negated, ["--flag"]).flag is True


def test_every_experiment_config_parses_with_smoke():
    import importlib

    for name in ("char_lm", "compare_variants", "transformer_xl_lm", "seq2seq_algorithmic", "vit_classification",
                 "image_caption", "alibi_extrapolation"):
        module = importlib.import_module(f"experiments.{name}")
        cfg = common.parse_config(module.Config, ["--smoke"])
        assert all(getattr(cfg, k) == v for k, v in module.Config.SMOKE.items()), name


def test_lr_schedule():
    lrs = [common.lr_at(s, lr=1.0, warmup=10, total=100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:-1], lrs[10:], strict=True))  # non-increasing after warm-up
    assert common.lr_at(100, lr=1.0, warmup=10, total=100) == pytest.approx(0.1)


def test_shard_is_distributed_sampler_split():
    batch = torch.arange(8)[:, None]
    parts = [common.shard(batch, common.Distributed(rank=r, world_size=2)) for r in range(2)]
    assert parts[0].flatten().tolist() == [0, 2, 4, 6] and parts[1].flatten().tolist() == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="batch_size"):
        common.shard(torch.arange(7)[:, None], common.Distributed(rank=0, world_size=2))


def test_device_resolution():
    assert common.resolve_device("cpu").type == "cpu"
    assert common.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        common.resolve_device("tpu")


def test_checkpoint_round_trip_restores_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    common.save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, step=5, config=Toy())
    expected = (torch.rand(3), random.random())
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters())
    state = common.load_checkpoint(tmp_path / "c.pt", model=other, optimizer=other_opt)
    assert state["step"] == 5 and state["config"]["steps"] == 100
    assert torch.equal(other.weight, model.weight)
    assert torch.equal(other_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def tiny_lm(tmp_path, **overrides) -> char_lm.Config:
    cfg = dataclasses.replace(char_lm.Config(), **char_lm.Config.SMOKE)
    # Dropout > 0 makes the run depend on the restored RNG state, not only on the weights.
    return dataclasses.replace(cfg, device="cpu", dropout=0.1, steps=8, eval_every=4, sample_len=0,
                               out_dir=str(tmp_path), **overrides)


def test_resume_is_exact(tmp_path):
    """2k steps straight == k steps, checkpoint, a fresh process state resumed for k more: equal weights."""
    straight = tiny_lm(tmp_path / "straight")
    char_lm.train(straight)
    first = tiny_lm(tmp_path / "split", stop_at=4)
    char_lm.train(first)
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["step"] == 4
    torch.manual_seed(1234)  # a different state than the first half left: resume must restore its own
    resumed = tiny_lm(tmp_path / "split", resume=str(tmp_path / "split" / "checkpoint.pt"))
    char_lm.train(resumed)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 8
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # The resumed run's log continues the first half's instead of replacing it.
    steps = [row["step"] for row in common.RunLog(tmp_path / "split", append=True).rows if "train_loss" in row]
    assert steps == [2, 4, 6, 8]
