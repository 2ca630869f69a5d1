"""The worked examples in the residual pages' docstrings are run as tests."""

import doctest
import importlib

import pytest
import torch


@pytest.mark.parametrize("name", ["residual", "rezero", "gated_residual", "scale_residual", "token_shift",
                                  "value_residual", "residual_constant", "depth_scale_residual", "input_injection",
                                  "hyper_connections", "orthogonal_residual", "mv_split_residual"])
def test_docstring_examples(name):
    module = importlib.import_module(f"labml_style_nn.residual.{name}")
    # `torch` given to the examples: a module whose code only needs `Tensor` and `nn` does not import it.
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
