"""The worked examples in the docstrings of the recirculation, full-bandwidth, DISCOVER and block-input pages run."""

import doctest
import importlib

import pytest
import torch


@pytest.mark.parametrize("name", ["families.recirculation", "families.full_bandwidth", "families.discover",
                                  "models.block_inputs"])
def test_docstring_examples(name):
    module = importlib.import_module(f"labml_style_nn.{name}")
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
