"""`experiments/pretrained_generate.py`: the offline run, and the checkpoint it writes is a real one."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import pretrained_generate  # noqa: E402

from labml_style_nn import from_pretrained  # noqa: E402


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_offline_run_generates(arch, capsys):
    out = pretrained_generate.main(["--arch", arch, "--new-tokens", "6"])
    assert out.shape == (1, 6)
    assert "from_pretrained" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_offline_checkpoint_loads_in_transformers_with_the_same_logits(arch, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = pretrained_generate.write_random_checkpoint(arch, tmp_path / arch, seed=0)
    ours = from_pretrained(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    x = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        assert (ours(x) - theirs(x).logits).abs().max() < 1e-4


def test_smoke_runs_the_tiny_offline_model(capsys):
    out = pretrained_generate.main(["--smoke"])
    assert out.shape == (1, pretrained_generate.SMOKE_TOKENS)
    assert "offline: a random gpt2-shaped model" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        pretrained_generate.main(["--smoke", "--model", "gpt2"])
    assert info.value.code == 2 and "argument --smoke" in capsys.readouterr().err


def test_help_says_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        pretrained_generate.main(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert description.startswith("Generating with a converted pretrained model.")
    assert description.rstrip().endswith(".") and "one call:" not in description
