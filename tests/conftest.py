import os

# Waiting OpenMP threads sleep rather than spin, here and in the notebook kernels and experiment
# subprocesses that the tests start (they inherit the environment): on a busy machine spinning threads
# take the cores the work needs (see experiments/common.py). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same seed, on one thread: the test models are tiny, and one
    thread avoids synchronisation overhead (benchmarks set their own thread count)."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CountingBackend:
    """Counts the graphs Dynamo hands over (one per (re)compilation) and the calls of the compiled graphs."""

    def __init__(self):
        self.graphs, self.calls = 0, 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        from torch._dynamo.backends.registry import lookup_backend
        compiled = lookup_backend("aot_eager")(gm, example_inputs)

        def run(*args):
            self.calls += 1
            return compiled(*args)
        return run


@pytest.fixture
def counting_backend():
    """A Dynamo backend (`aot_eager`) that counts the graphs it is handed and the calls of them."""
    return CountingBackend()
