"""Adaptive norms and the adaptive branch gate (DiT): the condition vector passed at call time."""

import doctest
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn import Decoder, Encoder
from labml_style_nn.generation import LayersCache
from labml_style_nn.norms import adaptive_norm
from labml_style_nn.norms.adaptive_norm import AdaptiveLayerScale, AdaptiveNorm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import build_pair, copy_weights  # noqa: E402

D = 16
SMALL = dict(dim=D, depth=2, heads=2, attn_dim_head=8)
ADAPTIVE = dict(use_adaptive_rmsnorm=True, use_adaptive_layerscale=True, adaptive_condition_mlp=True,
                adaptive_condition_mlp_expansion=2, dim_condition=6)


def test_zero_initialised_maps_give_a_plain_norm_and_a_fixed_gate():
    x, c = torch.randn(2, 5, D), torch.randn(2, 1, 6)
    torch.testing.assert_close(AdaptiveNorm(D, 6)(x, condition=c), F.layer_norm(x, (D,)))
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(AdaptiveNorm(D, 6, rms=True)(x, condition=c), x / rms)
    torch.testing.assert_close(AdaptiveLayerScale(D, 6)(x, condition=c), x * torch.sigmoid(torch.tensor(-2.0)))


def test_the_condition_changes_the_output_and_the_stack_stays_causal():
    torch.manual_seed(0)
    model = Decoder(**SMALL, **ADAPTIVE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, c = torch.randn(2, 8, D), torch.randn(2, 6)
    out = model(x, condition=c)
    assert not torch.allclose(out, model(x, condition=c + 1), atol=1e-4)
    # One condition per token works too, and equals the per-sequence one when every token has the same.
    torch.testing.assert_close(model(x, condition=c[:, None].expand(2, 8, 6)), out)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 3, D)
    torch.testing.assert_close(model(x2, condition=c)[:, :5], out[:, :5])


def test_padding_invariant():
    torch.manual_seed(0)
    model = Encoder(**SMALL, use_adaptive_layernorm=True)
    x, c = torch.randn(2, 7, D), torch.randn(2, D)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, -3:] = False
    x2 = x.clone()
    x2[~mask] = 50 * torch.randn_like(x2[~mask])
    torch.testing.assert_close(model(x2, mask=mask, condition=c)[mask], model(x, mask=mask, condition=c)[mask])


def test_cached_decoding_equals_the_full_pass():
    torch.manual_seed(0)
    model = Decoder(**SMALL, **ADAPTIVE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, c = torch.randn(2, 6, D), torch.randn(2, 6)
    cache = LayersCache(model, 2, 6)
    with torch.no_grad():
        steps = [model(x[:, :3], cache=cache, condition=c)] + [model(x[:, t:t + 1], cache=cache, condition=c)
                                                               for t in range(3, 6)]
        torch.testing.assert_close(torch.cat(steps, dim=1), model(x, condition=c), atol=1e-5, rtol=1e-4)


def test_condition_required_refused_and_checked():
    model = Decoder(**SMALL, use_adaptive_layernorm=True)
    x = torch.randn(2, 4, D)
    with pytest.raises(ValueError, match="condition"):
        model(x)
    with pytest.raises(ValueError, match="condition"):
        model(x, condition=torch.randn(2, D + 1))
    with pytest.raises(ValueError, match="condition"):
        Decoder(**SMALL)(x, condition=torch.randn(2, D))
    with pytest.warns(UserWarning, match="dim_condition: has no effect without use_adaptive_layernorm"):
        Decoder(**SMALL, dim_condition=8)  # x-transformers ignores it; a warning says so
    with pytest.raises(ValueError, match="reversible and use_adaptive_layernorm"):
        Decoder(**SMALL, use_adaptive_layernorm=True, reversible=True)


def test_parity_with_x_transformers_and_gradients():
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder", dict(SMALL, **ADAPTIVE))
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    copy_weights(ours, theirs)
    x, c = torch.randn(2, 7, D, requires_grad=True), torch.randn(2, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, -2:] = False
    a, b = ours.attn_layers(x, mask=mask, condition=c), theirs.attn_layers(x, mask=mask, condition=c)
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-4)
    ga = torch.autograd.grad(a[mask].square().sum(), x)[0]
    gb = torch.autograd.grad(b[mask].square().sum(), x)[0]
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-4)


def test_docstring_examples():
    result = doctest.testmod(adaptive_norm)
    assert result.attempted > 0 and result.failed == 0
