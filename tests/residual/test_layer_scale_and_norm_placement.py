"""LayerScale (CaiT), pre_and_post_norm and pre_norm_has_final_norm."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from labml_style_nn import Decoder
from labml_style_nn.residual.layer_scale import LayerScale

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import assert_same_logits, build_pair  # noqa: E402

D = 16
SMALL = dict(dim=D, depth=2, heads=2, attn_dim_head=8)


def test_layerscale_at_zero_makes_every_block_the_identity():
    x = torch.randn(2, 5, D)
    model = Decoder(**SMALL, use_layerscale=True, pre_norm_has_final_norm=False)
    torch.testing.assert_close(model(x), x)
    # The unit offset stores lambda - 1 (x-transformers' storage); without it, lambda itself.
    assert torch.all(model.blocks[0].layer_scale.gamma == -1)
    assert torch.all(Decoder(**SMALL, use_layerscale=True, norm_add_unit_offset=False).blocks[0].layer_scale.gamma == 0)
    scale = LayerScale(D, 0.1)
    torch.testing.assert_close(scale(x), 0.1 * x)
    torch.manual_seed(0)
    on = Decoder(**SMALL, use_layerscale=True, layerscale_init_value=0.1)(x)
    torch.manual_seed(0)
    assert not torch.allclose(on, Decoder(**SMALL)(x), atol=1e-4)


def test_pre_and_post_norm_formula_and_final_norms():
    model = Decoder(**SMALL, pre_and_post_norm=True)
    block = model.blocks[0]
    assert block.pre_norm is not None and block.post_norm is not None and isinstance(model.final_norm, nn.Identity)
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        h = block.branch_input(x)
        out, _ = block.fn(h)
        # $x \leftarrow \operatorname{Norm}'(x + F(\operatorname{Norm}(x)))$
        torch.testing.assert_close(block.join(out, x), block.post_norm(x + out))
    assert isinstance(Decoder(**SMALL, pre_norm_has_final_norm=False).final_norm, nn.Identity)
    assert not isinstance(Decoder(**SMALL).final_norm, nn.Identity)


@pytest.mark.parametrize("kw, message", [
    (dict(pre_and_post_norm=True, pre_norm=False), "pre_and_post_norm and pre_norm=False"),
    (dict(pre_and_post_norm=True, sandwich_norm=True), "pre_and_post_norm and sandwich_norm"),
    (dict(pre_norm_has_final_norm=False, pre_norm=False), "pre_norm_has_final_norm"),
    (dict(layerscale_init_value=0.1), "layerscale_init_value"),
    (dict(use_layerscale=True, use_adaptive_layerscale=True), "use_layerscale and use_adaptive_layerscale"),
    (dict(pre_and_post_norm=True, reversible=True), "reversible and pre_and_post_norm"),
])
def test_refusals_name_both_keywords(kw, message):
    with pytest.raises(ValueError, match=message):
        Decoder(**SMALL, **kw)


@pytest.mark.parametrize("kw", [dict(use_layerscale=True, layerscale_init_value=0.3, sandwich_norm=True),
                                dict(pre_and_post_norm=True), dict(pre_norm_has_final_norm=False)])
def test_parity_with_x_transformers(kw):
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder", dict(SMALL, **kw))
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert_same_logits(ours, theirs, 20, grads="use_layerscale" in kw)
