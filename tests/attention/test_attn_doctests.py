"""The worked examples in the docstrings of the attention technique pages."""

import doctest

import pytest

from labml_style_nn.attention import entmax15, qk_norm
from labml_style_nn.attention.collaborative import CollaborativeQK


@pytest.mark.parametrize("module", [entmax15, qk_norm])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_collaborative_parameter_count_of_the_page():
    """$2 \\tilde D D + h \\tilde D$ with $\\tilde D = \\lfloor 0.3 \\cdot 512 \\rfloor = 153$, against $2 h d D$."""
    m = CollaborativeQK(512, 8, 0.3)
    assert m.dim_shared == 153
    assert sum(p.numel() for p in m.parameters()) == 2 * 153 * 512 + 8 * 153 == 157_896
    assert 2 * 8 * 64 * 512 == 524_288


@pytest.mark.parametrize("name", [
    "attention.sigmoid_attention", "attention.gumbel_softmax", "attention.hard_attention", "attention.l2_distance",
    "attention.selective", "attention.cog_attention", "attention.inverted_attention", "attention.softclamp",
    "attention.laser", "attention.zero_kv", "attention.learned_sink", "attention.orthogonal_values",
    "attention.sparse_topk", "attention.sliding_window", "positional.cope", "positional.forgetting",
])
def test_worked_examples_of_the_scoring_and_position_pages(name):
    import importlib

    import torch

    module = importlib.import_module(f"labml_style_nn.{name}")
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
