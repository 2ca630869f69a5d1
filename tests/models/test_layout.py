"""Block order and step sizes of the sandwich and macaron layouts, and shift_tokens per block."""

import doctest

import pytest
import torch

import labml_style_nn.models.layout as layout
from labml_style_nn import CrossAttender, Decoder, Encoder


def kinds(model):
    return "".join(b.kind for b in model.blocks)


def test_default_interleaves():
    enc = Encoder(dim=8, depth=3, heads=2)
    assert "".join(enc.layer_types) == kinds(enc) == "afafaf"
    assert kinds(Decoder(dim=8, depth=2, heads=2, cross_attend=True)) == "acfacf"
    assert kinds(CrossAttender(dim=8, depth=2, heads=2)) == "cfcf"


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_sandwich_pattern_for_every_coefficient(depth):
    for k in range(1, depth + 1):
        enc = Encoder(dim=8, depth=depth, heads=2, sandwich_coef=k)
        # $\texttt{a}^k (\texttt{af})^{N-k} \texttt{f}^k$, written out independently
        expected = "a" * k + "af" * (depth - k) + "f" * k
        assert "".join(enc.layer_types) == kinds(enc) == expected
        assert all(b.step == 1.0 for b in enc.blocks)
    assert kinds(Encoder(dim=8, depth=6, heads=2, sandwich_coef=6)) == "a" * 6 + "f" * 6
    assert kinds(Encoder(dim=8, depth=6, heads=2, sandwich_coef=1)) == "a" + "af" * 5 + "f"


def test_sandwich_with_cross_attention():
    dec = Decoder(dim=8, depth=3, heads=2, cross_attend=True, sandwich_coef=2)
    assert kinds(dec) == "acac" + "acf" + "ff"


@pytest.mark.parametrize("k", [0, 4, -1, True, 2.0])
def test_sandwich_coefficient_outside_one_to_depth_is_refused(k):
    with pytest.raises(ValueError, match="sandwich_coef"):
        Encoder(dim=8, depth=3, heads=2, sandwich_coef=k)


def test_sandwich_and_macaron_together_are_refused():
    with pytest.raises(ValueError, match="choose one"):
        Encoder(dim=8, depth=3, heads=2, sandwich_coef=2, macaron=True)


def test_macaron_half_steps():
    enc = Encoder(dim=8, depth=3, heads=2, macaron=True)
    assert kinds(enc) == "faf" * 3
    assert [b.step for b in enc.blocks] == [0.5, 1.0, 0.5] * 3
    dec = Decoder(dim=8, depth=2, heads=2, cross_attend=True, macaron=True)
    assert kinds(dec) == "facf" * 2
    assert [b.step for b in dec.blocks] == [0.5, 1.0, 1.0, 0.5] * 2


def test_macaron_feed_forward_adds_half_its_output():
    """A block with step 1/2 computes $x + \\tfrac12 F(\\operatorname{Norm}(x))$."""
    torch.manual_seed(0)
    enc = Encoder(dim=8, depth=1, heads=2, macaron=True)
    ff = enc.blocks[0]
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(ff.join(ff.fn(ff.branch_input(x)), x), x + 0.5 * ff.fn(ff.pre_norm(x)))
    attn = enc.blocks[1]
    out, _ = attn.fn(attn.branch_input(x))
    torch.testing.assert_close(attn.join(out, x), x + out)


def test_shift_tokens_per_block():
    dec = Decoder(dim=8, depth=3, heads=2, shift_tokens=(1, 0, 2, 0, 0, 3))
    amounts = [b.shift.amount if b.shift is not None else 0 for b in dec.blocks]
    assert amounts == [1, 0, 2, 0, 0, 3]
    assert all(b.shift.amount == 2 for b in Decoder(dim=8, depth=2, heads=2, shift_tokens=2).blocks)
    assert all(b.shift is None for b in Decoder(dim=8, depth=2, heads=2).blocks)


@pytest.mark.parametrize("kw, expected", [(dict(), 6), (dict(macaron=True), 9), (dict(cross_attend=True), 9)])
def test_shift_tokens_tuple_of_wrong_length_is_refused(kw, expected):
    with pytest.raises(ValueError, match=rf"shift_tokens: .*length {expected}\b"):
        Decoder(dim=8, depth=3, heads=2, shift_tokens=(1, 0), **kw)


@pytest.mark.parametrize("value", [-1, True, 1.5, (1, -1, 0, 0), "1"])
def test_bad_shift_values_are_refused(value):
    with pytest.raises(ValueError, match="shift_tokens"):
        Decoder(dim=8, depth=2, heads=2, shift_tokens=value)


def test_shift_wider_than_the_features_is_refused():
    with pytest.raises(ValueError, match="shift_tokens"):
        Decoder(dim=8, depth=1, heads=2, shift_tokens=8)


def test_docstring_examples():
    result = doctest.testmod(layout)
    assert result.attempted > 0 and result.failed == 0
