"""RoPE scaling (position interpolation, NTK-aware base, YaRN): closed forms, continuity at factor 1,
cache equals no cache and Transformer-XL memory equals one joint pass, refusals."""

import math

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.positional.rope_scaling import RopeScaling, ntk_scaled_base, yarn_attention_factor, yarn_ramp
from labml_style_nn.positional.rotary import RotaryEmbedding

POS = torch.arange(0, 300, 7)
SCALINGS = {
    "pi": dict(rotary_interpolation_factor=4.0),
    "ntk": dict(rotary_base_rescale_factor=4.0),
    "pi_ntk": dict(rotary_interpolation_factor=2.0, rotary_base_rescale_factor=2.0),
    "yarn": dict(rotary_yarn_factor=4.0, rotary_yarn_original_max_len=16),
}


@pytest.mark.parametrize("scaling", [
    RopeScaling(interpolation_factor=1.0), RopeScaling(base_rescale_factor=1.0),
    RopeScaling(yarn_factor=1.0, yarn_original_max_len=64),
])
def test_factor_one_is_the_unscaled_embedding(scaling):
    torch.testing.assert_close(RotaryEmbedding(16, scaling=scaling)(POS), RotaryEmbedding(16)(POS), rtol=0, atol=0)


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0])
def test_interpolation_at_factor_s_equals_unscaled_positions_over_s(s):
    scaled = RotaryEmbedding(16, scaling=RopeScaling(interpolation_factor=s))
    torch.testing.assert_close(scaled(POS), RotaryEmbedding(16)(POS.float() / s), rtol=0, atol=0)


@pytest.mark.parametrize("s", [2.0, 8.0])
def test_ntk_keeps_the_fastest_pair_and_interpolates_the_slowest_by_s(s):
    r = 16
    plain, ntk = RotaryEmbedding(r), RotaryEmbedding(r, scaling=RopeScaling(base_rescale_factor=s))
    assert ntk_scaled_base(10000.0, s, r) == pytest.approx(10000.0 * s ** (r / (r - 2)))
    torch.testing.assert_close(ntk.inv_freq[0], plain.inv_freq[0])
    torch.testing.assert_close(ntk.inv_freq[-1], plain.inv_freq[-1] / s, rtol=1e-5, atol=0)
    # in between: $\theta'_k = \theta_k s^{-2k/(r-2)}$
    k = torch.arange(r // 2)
    torch.testing.assert_close(ntk.inv_freq, plain.inv_freq * s ** (-2 * k / (r - 2)), rtol=1e-5, atol=0)


def test_yarn_leaves_fast_pairs_interpolates_slow_ones_and_blends_between():
    r, s, L = 32, 4.0, 1024
    plain = RotaryEmbedding(r)
    yarn = RotaryEmbedding(r, scaling=RopeScaling(yarn_factor=s, yarn_original_max_len=L))
    turns = L * plain.inv_freq / (2 * math.pi)
    fast, slow = turns > 32, turns < 1
    blend = ~fast & ~slow
    assert fast.any() and slow.any() and blend.any()
    torch.testing.assert_close(yarn.inv_freq[fast], plain.inv_freq[fast])
    torch.testing.assert_close(yarn.inv_freq[slow], plain.inv_freq[slow] / s)
    gamma = (turns[blend] - 1) / 31
    torch.testing.assert_close(yarn.inv_freq[blend], (1 - gamma) * plain.inv_freq[blend] / s + gamma * plain.inv_freq[blend])
    # the temperature: $\sqrt{1/t} = 0.1 \ln s + 1$ on cos and sin, so on queries and keys
    assert yarn.magnitude == pytest.approx(0.1 * math.log(4) + 1)
    torch.testing.assert_close(yarn(POS), yarn.angles(POS, magnitude=False) * yarn.magnitude)
    assert yarn_attention_factor(1.0) == 1.0
    assert yarn_ramp(torch.tensor([0.0, 1.0, 32.0, 40.0]), 1.0, 32.0).tolist() == [0.0, 0.0, 1.0, 1.0]


def _score(rot, q, k, i, j):
    cos, sin = rot(torch.tensor([i, j])).double()
    qi = q * cos[0] + torch.cat((-q[4:], q[:4])) * sin[0]
    kj = k * cos[1] + torch.cat((-k[4:], k[:4])) * sin[1]
    return (qi * kj).sum()


def test_scaled_rotations_still_depend_on_distance_only():
    torch.manual_seed(0)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    for scaling in (RopeScaling(interpolation_factor=3.0), RopeScaling(yarn_factor=4.0, yarn_original_max_len=32)):
        rot = RotaryEmbedding(8, scaling=scaling)
        torch.testing.assert_close(_score(rot, q, k, 3, 10), _score(rot, q, k, 103, 110), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(_score(rot, q, k, 3, 10), _score(rot, q, k, 3, 30))


def model(kw, depth=2, **wrapper):
    torch.manual_seed(0)
    dec = Decoder(dim=32, depth=depth, heads=4, attn_dim_head=16, rotary_pos_emb=True, rotary_emb_dim=16, **kw)
    return TransformerWrapper(num_tokens=50, max_seq_len=16, attn_layers=dec, **wrapper).eval()


@pytest.mark.parametrize("name", SCALINGS)
def test_scaling_changes_the_output(name):
    x = torch.randint(0, 50, (2, 24))
    assert not torch.allclose(model(SCALINGS[name])(x), model({})(x), atol=1e-4)


@pytest.mark.parametrize("name", SCALINGS)
def test_cache_equals_no_cache(name):
    net = model(SCALINGS[name])
    x = torch.randint(0, 50, (2, 40))
    full = net(x)
    cache = LayersCache(net.attn_layers, batch=2, max_len=40)
    steps = [net(x[:, :30], cache=cache)] + [net(x[:, t:t + 1], cache=cache) for t in range(30, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", SCALINGS)
def test_xl_memory_equals_one_joint_pass(name):
    net = model(SCALINGS[name], max_mem_len=20)
    x = torch.randint(0, 50, (2, 36))
    full = net(x)
    first, mems = net(x[:, :20], return_mems=True)
    second = net(x[:, 20:], mems=mems)
    torch.testing.assert_close(torch.cat((first, second), dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw, word", [
    (dict(rotary_interpolation_factor=0.5), "rotary_interpolation_factor"),
    (dict(rotary_base_rescale_factor="2"), "rotary_base_rescale_factor"),
    (dict(rotary_yarn_factor=4.0), "rotary_yarn_original_max_len"),
    (dict(rotary_yarn_original_max_len=64), "rotary_yarn_original_max_len"),
    (dict(rotary_yarn_factor=0.9, rotary_yarn_original_max_len=64), "rotary_yarn_factor"),
    (dict(rotary_yarn_factor=2.0, rotary_yarn_original_max_len=64, rotary_interpolation_factor=2.0),
     "rotary_yarn_factor"),
])
def test_bad_settings_are_refused_by_name(kw, word):
    with pytest.raises(ValueError, match=word):
        Decoder(dim=32, depth=1, heads=4, rotary_pos_emb=True, **kw)


def test_scaling_without_rotary_is_refused():
    with pytest.raises(ValueError, match="rotary_interpolation_factor.*rotary_pos_emb"):
        Decoder(dim=32, depth=1, heads=4, rotary_interpolation_factor=2.0)
