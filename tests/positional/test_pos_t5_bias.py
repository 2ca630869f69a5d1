"""T5 relative position buckets: worked examples, causal and bidirectional, and the learned table."""

import math

import pytest
import torch

from labml_style_nn.positional.t5_bias import T5RelativePositionBias, relative_position_bucket


def bucket(rel, causal, nb=32, md=128):
    return relative_position_bucket(torch.tensor(rel), causal, nb, md).tolist()


def test_causal_small_distances_are_exact():
    # $j - i = -\delta$; with 32 buckets the first 16 distances have a bucket each
    assert bucket([-d for d in range(16)], True) == list(range(16))


def test_causal_keys_ahead_fall_in_bucket_zero():
    assert bucket([1, 5, 100], True) == [0, 0, 0]


def test_causal_large_distances_are_logarithmic_and_capped():
    # 16 + floor(log(d / 16) / log(128 / 16) * 16)
    for d in (16, 17, 31, 32, 64, 100, 127):
        expected = 16 + math.floor(math.log(d / 16) / math.log(8) * 16)
        assert bucket([-d], True) == [expected]
    assert bucket([-16, -32, -64, -127], True) == [16, 21, 26, 31]
    assert bucket([-128, -1000, -10 ** 6], True) == [31, 31, 31]  # the last bucket


def test_bidirectional_halves():
    # 16 buckets per direction: keys behind use 0..15, keys ahead 16..31; 8 exact distances each
    assert bucket([0, -1, -7], False) == [0, 1, 7]
    assert bucket([1, 7], False) == [17, 23]
    assert bucket([-8, 8], False) == [8, 24]
    # 8 + floor(log(d / 8) / log(16) * 8)
    assert bucket([-16, 16, -64], False) == [10, 26, 14]
    assert bucket([-500, 500], False) == [15, 31]


def test_buckets_are_monotone_in_distance():
    b = relative_position_bucket(-torch.arange(400), True, 32, 128)
    assert (b[1:] >= b[:-1]).all() and b.max() == 31


def test_bias_is_a_table_lookup_per_head():
    torch.manual_seed(0)
    t5 = T5RelativePositionBias(heads=3, causal=False, num_buckets=8, max_distance=16)
    q, k = torch.arange(4, 7), torch.arange(7)
    bias = t5(q, k)
    assert bias.shape == (1, 3, 3, 7)
    for i in range(3):
        for j in range(7):
            bk = relative_position_bucket(torch.tensor(int(k[j] - q[i])), False, 8, 16)
            torch.testing.assert_close(bias[0, :, i, j], t5.bias.weight[bk])


@pytest.mark.parametrize("causal, nb, md", [(True, 32, 16), (False, 32, 8), (False, 1, 128), (True, 4, 2)])
def test_degenerate_bucket_settings_are_refused(causal, nb, md):
    # the logarithmic range needs max_distance beyond the exact buckets
    with pytest.raises(ValueError, match="rel_pos_"):
        T5RelativePositionBias(heads=2, causal=causal, num_buckets=nb, max_distance=md)
