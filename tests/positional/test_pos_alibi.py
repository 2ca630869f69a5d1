"""ALiBi: the paper's slopes, partial heads, symmetric distances for encoders."""

import math

import pytest
import torch

from labml_style_nn import Decoder, Encoder
from labml_style_nn.positional.alibi import AlibiPositionalBias, alibi_slopes


def paper_slopes(n):
    """The paper's recipe, written independently: geometric from 2^(-8/n) for powers of two, else
    the closest smaller power of two followed by every other slope of the next one."""
    def geometric(n):
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]
    if n & (n - 1) == 0:
        return geometric(n)
    p = 1 << (n.bit_length() - 1)
    return geometric(p) + [s for i, s in enumerate(geometric(2 * p)) if i % 2 == 0][: n - p]


def test_eight_heads_are_powers_of_one_half():
    assert alibi_slopes(8) == [2.0 ** -h for h in range(1, 9)]


def test_sixteen_heads_are_powers_of_the_square_root_of_one_half():
    torch.testing.assert_close(torch.tensor(alibi_slopes(16)), torch.tensor([2 ** (-h / 2) for h in range(1, 17)]))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 12, 16, 24])
def test_slopes_match_the_paper_for_any_head_count(n):
    slopes = alibi_slopes(n)
    assert len(slopes) == n and len(set(slopes)) == n
    for a, b in zip(slopes, paper_slopes(n), strict=True):
        assert math.isclose(a, b, rel_tol=1e-12)


def test_twelve_heads_worked_example():
    # 8-head slopes 2^-1..2^-8, then slopes 1, 3, 5, 7 of a 16-head model: 2^-0.5, 2^-1.5, ...
    expected = [2.0 ** -h for h in range(1, 9)] + [2.0 ** -(h + 0.5) for h in range(0, 4)]
    assert all(math.isclose(a, b) for a, b in zip(alibi_slopes(12), expected, strict=True))


def test_bias_is_minus_slope_times_distance_and_only_on_the_first_k_heads():
    bias = AlibiPositionalBias(heads=8, alibi_heads=4)(torch.arange(5), torch.arange(5))
    assert bias.shape == (1, 8, 5, 5)
    dist = (torch.arange(5)[:, None] - torch.arange(5)[None]).abs().float()
    for h, m in enumerate(alibi_slopes(4)):
        torch.testing.assert_close(bias[0, h], -m * dist)
    assert (bias[0, 4:] == 0).all()  # the other heads carry no bias


def test_encoder_distance_is_symmetric_and_decoder_offsets_follow_the_cache():
    alibi = AlibiPositionalBias(heads=2)
    b = alibi(torch.arange(6), torch.arange(6))[0]
    torch.testing.assert_close(b, b.transpose(-1, -2))
    # a query at position 9 against keys 0..9 (a cache of 9 earlier tokens); 2 heads: m = 2^-4, 2^-8
    row = alibi(torch.tensor([9]), torch.arange(10))[0, :, 0]
    torch.testing.assert_close(row[0], -(2.0 ** -4) * torch.arange(9, -1, -1).float())
    torch.testing.assert_close(row[1], -(2.0 ** -8) * torch.arange(9, -1, -1).float())


def test_stack_uses_partial_heads():
    dec = Decoder(dim=16, depth=1, heads=8, attn_dim_head=4, alibi_pos_emb=True, alibi_num_heads=4)
    bias = dec.shared_inputs(4, 0, False, "cpu").attn_bias
    assert (bias[0, :4] != 0).any() and (bias[0, 4:] == 0).all()
    enc = Encoder(dim=16, depth=1, heads=8, attn_dim_head=4, alibi_pos_bias=True)
    assert (enc.shared_inputs(4, 0, False, "cpu").attn_bias[0, 7] != 0).any()
