"""The token embedding's initialisation (models/initialisation.py): x-transformers' draw by default, GPT-2's by keyword."""

import math

import pytest
import torch
from torch import nn

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.models.initialisation import init_token_embedding, token_embedding_std


def wrapper(**kw):
    return TransformerWrapper(num_tokens=512, max_seq_len=8, attn_layers=Decoder(dim=32, depth=1, heads=2), **kw)


def test_default_is_kaiming_normal_and_the_old_draw_is_a_keyword():
    torch.manual_seed(0)
    default, old = wrapper().token_emb.weight, wrapper(token_emb_init_std=0.02).token_emb.weight
    # 512 x 32 draws: the sample std is within 3% of the target
    assert default.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.03)
    assert old.std().item() == pytest.approx(0.02, rel=0.03)


def test_same_draw_as_x_transformers_kaiming_normal():
    # x-transformers' TokenEmbedding.init_ is nn.init.kaiming_normal_ on the (V, E) table
    ours, theirs = torch.empty(300, 48), torch.empty(300, 48)
    torch.manual_seed(3)
    init_token_embedding(ours)
    torch.manual_seed(3)
    nn.init.kaiming_normal_(theirs)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    assert token_embedding_std(48) == pytest.approx(math.sqrt(2 / 48))


def test_the_keyword_changes_the_output():
    torch.manual_seed(1)
    a = wrapper()
    torch.manual_seed(1)
    b = wrapper(token_emb_init_std=0.02)
    x = torch.randint(0, 512, (2, 8))
    assert not torch.allclose(a(x), b(x), atol=1e-3)


@pytest.mark.parametrize("bad", [0, -0.1, True, "0.02"])
def test_bad_std_names_the_keyword(bad):
    with pytest.raises(ValueError, match="token_emb_init_std"):
        wrapper(token_emb_init_std=bad)


def test_defaults_have_x_transformers_parameters_and_the_old_ones_are_reachable():
    # the default model has exactly x-transformers' parameters: no LayerNorm bias, no logit bias
    x_transformers = pytest.importorskip("x_transformers")
    theirs = x_transformers.TransformerWrapper(num_tokens=512, max_seq_len=8,
                                               attn_layers=x_transformers.Decoder(dim=32, depth=1, heads=2))
    ours, old = wrapper(), wrapper(logits_bias=True, token_emb_init_std=0.02)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs)
    assert ours.to_logits.bias is None and old.to_logits.bias is not None
    old_stack = TransformerWrapper(num_tokens=512, max_seq_len=8, attn_layers=Decoder(dim=32, depth=1, heads=2,
                                                                                        norm_bias=True))
    # three norms (two pre-norms and the final one) of 32 gain a bias each
    assert count(old_stack) == count(ours) + 3 * 32


def test_logits_bias_changes_the_output():
    torch.manual_seed(2)
    model = wrapper(logits_bias=True)
    x = torch.randint(0, 512, (2, 8))
    with torch.no_grad():
        model.to_logits.bias.zero_()
        before = model(x)
        model.to_logits.bias.fill_(0.5)
        assert torch.allclose(model(x), before + 0.5, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [None, 1])
def test_same_seed_draws_x_transformers_model_with_rotary_positions(kv_heads):
    """Under one seed both libraries draw the same numbers; the query/key rows are then put in
    x-transformers' pairing order (2p, 2p+1 there, p, p + r/2 here), so the two models are the same function."""
    x_transformers = pytest.importorskip("x_transformers")
    kw = dict(dim=32, depth=2, heads=2, attn_dim_head=64, rotary_pos_emb=True)
    if kv_heads:
        kw["attn_kv_heads"] = kv_heads
    torch.manual_seed(0)
    ours = TransformerWrapper(num_tokens=64, max_seq_len=8, attn_layers=Decoder(**kw))
    torch.manual_seed(0)
    theirs = x_transformers.TransformerWrapper(num_tokens=64, max_seq_len=8, attn_layers=x_transformers.Decoder(**kw))
    attn = theirs.attn_layers.layers[0][1]
    torch.testing.assert_close(ours.token_emb.weight, theirs.token_emb.emb.weight, rtol=0, atol=0)
    # the values are drawn alike; only the query and key rows are reordered
    torch.testing.assert_close(ours.attn_layers.blocks[0].fn.to_qkv.weight[-attn.to_v.weight.shape[0]:],
                               attn.to_v.weight, rtol=0, atol=0)
    assert not torch.equal(ours.attn_layers.blocks[0].fn.to_qkv.weight[:128], attn.to_q.weight)
    x = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_same_seed_draws_x_transformers_model_with_learned_positions():
    """With learned absolute positions the default model is x-transformers' model under one seed: the same
    numbers in every parameter (the token table drawn before the position table, as x-transformers does), and
    the same function (the table scaled by E^-1/2), so training from there follows the same path."""
    x_transformers = pytest.importorskip("x_transformers")
    kw = dict(dim=32, depth=2, heads=2)
    torch.manual_seed(5)
    ours = TransformerWrapper(num_tokens=64, max_seq_len=8, attn_layers=Decoder(**kw))
    torch.manual_seed(5)
    theirs = x_transformers.TransformerWrapper(num_tokens=64, max_seq_len=8, attn_layers=x_transformers.Decoder(**kw))
    torch.testing.assert_close(ours.pos_emb.emb.weight, theirs.pos_emb.emb.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.token_emb.weight, theirs.token_emb.emb.weight, rtol=0, atol=0)
    assert ours.pos_emb.emb_scale == theirs.pos_emb.scale == 32 ** -0.5
    x = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_position_table_keyword_gives_the_unscaled_gpt2_table():
    torch.manual_seed(0)
    default, gpt2 = wrapper(), wrapper(pos_emb_init_std=0.02)
    # 8 x 32 draws: the sample std within 25% of the target
    assert default.pos_emb.emb.weight.std().item() == pytest.approx(1.0, rel=0.25)
    assert default.pos_emb.emb_scale == 32 ** -0.5
    assert gpt2.pos_emb.emb.weight.std().item() == pytest.approx(0.02, rel=0.25) and gpt2.pos_emb.emb_scale == 1.0
    positions = torch.arange(8)
    torch.testing.assert_close(gpt2.pos_emb(positions), gpt2.pos_emb.emb.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pos_emb_init_std"):
        wrapper(pos_emb_init_std=-1.0)
    with pytest.raises(ValueError, match="pos_emb_init_std and l2norm_embed"):
        wrapper(pos_emb_init_std=0.02, l2norm_embed=True)
