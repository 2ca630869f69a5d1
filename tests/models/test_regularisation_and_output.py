"""Stochastic depth (layer_dropout), cross_attn_tokens_dropout and softclamp_output."""

import doctest
import sys
from pathlib import Path

import pytest
import torch

from labml_style_nn import Decoder, Encoder
from labml_style_nn.models import softclamp_output
from labml_style_nn.models.context_dropout import drop_context_tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import assert_same_logits, build_pair  # noqa: E402

D = 16
SMALL = dict(dim=D, depth=2, heads=2, attn_dim_head=8)


def test_layer_dropout_acts_in_training_only_and_skips_whole_blocks():
    torch.manual_seed(0)
    model = Decoder(**SMALL, layer_dropout=0.5, pre_norm_has_final_norm=False)
    x = torch.randn(2, 6, D)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    outs = []
    for seed in range(6):
        torch.manual_seed(seed)
        outs.append(model(x))
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    # Every block skipped: the stream passes unchanged.
    always = Decoder(**SMALL, layer_dropout=(0.999999,) * 4, pre_norm_has_final_norm=False).train()
    torch.testing.assert_close(always(x), x)
    with pytest.raises(ValueError, match="layer_dropout"):
        Decoder(**SMALL, layer_dropout=(0.1, 0.2))
    with pytest.raises(ValueError, match="layer_dropout"):
        Decoder(**SMALL, layer_dropout=1.0)


def test_context_tokens_dropout_keeps_real_tokens_in_order():
    context = torch.arange(8.0).view(1, 8, 1).expand(2, 8, 3)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    kept, kept_mask = drop_context_tokens(context, mask, 0.5)
    assert kept.shape == (2, 4, 3) and kept_mask.all()  # padding (row 1 has 5 real tokens) goes first
    assert torch.all(kept[..., 0].diff(dim=1) > 0) and kept[1, :, 0].max() < 5
    torch.manual_seed(0)
    model = Encoder(**SMALL, cross_attend=True, cross_attn_tokens_dropout=0.5)
    x, ctx = torch.randn(2, 4, D), torch.randn(2, 6, D)
    model.eval()
    torch.testing.assert_close(model(x, context=ctx), model(x, context=ctx))
    model.train()
    torch.manual_seed(1)
    a = model(x, context=ctx)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x, context=ctx))
    with pytest.raises(ValueError, match="cross_attn_tokens_dropout"):
        Encoder(**SMALL, cross_attn_tokens_dropout=0.5)


def test_softclamp_bounds_the_stream_before_the_final_norm():
    torch.manual_seed(0)
    model = Decoder(**SMALL, softclamp_output=True, softclamp_output_value=0.5, pre_norm_has_final_norm=False)
    x = 3 * torch.randn(2, 6, D)
    out = model(x)
    assert out.abs().max() <= 0.5
    torch.manual_seed(0)
    unclamped = Decoder(**SMALL, pre_norm_has_final_norm=False)(x)
    torch.testing.assert_close(out, 0.5 * torch.tanh(unclamped / 0.5))
    with pytest.raises(ValueError, match="softclamp_output_value"):
        Decoder(**SMALL, softclamp_output_value=10.0)


def test_softclamp_parity_with_x_transformers():
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder",
                              dict(SMALL, softclamp_output=True, softclamp_output_value=0.5))
    assert_same_logits(ours, theirs, 20)


def test_docstring_examples():
    result = doctest.testmod(softclamp_output)
    assert result.attempted > 0 and result.failed == 0
