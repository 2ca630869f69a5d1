"""Runs are never lost or overwritten by accident, and every bad option is a usage error that says why."""

import dataclasses
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import char_lm, cli, common, data, feedback_lm, transformer_xl_lm  # noqa: E402


def usage_error(config_cls, argv, capsys) -> str:
    """The message of the usage error `argv` must cause (argparse exits with status 2)."""
    with pytest.raises(SystemExit) as info:
        common.parse_config(config_cls, argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "-5"], "argument --steps: invalid positive integer value: '-5'"),
    (["--steps", "0"], "argument --steps: invalid positive integer value: '0'"),
    (["--lr", "abc"], "argument --lr: invalid positive number value: 'abc'"),
    (["--dropout", "1.5"], "argument --dropout: invalid probability in [0, 1) value: '1.5'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--variant", "rotory"], "variant: unknown 'rotory'"),
    (["--data", "no/such/file.txt"], "argument --data: 'no/such/file.txt' is neither"),
    (["--resume", "no/such/run"], "argument --resume: no/such/run does not exist"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    assert message in usage_error(char_lm.Config, argv, capsys)


def test_zero_where_zero_means_none():
    cfg = common.parse_config(char_lm.Config, ["--sample-len", "0", "--checkpoint-every", "0", "--warmup", "0"])
    assert (cfg.sample_len, cfg.checkpoint_every, cfg.warmup) == (0, 0, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_cuda_on_a_machine_without_it_is_a_usage_error(capsys):
    assert "argument --device: 'cuda' was asked for" in usage_error(char_lm.Config, ["--device", "cuda"], capsys)


def test_default_run_folders_are_new_and_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first = common.out_dir_for(char_lm.Config(), "char_lm/rotary")
    second = common.out_dir_for(char_lm.Config(), "char_lm/rotary")
    assert first != second and first.parent == second.parent == Path("runs/char_lm/rotary")
    assert first.is_dir() and second.is_dir()
    assert f"run folder: {first}" in capsys.readouterr().out


def test_an_earlier_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    assert "already holds a run (summary.json)" in usage_error(char_lm.Config, ["--out-dir", str(tmp_path)], capsys)
    with pytest.raises(FileExistsError, match="already holds a run"):
        common.out_dir_for(char_lm.Config(out_dir=str(tmp_path)), "x")
    cfg = common.parse_config(char_lm.Config, ["--out-dir", str(tmp_path), "--overwrite"])
    assert common.out_dir_for(cfg, "x") == tmp_path


def test_resume_takes_the_run_folder_or_the_checkpoint(tmp_path, capsys):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    common.save_checkpoint(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer, step=3, config={})
    by_folder = common.parse_config(char_lm.Config, ["--resume", str(tmp_path)])
    by_file = common.parse_config(char_lm.Config, ["--resume", str(tmp_path / "checkpoint.pt")])
    assert by_folder.resume == by_file.resume == str(tmp_path / "checkpoint.pt")
    assert common.out_dir_for(by_folder, "x") == tmp_path  # the run goes on in its own folder
    assert common.load_checkpoint(tmp_path, model=model)["step"] == 3
    # Transformer-XL keeps two checkpoints: --resume is their folder.
    (tmp_path / "memory.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes())
    assert common.parse_config(transformer_xl_lm.Config, ["--resume", str(tmp_path / "memory.pt")]).resume == str(tmp_path)
    # A folder without a checkpoint, and a script that does not resume, are usage errors.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no checkpoint" in usage_error(char_lm.Config, ["--resume", str(empty)], capsys)
    assert "does not resume" in usage_error(feedback_lm.Config, ["--resume", str(tmp_path)], capsys)


def test_help_is_plain_words_with_one_default_each():
    for module in (char_lm, transformer_xl_lm, feedback_lm):
        summary = cli._summary(module.__doc__)
        assert "$" not in summary and "\\" not in summary and not summary.endswith(":"), summary
        assert "**" not in summary and "](" not in summary, summary
    parser_help = _help(char_lm)
    assert "(default: '')" not in parser_help and "(default runs/NAME) (default" not in parser_help
    assert "--steps N" in parser_help and "invalid <lambda>" not in parser_help


def _help(module) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        common.parse_config(module.Config, ["--help"], doc=module.__doc__)
    return out.getvalue()


def test_summary_skips_equations_and_their_announcement():
    doc = 'r"""\n# Title\n\n*Paper:* x\n\nThe loss of $x_{t+1}$ is small. It is trained on the cross-entropy:\n\n$$L$$\n"""'
    assert cli._summary(doc[4:-3]) == "Title. The loss of x_t+1 is small."


def test_offline_download_names_the_url_the_cache_and_data_path(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DownloadError) as info:
        data.load_text("tinyshakespeare", cache_dir=tmp_path)
    message = str(info.value)
    assert data.TINYSHAKESPEARE["url"] in message and str(tmp_path / data.TINYSHAKESPEARE["filename"]) in message
    assert "--data PATH" in message and "Name or service not known" in message
    assert not list(tmp_path.glob("*.part"))


def test_run_experiment_reports_a_failed_download_without_a_traceback(monkeypatch, tmp_path):
    """A failed download ends with one line, and leaves no empty run folder behind."""
    folders = []

    def main(cfg):
        folders.append(common.out_dir_for(cfg, "char_lm/rotary"))
        raise data.DownloadError("could not download X")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["char_lm.py"])
    with pytest.raises(SystemExit) as info:
        common.run_experiment(main, char_lm.Config)
    assert info.value.code == "error: could not download X"
    assert not folders[0].exists() and folders[0].parent.is_dir()


def test_ctrl_c_lets_the_step_finish_then_stops():
    with common.StopOnInterrupt() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not stop._handle


def test_ctrl_c_checkpoints_a_resumable_run(tmp_path, monkeypatch):
    """Interrupted after 3 steps: a checkpoint at step 3, and resuming it ends where a straight run ends."""
    class CtrlCAfterThreeSteps(common.StopOnInterrupt):
        checks = 0

        @property
        def requested(self):
            CtrlCAfterThreeSteps.checks += 1
            return CtrlCAfterThreeSteps.checks > 3

        @requested.setter
        def requested(self, value):
            pass

    def config(out, **overrides):
        cfg = dataclasses.replace(char_lm.Config(), **char_lm.Config.SMOKE)
        return dataclasses.replace(cfg, device="cpu", steps=6, sample_len=0, out_dir=str(out), **overrides)

    char_lm.train(config(tmp_path / "straight"))
    monkeypatch.setattr(char_lm, "StopOnInterrupt", CtrlCAfterThreeSteps)
    with pytest.raises(common.Interrupted) as info:
        char_lm.train(config(tmp_path / "split"))
    assert info.value.step == 3 and info.value.checkpoint == tmp_path / "split" / "checkpoint.pt"
    assert torch.load(info.value.checkpoint, weights_only=False)["step"] == 3
    monkeypatch.undo()
    char_lm.train(config(tmp_path / "split", resume=str(tmp_path / "split")))
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("script, argv, message", [
    ("transformer_xl_lm", ["--pos", "rotory"], "argument --pos: expected one of rel_pos_bias"),
    ("transformer_xl_lm", ["--modes", "memory,nomem"], "argument --modes: expected comma-separated values"),
    ("seq2seq_algorithmic", ["--tasks", "copy,srot"], "argument --tasks"),
    ("alibi_extrapolation", ["--eval-lens", "16,x"], "argument --eval-lens: expected comma-separated positive"),
    ("vit_classification", ["--dataset", "mnst"], "argument --dataset: expected one of shapes"),
    ("compare_variants", ["--variants", "rotary,alibii"], "variant: unknown 'alibii'"),
    ("compare_variants", ["--seeds", "0,a"], "argument --seeds"),
])
def test_bad_choices_of_every_experiment_are_usage_errors(script, argv, message, capsys):
    import importlib

    module = importlib.import_module(f"experiments.{script}")
    assert message in usage_error(module.Config, argv, capsys)


def _saved_run(folder: Path, **settings) -> Path:
    """A checkpoint of a char_lm run with `settings`, as the script saves it."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = dataclasses.replace(char_lm.Config(), out_dir=str(folder), **settings)
    return common.save_checkpoint(folder / "checkpoint.pt", model=model, optimizer=optimizer, step=6, config=cfg)


def test_resume_continues_with_the_saved_settings(tmp_path, capsys):
    _saved_run(tmp_path, steps=60, eval_every=30)
    cfg = common.parse_config(char_lm.Config, ["--resume", str(tmp_path)])
    assert (cfg.steps, cfg.eval_every, cfg.out_dir) == (60, 30, "")
    assert common.out_dir_for(cfg, "x") == tmp_path
    # Given again with the same value, or an option about where it runs: accepted.
    cfg = common.parse_config(char_lm.Config, ["--resume", str(tmp_path), "--steps", "60", "--device", "cpu",
                                               "--stop-at", "10"])
    assert (cfg.steps, cfg.device, cfg.stop_at) == (60, "cpu", 10)
    # A different value is a usage error that names the option, the value given and the run's.
    message = usage_error(char_lm.Config, ["--resume", str(tmp_path), "--steps", "300", "--lr", "0.002"], capsys)
    error = message[message.index("error:"):]
    assert "--steps 300 (the run has 60)" in error and "--lr" not in error  # 0.002 is the run's lr
    assert "start a new run" in error
    # --smoke sets options too: a full run is not resumed as a smoke run.
    assert "--steps 6 (the run has 60)" in usage_error(char_lm.Config, ["--resume", str(tmp_path), "--smoke"], capsys)


def test_periodic_checkpoints_every_few_minutes_of_training(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    periodic = common.PeriodicCheckpoint(minutes=3)
    due = []
    for step in range(1, 11):
        now[0] += 50  # a step takes 50 s: 3 minutes is every fourth step (200 s >= 180 s)
        due.append(periodic.due(step))
    assert [step for step, d in enumerate(due, 1) if d] == [4, 8]
    assert char_lm.Config().checkpoint_minutes > 0  # on by default
    by_steps = common.PeriodicCheckpoint(minutes=0, every_steps=3)
    assert [step for step in range(1, 10) if by_steps.due(step)] == [3, 6, 9]


def test_a_kill_during_the_write_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = _saved_run(tmp_path)
    good = path.read_bytes()

    def killed_midway(state, file):
        Path(file).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(common.torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        _saved_run(tmp_path)
    assert path.read_bytes() == good


def test_sigterm_saves_a_checkpoint_and_resume_goes_on_with_the_run(tmp_path):
    """A scheduler's SIGTERM mid-run: the step finishes, a checkpoint is saved, the printed command continues."""
    import subprocess
    import time

    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "experiments" / "char_lm.py"), "--smoke", "--device", "cpu",
               "--steps", "100000", "--eval-every", "50000", "--out-dir", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the first loss is logged from inside the training loop
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "SIGTERM: stopping after this step" in stdout
    assert f"--resume {out}" in stderr
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["step"] >= 2 and saved["config"]["steps"] == 100000
    # The printed command, with only a stop for this test: it goes on from the saved step with the run's settings.
    stop = saved["step"] + 2
    done = subprocess.run([*command[:2], "--resume", str(out), "--stop-at", str(stop)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = torch.load(out / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == stop and resumed["config"]["steps"] == 100000
    assert resumed["config"]["eval_every"] == 50000
