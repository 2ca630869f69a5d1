"""Every experiment runs end to end with `--smoke` (a tiny model, a few steps) and writes its outputs."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Script -> files it must write under --out-dir.
EXPECTED = {
    "char_lm": ["metrics.csv", "metrics.jsonl", "summary.json", "loss.png", "checkpoint.pt"],
    "compare_variants": ["results.md", "val_bpc.png", "summary.json", "absolute/seed0/metrics.csv"],
    "transformer_xl_lm": ["val_bpc.png", "eval_memory.png", "summary.json", "memory/metrics.csv", "no_memory/metrics.csv", "memory.pt"],
    "feedback_lm": ["val_bpc.png", "summary.json", "feedback/seed0/metrics.csv", "xl_relative/seed0/metrics.csv",
                    "xl_t5/seed0/metrics.csv"],
    "seq2seq_algorithmic": ["exact_match.png", "summary.json", "copy/metrics.csv", "sort/metrics.csv"],
    "vit_classification": ["loss.png", "accuracy.png", "summary.json", "checkpoint.pt"],
    "image_caption": ["accuracy.png", "summary.json", "checkpoint.pt"],
    "alibi_extrapolation": ["loss_by_position.png", "summary.json", "alibi/metrics.csv"],
    "xtransformers_parity": ["summary.json"],
    "gpt2_recipe": ["summary.json"],
    "moe_lm": ["results.md", "routing.md", "val_bpc.png", "max_load.png", "summary.json", "switch/seed0/metrics.csv"],
    "long_context": ["streaming_bpc_by_position.png", "rope_scaling_bpc.png", "backcopy_streaming_excess.png",
                     "summary.json", "metrics.csv"],
}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_smoke_run_writes_outputs(name, tmp_path):
    out = tmp_path / "out"
    # Run from another directory: the script must find the package and its helpers by itself.
    result = run([str(ROOT / "experiments" / f"{name}.py"), "--smoke", "--device", "cpu", "--out-dir", str(out)],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    missing = [f for f in EXPECTED[name] if not (out / f).is_file()]
    assert not missing, f"{name} did not write {missing}"
    assert all((out / f).stat().st_size > 0 for f in EXPECTED[name])
    if name in CLAIMS:
        assert_summary_has_verdict(out / "summary.json", name)
    if name == "seq2seq_algorithmic":  # says what is claimed, and that a smoke run is too short to show it
        assert "claim: an encoder-decoder learns" in result.stdout and "too short to show the claim" in result.stdout


# Scripts that test a paper's claim write its verdict into summary.json.
CLAIMS = {"compare_variants", "transformer_xl_lm", "feedback_lm", "seq2seq_algorithmic", "vit_classification",
          "image_caption", "alibi_extrapolation", "long_context", "moe_lm"}


def assert_summary_has_verdict(path: Path, name: str) -> None:
    verdict = json.loads(path.read_text()).get("verdict")
    assert isinstance(verdict, dict), f"{name}: summary.json has no verdict"
    assert set(verdict) == {"claim", "holds", "verdict", "evidence"}, verdict
    assert verdict["verdict"] in ("holds", "does not hold", "not tested", "not shown") and verdict["claim"] and verdict["evidence"]
    assert verdict["holds"] in (True, False, None)


def test_help_describes_the_experiment(tmp_path):
    result = run([str(ROOT / "experiments" / "char_lm.py"), "--help"], cwd=tmp_path)
    assert result.returncode == 0
    assert "Character language model" in result.stdout and "--smoke" in result.stdout and "--variant" in result.stdout


def test_default_output_folder_is_runs(tmp_path):
    result = run([str(ROOT / "experiments" / "vit_classification.py"), "--smoke", "--device", "cpu"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each run gets a new folder runs/NAME/DATE-TIME, printed at the start and at the end.
    [folder] = (tmp_path / "runs" / "vit_classification" / "shapes").iterdir()
    assert (folder / "summary.json").is_file()
    assert result.stdout.count(f"run folder: {folder.relative_to(tmp_path)}") == 2


@pytest.mark.slow
def test_compiled_run_saves_a_plain_checkpoint(tmp_path):
    """`--compile` trains through `torch.compile`, and the checkpoint still loads into a plain model."""
    import torch

    sys.path.insert(0, str(ROOT))
    from experiments import char_lm

    result = run([str(ROOT / "experiments" / "char_lm.py"), "--smoke", "--compile", "--device", "cpu",
                  "--sample-len", "0", "--out-dir", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert not any(key.startswith("_orig_mod") for key in state["model"])
    model = char_lm.build_model(char_lm.Config(**{k: v for k, v in state["config"].items()}))
    model.load_state_dict(state["model"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gpu_preset_names_real_options(name):
    """`--preset gpu` sets fields the config has (a typo would be lost silently), and the command line still wins."""
    import importlib

    sys.path.insert(0, str(ROOT))
    from experiments.common import parse_config

    module = importlib.import_module(f"experiments.{name}")
    preset = module.Config.GPU
    assert preset and set(preset) <= {f.name for f in dataclasses.fields(module.Config)}, name
    config = parse_config(module.Config, ["--preset", "gpu", "--steps", "7"])
    assert config.steps == 7
    assert all(getattr(config, k) == v for k, v in preset.items() if k != "steps")
    assert parse_config(module.Config, []) == module.Config()
