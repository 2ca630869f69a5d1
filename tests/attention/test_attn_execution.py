"""x-transformers' execution and shape keywords of attention: `flash`, `attend_sdp_kwargs`, `onnxable`,
`flash_pack_seq`, `custom_attn_fn`, `dim_context`, `value_dim_head`, `dim_out`, `project_out`."""

import pytest
import torch
from torch import nn
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import CrossAttender, Decoder, Encoder
from labml_style_nn.attention.attention import Attention

DIM, H, D = 32, 4, 8
WRAP = dict(num_tokens=64, max_seq_len=32)


def _pair(**kwargs):
    torch.manual_seed(0)
    plain = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D)
    other = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, **kwargs)
    other.load_state_dict(plain.state_dict())
    return plain.eval(), other.eval()


def test_flash_forces_the_fused_kernel_and_refuses_what_needs_scores():
    plain, flash = _pair(attn_flash=True)
    x = torch.randn(2, 9, DIM)
    torch.testing.assert_close(flash(x), plain(x))
    # Asking for the weights takes the explicit path without flash, and is refused with it.
    sink = []
    plain(x, attn_sink=sink)
    assert len(sink) == 1
    with pytest.raises(ValueError, match="flash"):
        flash(x, attn_sink=[])
    for other in (dict(attn_talking_heads=True), dict(attn_pre_talking_heads=True), dict(attn_sparse_topk=2),
                  dict(attn_custom_attn_fn=torch.sigmoid), dict(residual_attn=True)):
        with pytest.raises(ValueError, match=f"flash and .*{next(iter(other))}"):
            Decoder(dim=DIM, depth=1, attn_flash=True, **other)
    # A technique the rule does not know is refused by the module itself, naming it.
    with pytest.raises(ValueError, match="flash: .*Sigmoid"):
        Attention(DIM, heads=H, dim_head=D, normaliser=nn.Sigmoid(), fused=_fused(flash=True))


def _fused(**kwargs):
    from labml_style_nn.attention.fast_attention import DEFAULT_SDP_KWARGS, FusedKernel
    return FusedKernel.from_keywords(kwargs.get("flash", False), kwargs.get("sdp", DEFAULT_SDP_KWARGS),
                                     kwargs.get("onnxable", False))


def test_attend_sdp_kwargs_restricts_the_backends():
    plain, math_only = _pair(attn_attend_sdp_kwargs=dict(enable_math=True, enable_flash=False,
                                                         enable_mem_efficient=False))
    x = torch.randn(2, 9, DIM)
    torch.testing.assert_close(math_only(x), plain(x), atol=1e-6, rtol=1e-5)
    # Only a backend that cannot run on a CPU: PyTorch finds no kernel, so the restriction acts.
    _, gpu_only = _pair(attn_attend_sdp_kwargs=dict(enable_mem_efficient=True))
    with pytest.raises(RuntimeError, match="[Nn]o (available kernel|viable backend)"):
        gpu_only(x)
    for bad in (dict(enable_flash=False, enable_math=False), dict(enable_quantum=True), dict(enable_math=1)):
        with pytest.raises(ValueError, match="attn_attend_sdp_kwargs"):
            Decoder(dim=DIM, depth=1, attn_attend_sdp_kwargs=bad)


def test_onnxable_builds_the_causal_mask_instead_of_is_causal(sdpa_calls):
    plain, onnx = _pair(attn_onnxable=True)
    x = torch.randn(1, 9, DIM)
    out = plain(x)
    assert sdpa_calls[-1]["is_causal"] and sdpa_calls[-1]["attn_mask"] is None
    torch.testing.assert_close(onnx(x), out)
    assert not sdpa_calls[-1]["is_causal"]
    mask = sdpa_calls[-1]["attn_mask"]
    assert torch.equal(mask[0, 0], torch.ones(9, 9, dtype=torch.bool).tril())


def test_flash_pack_seq_is_refused_with_the_reason():
    Decoder(dim=DIM, depth=1, attn_flash_pack_seq=False)
    with pytest.raises(ValueError, match="attn_flash_pack_seq: .*flash-attn"):
        Decoder(dim=DIM, depth=1, attn_flash=True, attn_flash_pack_seq=True)


def test_custom_attn_fn_replaces_the_softmax():
    attn = Attention(DIM, heads=H, dim_head=D, normaliser=torch.sigmoid)
    x = torch.randn(2, 6, DIM)
    # Reference: $o = W_O\, \sigma(q k^\top / \sqrt d)\, v$
    q, k, v = (t.unflatten(-1, (H, D)).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    ref = (torch.sigmoid(q @ k.transpose(-1, -2) * D ** -0.5) @ v).transpose(1, 2).flatten(2)
    torch.testing.assert_close(attn(x)[0], attn.to_out(ref), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="custom_attn_fn and attn_use_entmax15"):
        Encoder(dim=DIM, depth=1, attn_custom_attn_fn=torch.sigmoid, attn_use_entmax15=True)
    with pytest.raises(ValueError, match="attn_custom_attn_fn: expected"):
        Encoder(dim=DIM, depth=1, attn_custom_attn_fn="sigmoid")


def test_cross_attn_dim_context_sets_the_context_width():
    model = CrossAttender(dim=DIM, depth=1, heads=H, cross_attn_dim_context=24)
    attn = model.blocks[0].fn
    assert attn.to_kv.in_features == 24
    assert model(torch.randn(2, 5, DIM), context=torch.randn(2, 7, 24)).shape == (2, 5, DIM)
    with pytest.raises(ValueError, match="attn_dim_context: self-attention"):
        Decoder(dim=DIM, depth=1, cross_attend=True, attn_dim_context=24)
    with pytest.raises(ValueError, match="dim_context .* and cross_attn_dim_context"):
        CrossAttender(dim=DIM, depth=1, dim_context=16, cross_attn_dim_context=24)


def test_value_dim_head_dim_out_and_project_out_shapes():
    attn = Attention(DIM, heads=H, dim_head=D, value_dim_head=5, dim_out=20)
    x = torch.randn(2, 6, DIM)
    assert attn.to_qkv.out_features == H * D * 2 + H * 5 and attn.to_out.in_features == H * 5
    out = attn(x)[0]
    assert out.shape == (2, 6, 20)
    # The explicit path (asked for by `attn_sink`) computes the same with the narrower values.
    torch.testing.assert_close(attn(x, attn_sink=[])[0], out, atol=1e-5, rtol=1e-5)
    # In a stack the output must keep the residual stream's width.
    with pytest.raises(ValueError, match="attn_dim_out: .*expected 32"):
        Decoder(dim=DIM, depth=1, attn_dim_out=20)
    Decoder(dim=DIM, depth=1, attn_dim_out=DIM)
    # One head as wide as the model: no output projection unless asked for, as in x-transformers.
    assert isinstance(Decoder(dim=DIM, depth=1, heads=1, attn_dim_head=DIM).blocks[0].fn.to_out, nn.Identity)
    assert isinstance(Decoder(dim=DIM, depth=1, heads=1, attn_dim_head=16).blocks[0].fn.to_out, nn.Linear)
    assert isinstance(Decoder(dim=DIM, depth=1, heads=1, attn_dim_head=DIM, attn_project_out=True)
                      .blocks[0].fn.to_out, nn.Linear)
    assert isinstance(Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, attn_project_out=False)
                      .blocks[0].fn.to_out, nn.Identity)
    with pytest.raises(ValueError, match="attn_project_out=False: .* = 64 wide"):
        Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=16, attn_project_out=False)


@pytest.mark.parametrize("kwargs", [
    dict(attn_value_dim_head=12, rotary_pos_emb=True),
    dict(heads=1, attn_dim_head=DIM),
    dict(attn_project_out=False, attn_dim_head=D),
    dict(attn_flash=True, attn_onnxable=True, rotary_pos_emb=True),
    dict(attn_custom_attn_fn=torch.sigmoid, attn_attend_sdp_kwargs=dict(enable_math=True)),
], ids=["value_dim_head", "one_head", "project_out", "flash_onnxable", "custom_attn_fn"])
def test_parity_with_xtransformers(kwargs):
    ours, theirs = build_pair(WRAP, "Decoder", dict(dict(dim=DIM, depth=2, heads=H), **kwargs))
    assert_same_logits(ours, theirs, num_tokens=64, grads="rotary_pos_emb" in kwargs and "attn_flash" not in kwargs)


def test_flash_intermediates_hold_no_weights_as_in_x_transformers():
    # x-transformers' flash layers give intermediates without attention weights; asked for explicitly
    # (return_attn), the weights are refused here.
    from labml_style_nn import TransformerWrapper

    torch.manual_seed(0)
    for layers in (dict(attn_flash=True), dict(cross_attend=True, cross_attn_flash=True)):
        net = TransformerWrapper(num_tokens=16, max_seq_len=8,
                                 attn_layers=Decoder(dim=DIM, depth=1, heads=H, **layers)).eval()
        x = torch.randint(0, 16, (2, 6))
        extra = dict(context=torch.randn(2, 3, DIM)) if "cross_attend" in layers else {}
        logits, inter = net(x, return_intermediates=True, **extra)
        torch.testing.assert_close(logits, net(x, **extra))
        assert inter.attn_intermediates == [] and len(inter.hiddens) == 1
        _, inter = net.attn_layers(torch.randn(2, 6, DIM), return_hiddens=True, **extra)
        assert inter.attn_intermediates == []
        with pytest.raises(ValueError, match="flash"):
            net(x, return_attn=True, **extra)
