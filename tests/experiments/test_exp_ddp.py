"""Data-parallel training: 2 processes on gloo take the same steps as 1 process with the same global batch."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

ARGS = ["--smoke", "--device", "cpu", "--steps", "4", "--batch-size", "8", "--sample-len", "0", "--eval-every", "4"]


def run(command: list[str], out: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command + ARGS + ["--out-dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    script = str(ROOT / "experiments" / "char_lm.py")
    assert "1 process(es) on cpu, 8 rows each" in run([sys.executable, script], tmp_path / "single")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script]
    # Each process keeps half of the global batch (the other half goes to the other process).
    assert "2 process(es) on cpu, 4 rows each" in run(launch, tmp_path / "ddp")
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=False)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    assert single["step"] == ddp["step"] == 4
    # Averaging the two halves' gradients equals the full batch's gradient, up to float summation order.
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # And the logged (all-reduced) training loss is the single process's loss.
    def train_losses(path):
        with open(path / "metrics.csv") as f:
            return [float(r["train_loss"]) for r in csv.DictReader(f) if r["train_loss"]]

    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "ddp")),
                               torch.tensor(train_losses(tmp_path / "single")), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_mixture_of_experts_trains_data_parallel(tmp_path):
    """Two gloo processes train the DeepSeek-style mixture like one process: the same losses (the balancing
    bias is updated from the loads summed over the processes, so it stays the same everywhere)."""
    import json

    script = str(ROOT / "experiments" / "moe_lm.py")
    args = ["--smoke", "--device", "cpu", "--variants", "deepseek", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    for name, launch in (("single", [sys.executable]),
                         ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        result = subprocess.run(launch + [script, *args, "--out-dir", str(tmp_path / name)], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    def results(path):
        summary = json.loads((path / "deepseek" / "seed0" / "summary.json").read_text())
        with open(path / "deepseek" / "seed0" / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["train_loss"]]
        return summary["val_bpc"], [float(r["train_loss"]) for r in rows], [float(r["max_load"]) for r in rows]

    (single_bpc, single_loss, single_load), (ddp_bpc, ddp_loss, ddp_load) = results(tmp_path / "single"), \
        results(tmp_path / "ddp")
    torch.testing.assert_close(torch.tensor(ddp_loss), torch.tensor(single_loss), rtol=1e-4, atol=1e-5)
    assert abs(ddp_bpc - single_bpc) < 1e-3
    assert len(ddp_load) == len(single_load) == 4
