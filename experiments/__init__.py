r"""
# Experiments

Each script trains something small with the library's keyword API and reports one number worth
knowing; the defaults run in a few minutes on a laptop CPU and `--smoke` in seconds. Every script
has `--help`, `--device auto|cpu|cuda`, `--compile`, `--seed` and `--out-dir` (default `runs/NAME`),
and writes `metrics.csv`, `metrics.jsonl`, `summary.json` and PNG plots there. Measured results,
with the command for each, are on the [results page](../results.md).

Start with `python experiments/char_lm.py`: a one-minute character language model on the Python
standard library's own sources, no download needed. `common.py` and `data.py` hold the plumbing
(checkpoints with exact resume, data-parallel training with `torchrun`, the data sets).
"""
