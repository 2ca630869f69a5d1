#!/usr/bin/env bash
# The package as users get it: build the wheel and the sdist, install the wheel (not editable) into a
# fresh virtual environment, and use it from a folder outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
ls "$work"/dist/*.tar.gz >/dev/null
echo "::: built $(basename "$wheel") and $(basename "$work"/dist/*.tar.gz)"

# The wheel holds the library only: no tests, experiments, notebooks or site.
python - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bad = [n for n in names if not (n.startswith("labml_style_nn/") or ".dist-info/" in n)]
assert not bad, f"the wheel holds files outside the library: {bad[:10]}"
assert "labml_style_nn/py.typed" in names, "the wheel lacks py.typed"
assert any(n.endswith("pretrained/__init__.py") for n in names), "the wheel lacks labml_style_nn.pretrained"
print(f"::: wheel holds {len(names)} files, all of the library")
PY

python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
# PyTorch for this machine first, chosen as install.py chooses it; then the wheel with its [hf] extra.
"$work/venv/bin/python" install.py --torch-only
"$work/venv/bin/python" -m pip install -q "$wheel[hf]"

cd "$work"   # away from the source tree, so only the installed wheel can be imported
"$work/venv/bin/python" - <<'PY'
import pathlib, torch
import labml_style_nn
from labml_style_nn import Decoder, TransformerWrapper, from_hf
assert "site-packages" in pathlib.Path(labml_style_nn.__file__).as_posix(), labml_style_nn.__file__
print("::: labml_style_nn", labml_style_nn.__version__, "from", pathlib.Path(labml_style_nn.__file__).parent)

# The first example of the x-transformers README.
model = TransformerWrapper(num_tokens=20000, max_seq_len=1024,
                           attn_layers=Decoder(dim=512, depth=6, heads=8))
assert model(torch.randint(0, 256, (1, 1024))).shape == (1, 1024, 20000)

# from_hf on a tiny random GPT-2.
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()
ours = from_hf(hf)
ids = torch.randint(0, 97, (2, 16))
with torch.no_grad():
    diff = (ours(ids) - hf(ids).logits).abs().max().item()
assert diff < 1e-4, diff
print(f"::: installed wheel: x-transformers README example runs; from_hf(GPT-2) max |diff| {diff:.1e}")
PY
echo "::: wheel check passed"
