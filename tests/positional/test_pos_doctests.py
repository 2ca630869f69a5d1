"""The worked examples in the positional pages' docstrings are run as tests."""

import doctest
import importlib

import pytest

MODULES = ["absolute", "alibi", "rope_scaling", "rotary", "t5_bias"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"labml_style_nn.positional.{name}")
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
