"""Positions owned by the stack: xPos, the dynamic position bias, custom ALiBi slopes, disable_abs_pos_emb."""

import doctest
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from labml_style_nn import Decoder, Encoder, TransformerWrapper
from labml_style_nn.positional import dynamic_position_bias, xpos
from labml_style_nn.positional.rotary import apply_rotary
from labml_style_nn.positional.xpos import XPosEmbedding

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import assert_same_logits, build_pair  # noqa: E402

D = 16
SMALL = dict(dim=D, depth=2, heads=2, attn_dim_head=8)


def score(table, q, k, i, j):
    """The xPos score of query q at position i and key k at position j."""
    qi = apply_rotary(q[None, None, None], table[:2, i:i + 1])
    kj = apply_rotary(k[None, None, None], table[2:, j:j + 1])
    return (qi * kj).sum()


def test_xpos_scores_are_relative_and_decay_with_distance():
    emb = XPosEmbedding(8, scale_base=4)
    table = emb(torch.arange(40))
    q, k = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(score(table, q, k, 9, 3), score(table, q, k, 36, 30), atol=1e-5, rtol=1e-4)
    # Aligned content (the same vector): the score falls as the key moves away.
    near, far = score(table, q, q, 20, 20), score(table, q, q, 20, 0)
    assert far.abs() < near.abs()
    with pytest.raises(ValueError, match="rotary_xpos and causal=False"):
        Encoder(**SMALL, rotary_xpos=True)
    assert Decoder(**SMALL, rotary_xpos=True, verbose=False).options.rotary_pos_emb  # xPos turns rotary on


def test_dynamic_bias_depends_only_on_the_distance_and_is_used():
    bias = dynamic_position_bias.DynamicPositionBias(8, heads=2, depth=2, log_distance=True, norm=True)
    b = bias(torch.arange(5), torch.arange(5))[0]
    for d in range(-4, 5):
        diag = torch.diagonal(b, offset=-d, dim1=-2, dim2=-1)
        assert torch.allclose(diag, diag[:, :1].expand_as(diag))
    torch.manual_seed(0)
    on = Decoder(**SMALL, dynamic_pos_bias=True)
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        for p in on.rel_pos.parameters():
            p.add_(torch.randn_like(p))
    out = on(x)
    with torch.no_grad():
        on.rel_pos.mlp[-1].weight.zero_()
        on.rel_pos.mlp[-1].bias.zero_()
    assert not torch.allclose(out, on(x), atol=1e-4)
    with pytest.raises(ValueError, match="dynamic_pos_bias and rel_pos_bias"):
        Decoder(**SMALL, dynamic_pos_bias=True, rel_pos_bias=True)
    with pytest.raises(ValueError, match="dynamic_pos_bias_norm"):
        Decoder(**SMALL, dynamic_pos_bias_norm=True)


def test_rel_pos_kwargs_gives_alibi_slopes_and_nothing_else():
    model = Decoder(**SMALL, alibi_pos_emb=True, rel_pos_kwargs=dict(slopes=[0.3, 0.7]))
    assert model.alibi.slopes.flatten().tolist() == pytest.approx([0.3, 0.7])
    for kw, message in [(dict(alibi_pos_emb=True, rel_pos_kwargs=dict(slopes=[0.3])), "one slope per ALiBi head"),
                        (dict(rel_pos_bias=True, rel_pos_kwargs=dict(scale=2.0)), "rel_pos_bias takes no options"),
                        (dict(rel_pos_kwargs=dict(slopes=[1.0, 2.0])), "has none")]:
        with pytest.raises(ValueError, match=message):
            Decoder(**SMALL, **kw)


def test_disable_abs_pos_emb():
    def wrapper(**kw):
        return TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(**SMALL, **kw))
    assert wrapper().pos_emb is not None and wrapper(rotary_pos_emb=True, verbose=False).pos_emb is None
    assert wrapper(disable_abs_pos_emb=True).pos_emb is None
    assert wrapper(rotary_pos_emb=True, disable_abs_pos_emb=False, verbose=False).pos_emb is not None
    # As x-transformers 2.31.10: off beside rotary and T5's bias, kept beside ALiBi and the dynamic bias.
    assert wrapper(rel_pos_bias=True).pos_emb is None
    assert wrapper(dynamic_pos_bias=True).pos_emb is not None and wrapper(alibi_pos_bias=True).pos_emb is not None
    assert wrapper(alibi_pos_bias=True, disable_abs_pos_emb=True).pos_emb is None
    assert TransformerWrapper(num_tokens=10, max_seq_len=8, use_abs_pos_emb=True,
                              attn_layers=Decoder(**SMALL, disable_abs_pos_emb=True)).pos_emb is None


def _copy_dynamic_bias(ours, theirs, put):
    mine = [m for m in ours.attn_layers.rel_pos.mlp if not isinstance(m, nn.SiLU)]
    flat = [m for seq in theirs.attn_layers.rel_pos.mlp for m in (seq if isinstance(seq, nn.Sequential) else [seq])]
    for a, b in zip(mine, [m for m in flat if m is not None and not isinstance(m, nn.SiLU)], strict=True):
        put(a.weight, b.gamma if hasattr(b, "gamma") else b.weight)  # x-transformers' first norm: gamma, no bias
        if getattr(a, "bias", None) is not None:
            put(a.bias, b.bias)


@pytest.mark.parametrize("kw", [
    dict(rotary_xpos=True, rotary_xpos_scale_base=8, rotary_emb_dim=4),
    dict(dynamic_pos_bias=True, dynamic_pos_bias_log_distance=True, dynamic_pos_bias_norm=True,
         dynamic_pos_bias_mlp_depth=3),
    dict(alibi_pos_bias=True, rel_pos_kwargs=dict(slopes=[0.3, 0.7]))])
def test_parity_with_x_transformers(kw):
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16, use_abs_pos_emb=False), "Decoder",
                              dict(SMALL, verbose=False, **kw))
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    extra = [_copy_dynamic_bias] if "dynamic_pos_bias" in kw else []
    assert_same_logits(ours, theirs, 20, extra=extra, grads="dynamic_pos_bias" in kw)


def test_alibi_model_with_x_transformers_defaults_is_the_same_function():
    # x-transformers keeps the learned absolute positions beside ALiBi: a plain weight copy agrees.
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder", dict(SMALL, alibi_pos_bias=True))
    assert ours.pos_emb is not None
    assert_same_logits(ours, theirs, 20)


def test_verbose_warns_instead_of_printing():
    with pytest.warns(UserWarning, match="rotary_pos_emb"):
        Decoder(**SMALL, rotary_pos_emb=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Decoder(**SMALL, rotary_pos_emb=True, verbose=False)


@pytest.mark.parametrize("module", [xpos, dynamic_position_bias])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
