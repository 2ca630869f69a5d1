"""The output of a residual branch: `*_zero_init_output`, `*_output_proj_depth`, `*_sublayer_dropout`."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import Decoder

DIM = 32


def test_zero_init_makes_every_branch_start_at_zero():
    model = Decoder(dim=DIM, depth=2, heads=4, attn_zero_init_output=True, ff_zero_init_output=True,
                    attn_on_attn=True, cross_attend=True)
    model.final_norm = torch.nn.Identity()
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(model(x, context=torch.randn(2, 3, DIM)), x)  # every branch adds nothing
    one = Decoder(dim=DIM, depth=1, heads=4, ff_zero_init_output=True)
    assert (one.blocks[1].fn.proj_out.weight == 0).all() and (one.blocks[0].fn.to_out.weight != 0).any()


def test_depth_scaled_init_has_the_olmo_standard_deviation():
    torch.manual_seed(0)
    model = Decoder(dim=64, depth=1, heads=4, attn_dim_head=64, attn_output_proj_depth=2, ff_output_proj_depth=3)
    attn_w, ff_w = model.blocks[0].fn.to_out.weight, model.blocks[1].fn.proj_out.weight
    # $\sigma = (2\, d_{\text{in}}\, l)^{-1/2}$: d_in = 256, l = 2 -> 0.03125; d_in = 256, l = 3 -> 0.0255
    assert attn_w.std().item() == pytest.approx((2 * 256 * 2) ** -0.5, rel=0.05)
    assert ff_w.std().item() == pytest.approx((2 * 256 * 3) ** -0.5, rel=0.05)
    with pytest.raises(ValueError, match="zero_init_output and attn_output_proj_depth"):
        Decoder(dim=DIM, depth=1, attn_zero_init_output=True, attn_output_proj_depth=2)
    with pytest.raises(ValueError, match="project_out=False and attn_zero_init_output"):
        Decoder(dim=DIM, depth=1, heads=1, attn_dim_head=DIM, attn_project_out=False, attn_zero_init_output=True)


def test_sublayer_dropout_acts_on_the_output_only_in_training():
    torch.manual_seed(0)
    model = Decoder(dim=DIM, depth=1, heads=4, attn_sublayer_dropout=0.5, ff_sublayer_dropout=0.5)
    plain = Decoder(dim=DIM, depth=1, heads=4)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(model.eval()(x), plain.eval()(x))
    attn = model.blocks[0].fn.train()
    out = attn(x)[0]
    dropped = out == 0
    assert 0.3 < dropped.float().mean() < 0.7  # half of the output's features, after the projection
    with pytest.raises(ValueError, match="ff_sublayer_dropout: expected a probability"):
        Decoder(dim=DIM, depth=1, ff_sublayer_dropout=1.0)


def test_parity_with_xtransformers():
    kwargs = dict(dim=DIM, depth=2, heads=4, attn_sublayer_dropout=0.1, ff_sublayer_dropout=0.1,
                  attn_zero_init_output=True, ff_zero_init_output=True)
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder", kwargs)
    for name, p in list(ours.named_parameters()):
        if name.endswith(("to_out.weight", "proj_out.weight", "proj_out.bias")):
            assert (p == 0).all(), name
    assert_same_logits(ours, theirs, num_tokens=64)  # eval mode: the dropouts are off in both
