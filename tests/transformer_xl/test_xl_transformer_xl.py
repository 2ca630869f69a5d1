"""The Transformer-XL stack: memory equals a joint pass, causality, the seed's API and errors."""

import doctest

import pytest
import torch

import labml_style_nn.transformer_xl.relative_mha as relative_mha_module
import labml_style_nn.transformer_xl.transformer_xl as transformer_xl_module
from labml_style_nn.transformer_xl import (
    FeedForward,
    RelativeMultiHeadAttention,
    TransformerXL,
    TransformerXLLayer,
    causal_mask_with_memory,
    update_memory,
)

D_MODEL, HEADS, D_FF, N_LAYERS = 16, 4, 32, 3


def make_model(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    layer = TransformerXLLayer(d_model=D_MODEL,
                               self_attn=RelativeMultiHeadAttention(HEADS, D_MODEL, dropout),
                               feed_forward=FeedForward(D_MODEL, D_FF, dropout),
                               dropout_prob=dropout)
    model = TransformerXL(layer, N_LAYERS)
    # Non-zero u, v so the global bias terms are exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".u", ".v")):
                p.normal_()
    return model


def test_docstring_examples():
    for module in (relative_mha_module, transformer_xl_module):
        assert doctest.testmod(module).failed == 0


def test_seed_api_shapes_and_detached_memory():
    model = make_model()
    x = torch.randn(5, 2, D_MODEL, requires_grad=True)
    out, new_mem = model(x, [], causal_mask_with_memory(5, 0))
    assert out.shape == (5, 2, D_MODEL)
    assert len(new_mem) == N_LAYERS
    assert all(m.shape == (5, 2, D_MODEL) and not m.requires_grad for m in new_mem)
    # The first memory is the stack's input; the layers are independent copies
    torch.testing.assert_close(new_mem[0], x.detach())
    l0, l1 = model.layers[0].self_attn.query.weight, model.layers[1].self_attn.query.weight
    assert l0 is not l1 and l0.data_ptr() != l1.data_ptr()
    # Next segment with that memory
    out2, mem2 = model(torch.randn(3, 2, D_MODEL), new_mem, causal_mask_with_memory(3, 5))
    assert out2.shape == (3, 2, D_MODEL) and all(m.shape == (3, 2, D_MODEL) for m in mem2)


@pytest.mark.parametrize("len1,len2", [(4, 3), (2, 5)])
def test_segment_with_memory_equals_joint_pass(len1, len2):
    model = make_model(seed=1).eval()
    seg1, seg2 = torch.randn(len1, 2, D_MODEL), torch.randn(len2, 2, D_MODEL)
    with torch.no_grad():
        joint, _ = model(torch.cat([seg1, seg2]), [], causal_mask_with_memory(len1 + len2, 0))
        _, mem = model(seg1, [], causal_mask_with_memory(len1, 0))
        out2, _ = model(seg2, mem, causal_mask_with_memory(len2, len1))
    torch.testing.assert_close(out2, joint[len1:], atol=1e-4, rtol=1e-4)


def test_memory_over_three_segments_with_update_memory():
    model = make_model(seed=2).eval()
    segs = [torch.randn(3, 1, D_MODEL) for _ in range(3)]
    with torch.no_grad():
        joint, _ = model(torch.cat(segs), [], causal_mask_with_memory(9, 0))
        mem, outs = [], []
        for seg in segs:
            mem_len = mem[0].shape[0] if mem else 0
            out, new = model(seg, mem, causal_mask_with_memory(3, mem_len))
            outs.append(out)
            mem = update_memory(mem, new, max_len=9)
    torch.testing.assert_close(torch.cat(outs), joint, atol=1e-4, rtol=1e-4)


def test_causal():
    model = make_model(seed=3).eval()
    mem = [torch.randn(2, 2, D_MODEL) for _ in range(N_LAYERS)]
    x = torch.randn(6, 2, D_MODEL)
    y = x.clone()
    y[4:] = torch.randn(2, 2, D_MODEL)
    mask = causal_mask_with_memory(6, 2)
    with torch.no_grad():
        ox, _ = model(x, mem, mask)
        oy, _ = model(y, mem, mask)
    torch.testing.assert_close(ox[:4], oy[:4])
    assert not torch.allclose(ox[4:], oy[4:])


def test_fully_masked_row_forward_and_backward():
    model = make_model(seed=4).train()
    x = torch.randn(4, 2, D_MODEL, requires_grad=True)
    mask = causal_mask_with_memory(4, 0).clone()
    mask[2] = False
    out, _ = model(x, [], mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    u_grad = model.layers[0].self_attn.u.grad
    assert u_grad is not None and u_grad.abs().sum() > 0


def test_bad_inputs_name_the_argument():
    model = make_model()
    x = torch.randn(3, 2, D_MODEL)
    mem = [torch.randn(2, 2, D_MODEL) for _ in range(N_LAYERS)]
    with pytest.raises(ValueError, match="mem"):
        model(x, mem[:2], causal_mask_with_memory(3, 2))
    with pytest.raises(ValueError, match="mask"):
        model(x, mem, causal_mask_with_memory(3, 0))
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(3, 2, 8), [], causal_mask_with_memory(3, 0))
    with pytest.raises(ValueError, match="mem"):
        model(x, [torch.randn(2, 1, D_MODEL)] * N_LAYERS, causal_mask_with_memory(3, 2))
    with pytest.raises(ValueError, match="n_layers"):
        TransformerXL(model.layers[0], 0)
    with pytest.raises(ValueError, match="d_model"):
        TransformerXLLayer(d_model=8, self_attn=RelativeMultiHeadAttention(2, 16),
                           feed_forward=FeedForward(8, 16), dropout_prob=0.1)
    with pytest.raises(ValueError, match="mem_len"):
        causal_mask_with_memory(3, -1)
