"""The position-wise feed-forward block of the Transformer-XL subpackage."""

import pytest
import torch

from labml_style_nn.transformer_xl import FeedForward


def test_matches_formula_and_is_position_wise():
    torch.manual_seed(0)
    ff = FeedForward(6, 12, 0.0)
    x = torch.randn(4, 2, 6)
    want = ff.layer2(torch.relu(x @ ff.layer1.weight.T + ff.layer1.bias))
    torch.testing.assert_close(ff(x), want)
    # Changing one position changes only that position's output
    y = x.clone()
    y[2, 1] += 1.0
    diff = (ff(y) - ff(x)).abs().sum(-1)
    assert diff[2, 1] > 0 and diff.sum() == diff[2, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_ff"):
        FeedForward(4, 0)
    with pytest.raises(ValueError, match="dropout"):
        FeedForward(4, 8, dropout=-0.1)
    with pytest.raises(ValueError, match="d_model"):
        FeedForward(4, 8)(torch.randn(2, 5))
