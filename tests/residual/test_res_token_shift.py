"""Token shift: exact amounts on a hand-made example, causality, padding, state across calls."""

import pytest
import torch

from labml_style_nn import Decoder, Encoder
from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.residual.token_shift import ShiftState, ShiftTokens, shift_tokens


def ramp(n=5, d=7):
    """Feature f of position t (1-based) holds 10 t + f, so a value says where it came from."""
    t = torch.arange(1, n + 1, dtype=torch.float32)[:, None]
    f = torch.arange(d, dtype=torch.float32)[None, :]
    return (10 * t + f)[None]  # (1, n, d)


def test_hand_made_example_shift_two():
    # d = 7, s = 2: chunks of width 2 -> features 0-1 stay, 2-3 move by 1, 4-5 move by 2, 6 stays
    out = shift_tokens(ramp(), 2)[0]
    expected = torch.tensor([
        [10, 11, 0, 0, 0, 0, 16],
        [20, 21, 12, 13, 0, 0, 26],
        [30, 31, 22, 23, 14, 15, 36],
        [40, 41, 32, 33, 24, 25, 46],
        [50, 51, 42, 43, 34, 35, 56],
    ], dtype=torch.float32)
    torch.testing.assert_close(out, expected)


def test_zero_shift_is_the_identity_and_chunks_cover_every_feature():
    x = ramp()
    torch.testing.assert_close(shift_tokens(x, 0), x)
    out = shift_tokens(x, 3)  # width 1: features 0..3 shifted by 0..3, features 4..6 unshifted
    for c in range(4):
        torch.testing.assert_close(out[0, c:, c], x[0, : 5 - c, c])
        assert (out[0, :c, c] == 0).all()
    torch.testing.assert_close(out[0, :, 4:], x[0, :, 4:])


def test_padding_shifts_in_zeros():
    x = ramp()
    mask = torch.tensor([[False, True, True, False, True]])  # padding in front and in the middle
    out = shift_tokens(x, 1, mask=mask)[0]
    # width 3: features 0-2 stay (zeroed at padded rows), 3-5 come from t - 1, 6 stays
    assert (out[1, 3:6] == 0).all()   # predecessor is padding
    torch.testing.assert_close(out[2, 3:6], x[0, 1, 3:6])
    assert (out[4, 3:6] == 0).all()
    y = x.clone()
    y[0, ~mask[0]] = 1e4
    torch.testing.assert_close(shift_tokens(y, 1, mask=mask)[0, mask[0]], out[mask[0]])


@pytest.mark.parametrize("amount", [1, 2, 3])
def test_causal(amount):
    x = torch.randn(2, 8, 9)
    y = x.clone()
    y[:, 5:] += 1
    torch.testing.assert_close(shift_tokens(x, amount)[:, :5], shift_tokens(y, amount)[:, :5])


@pytest.mark.parametrize("amount", [1, 2, 3])
@pytest.mark.parametrize("splits", [(4, 6), (1, 1, 1, 7), (2, 8)])
def test_state_across_calls_equals_one_call(amount, splits):
    x = torch.randn(2, 10, 8)
    mask = torch.rand(2, 10) > 0.3
    state = ShiftState()
    parts, start = [], 0
    for n in splits:
        parts.append(shift_tokens(x[:, start:start + n], amount, mask=mask[:, :start + n], state=state))
        start += n
    torch.testing.assert_close(torch.cat(parts, dim=1), shift_tokens(x, amount, mask=mask))


def test_module_and_width_check():
    x = torch.randn(1, 3, 4)
    torch.testing.assert_close(ShiftTokens(1)(x), shift_tokens(x, 1))
    with pytest.raises(ValueError, match="shift_tokens"):
        shift_tokens(x, 4)


@pytest.mark.parametrize("shifts", [1, 2, (1, 0, 2, 1)])
def test_cached_generation_equals_one_pass(shifts):
    torch.manual_seed(0)
    dec = Decoder(dim=12, depth=2, heads=2, attn_dim_head=6, shift_tokens=shifts).eval()
    x = torch.randn(2, 9, 12)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :3] = False  # left padding in the prompt
    full = dec(x, mask=mask)
    cache = LayersCache(dec, batch=2, max_len=9)
    steps = [dec(x[:, :4], mask=mask[:, :4], cache=cache)]
    steps += [dec(x[:, t:t + 1], mask=mask[:, t:t + 1], cache=cache) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1)[mask], full[mask], atol=1e-5, rtol=1e-4)


def test_shift_is_wired_in_the_stack():
    """Token shift lets a feed-forward block see the previous token: with one block
    of amount 1 the output at t changes when token t-1 changes, and not when t-2 does."""
    torch.manual_seed(0)
    enc = Encoder(dim=8, depth=1, heads=2, sandwich_coef=1, shift_tokens=(0, 1))
    ff = enc.blocks[1]
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[0, 2] = torch.randn(8)
    def h(t):
        return ff.join(ff.fn(ff.branch_input(t)), t)
    assert not torch.allclose(h(x)[0, 3], h(y)[0, 3])
    torch.testing.assert_close(h(x)[0, 4], h(y)[0, 4])
