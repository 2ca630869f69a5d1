"""`experiments/plot_eval_memory.py`: reads transformer_xl_lm.py run folders, refuses folders without the figures."""

import json

import pytest

from experiments import plot_eval_memory


def _run(tmp_path, name: str, mem_len: int, by_mem: dict) -> object:
    folder = tmp_path / name
    folder.mkdir()
    summary = {"config": {"pos": "alibi", "mem_len": mem_len},
               "results": [{"val_bpc": 2.5, "val_bpc_by_eval_mem_len": by_mem}]}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_curve_adds_the_training_memory_and_drops_memory_zero(tmp_path):
    folder = _run(tmp_path, "a", 16, {"0": 3.0, "8": 2.7, "32": 2.6})
    label, trained, points = plot_eval_memory.curve(folder)
    assert (label, trained) == ("alibi, trained with memory 16", 16)
    assert points == [(8, 2.7), (16, 2.5), (32, 2.6)]


def test_writes_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    folder = _run(tmp_path, "a", 16, {"8": 2.7, "32": 2.6})
    out = tmp_path / "fig" / "eval_memory.png"
    plot_eval_memory.main([str(folder), "--out", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_refuses_a_folder_without_the_measurement(tmp_path):
    with pytest.raises(SystemExit, match="no summary.json"):
        plot_eval_memory.curve(tmp_path)
    folder = _run(tmp_path, "b", 16, {})
    with pytest.raises(SystemExit, match="--modes memory"):
        plot_eval_memory.curve(folder)
