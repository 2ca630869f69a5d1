"""The stack and the parser split into pages: old import paths keep working, the worked examples run."""

import doctest

import pytest

from labml_style_nn import option_objects, option_validation, options
from labml_style_nn.models import layers, stack_inputs


def test_route_to_top_example():
    result = doctest.testmod(stack_inputs)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("module, names", [
    (option_objects, ["Options", "AttentionOptions", "FeedForwardOptions", "LayerOptions", "rope_scaling"]),
    (option_validation, ["validate", "validate_attention", "validate_feedforward", "validate_reversible",
                         "FF_ACTIVATIONS"]),
])
def test_options_reexports_the_names_of_its_parts(module, names):
    # `from labml_style_nn.options import LayerOptions` (docs, doctests, users) is the same object.
    for name in names:
        assert getattr(options, name) is getattr(module, name), name


def test_layers_keeps_the_names_it_had():
    # The helpers that moved to `stack_inputs.py` were public names of `layers.py`.
    for name in ("additional_kvs", "route_to_top", "per_layer", "mask_as_bias", "check_mem_masks", "with_memory_mask"):
        assert getattr(layers, name) is getattr(stack_inputs, name), name
