"""Fixtures shared by the attention tests."""

import pytest
import torch.nn.functional as F


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Spy on `F.scaled_dot_product_attention`: a list of the keyword arguments of each call."""
    calls, real = [], F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls
