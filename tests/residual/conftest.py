"""Run this directory's tests single-threaded: the tensors are tiny, and on a shared 2-core machine
intra-op threads mostly wait for each other (25x slower per forward under load)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
