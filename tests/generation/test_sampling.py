"""Worked examples of the sampling filters."""

import math

import pytest
import torch

from labml_style_nn.generation.sampling import FILTERS, min_p, resolve_filter, top_k, top_p

NEG = -math.inf


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [4.0, -1.0, 0.0, 5.0]])
    assert top_k(logits, k=2).tolist() == [[NEG, 3.0, 2.0, NEG], [4.0, NEG, NEG, 5.0]]
    assert torch.equal(top_k(logits, k=10), logits)  # k beyond the vocabulary keeps everything


def test_top_p_keeps_the_smallest_nucleus():
    # Probabilities 0.5, 0.3, 0.2: p = 0.6 needs the first two, p = 0.5 only the first.
    logits = torch.tensor([[0.5, 0.2, 0.3]]).log()
    assert torch.isinf(top_p(logits, p=0.6)).tolist() == [[False, True, False]]
    assert torch.isinf(top_p(logits, p=0.5)).tolist() == [[False, True, True]]
    assert not torch.isinf(top_p(logits, p=1.0)).any()


def test_min_p_scales_with_the_top_probability():
    # Probabilities 0.6, 0.3, 0.1: min-p 0.4 keeps those >= 0.24.
    logits = torch.tensor([[0.6, 0.3, 0.1]]).log()
    assert torch.isinf(min_p(logits, p=0.4)).tolist() == [[False, False, True]]
    assert torch.isinf(min_p(logits, p=0.1)).tolist() == [[False, False, False]]


def test_filters_by_name():
    assert resolve_filter("top_p") is top_p and resolve_filter(min_p) is min_p
    assert set(FILTERS) == {"top_k", "top_p", "min_p", "top_a"}
    with pytest.raises(ValueError, match="filter_logits_fn"):
        resolve_filter("nucleus")
