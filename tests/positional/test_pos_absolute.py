"""Absolute positions: learned (the wrapper's default) and fixed sinusoids."""

import math

import pytest
import torch

from labml_style_nn import Decoder, Encoder, TransformerWrapper
from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.positional.absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding


def wrapper(cls=Decoder, **kw):
    torch.manual_seed(0)
    return TransformerWrapper(num_tokens=40, max_seq_len=12, attn_layers=cls(dim=16, depth=1, heads=2), **kw).eval()


def test_sinusoids_match_the_closed_form():
    D = 8
    p = SinusoidalPositionalEmbedding(D)(torch.arange(50))
    for t in (0, 1, 7, 49):
        for k in range(D // 2):
            w = t / 10000 ** (2 * k / D)
            assert math.isclose(p[t, k].item(), math.sin(w), abs_tol=1e-5)
            assert math.isclose(p[t, D // 2 + k].item(), math.cos(w), abs_tol=1e-5)


def test_sinusoids_need_an_even_width():
    with pytest.raises(ValueError, match="dim"):
        SinusoidalPositionalEmbedding(7)


def test_learned_is_the_default_and_is_a_lookup():
    model = wrapper()
    assert isinstance(model.pos_emb, LearnedPositionalEmbedding)
    emb = model.pos_emb(torch.tensor([3, 0, 3]))
    torch.testing.assert_close(emb[0], emb[2])
    torch.testing.assert_close(emb[1], model.pos_emb.emb.weight[0] * model.pos_emb.emb_scale)


@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_positions_make_the_model_order_aware(cls):
    """Without positions an encoder is permutation-equivariant; with them it is not."""
    x = torch.randint(0, 40, (1, 8))
    perm = torch.randperm(8)
    for kw, equivariant in ((dict(use_abs_pos_emb=False), cls is Encoder), ({}, False),
                            (dict(sinusoidal_pos_emb=True), False)):
        model = wrapper(cls, **kw)
        same = torch.allclose(model(x)[:, perm], model(x[:, perm]), atol=1e-5)
        assert same == equivariant, kw


def test_too_long_input_is_refused_by_learned_positions():
    model = wrapper()
    assert model(torch.randint(0, 40, (1, 12))).shape == (1, 12, 40)
    with pytest.raises(ValueError, match="max_seq_len=12"):
        model(torch.randint(0, 40, (1, 13)))


def test_sinusoidal_positions_have_no_maximum():
    model = wrapper(sinusoidal_pos_emb=True)
    assert isinstance(model.pos_emb, SinusoidalPositionalEmbedding)
    out = model(torch.randint(0, 40, (2, 30)))  # 2.5 x max_seq_len
    assert out.shape == (2, 30, 40) and torch.isfinite(out).all()


@pytest.mark.parametrize("kw", [{}, dict(sinusoidal_pos_emb=True)])
def test_cached_steps_continue_absolute_positions(kw):
    model = wrapper(**kw)
    x = torch.randint(0, 40, (2, 9))
    full = model(x)
    cache = LayersCache(model.attn_layers, batch=2, max_len=9)
    steps = [model(x[:, :6], cache=cache)] + [model(x[:, t:t + 1], cache=cache) for t in range(6, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_cache_past_max_seq_len_is_refused():
    model = wrapper()
    cache = LayersCache(model.attn_layers, batch=1, max_len=14)
    model(torch.randint(0, 40, (1, 12)), cache=cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(0, 40, (1, 1)), cache=cache)
