"""The worked examples in the residual pages' docstrings are run as tests."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["residual", "rezero", "gated_residual", "scale_residual", "token_shift"])
def test_docstring_examples(name):
    module = importlib.import_module(f"labml_style_nn.residual.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
