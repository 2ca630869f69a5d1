# The experiment scripts: one file per paper or comparison, plus shared helpers (common.py, data.py).
