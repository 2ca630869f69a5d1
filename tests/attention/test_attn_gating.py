"""Gated attention (`attn_gate_values` and its rank, headwise and output-gate keywords, `attn_swiglu_values`,
`attn_low_rank_silu_gates`) and the head gate (`attn_gate_value_heads`): closed forms, rules, parity."""

import pytest
import torch
import torch.nn.functional as F
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import Decoder
from labml_style_nn.attention.attention import Attention
from labml_style_nn.attention.gate_values import GateLogits, ValueGate
from labml_style_nn.attention.head_gate import HeadGate

DIM, H, D = 32, 4, 8


def _plain_and(gate):
    torch.manual_seed(0)
    plain = Attention(DIM, heads=H, dim_head=D)
    gated = Attention(DIM, heads=H, dim_head=D, output_gate=gate)
    gated.load_state_dict(plain.state_dict(), strict=False)
    return plain, gated


def _heads(attn, x):
    """The heads' aggregated values `(b, h, n, d)`, before any gate (a reference written here)."""
    q, k, v = (t.unflatten(-1, (H, D)).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    return F.scaled_dot_product_attention(q, k, v)


def test_head_gate_starts_open_and_gates_whole_heads():
    plain, gated = _plain_and(HeadGate(DIM, H))
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(gated(x)[0], torch.sigmoid(torch.tensor(10.0)) * plain(x)[0])
    with torch.no_grad():
        gated.output_gate.to_gate.weight.normal_()
    gate = torch.sigmoid(gated.output_gate.to_gate(x)).transpose(1, 2)[..., None]  # (b, h, n, 1)
    ref = plain.to_out((gate * _heads(plain, x)).transpose(1, 2).flatten(2))
    torch.testing.assert_close(gated(x)[0], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("silu", [False, True])
def test_input_and_output_gates_are_their_formula(silu):
    gate = ValueGate(DIM, H, D, input_rank=4, from_output=True, output_headwise=True, silu=silu)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in gate.parameters():
            p.normal_()
    plain, gated = _plain_and(gate)
    x = torch.randn(2, 6, DIM)
    o = _heads(plain, x)
    # $\ell = \operatorname{SiLU}(x W_\downarrow) W_\uparrow + \hat o W^o$ (one output logit per head)
    lx = (F.silu(x @ gate.to_gate.down.weight.t()) @ gate.to_gate.proj.weight.t()).unflatten(-1, (H, D))
    lo = (o.transpose(1, 2).flatten(2) @ gate.to_output_gate.proj.weight.t())[..., None]  # (b, n, h, 1)
    logits = (lx + lo).transpose(1, 2)
    ref = o * (F.silu(logits) if silu else logits.sigmoid())
    torch.testing.assert_close(gated(x)[0], plain.to_out(ref.transpose(1, 2).flatten(2)), atol=1e-5, rtol=1e-5)


def test_low_rank_gates_start_at_zero_and_check_their_rank():
    assert GateLogits(DIM, H * D, rank=4)(torch.randn(3, DIM)).abs().max() == 0
    assert GateLogits(DIM, H * D, rank=4, silu=False).silu is False
    with pytest.raises(ValueError, match="rank"):
        GateLogits(8, 8, rank=8)
    # swiglu: SiLU(0) = 0, the layer starts silent; sigmoid: one half.
    x = torch.randn(2, 6, DIM)
    plain, swiglu = _plain_and(ValueGate(DIM, H, D, silu=True))
    assert swiglu(x)[0].abs().max() < 1e-6


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(attn_gate_values_rank=4), "attn_gate_values_rank: only meaningful with attn_gate_values"),
    (dict(attn_output_gate_headwise=True), "attn_output_gate_headwise: only meaningful"),
    (dict(attn_gate_values=True, attn_gate_values_rank=4, attn_gate_values_headwise=True), "choose one"),
    (dict(attn_swiglu_values=True), "attn_swiglu_values: only meaningful"),
    (dict(attn_gate_values=True, attn_low_rank_silu_gates=False), "attn_low_rank_silu_gates=False"),
    (dict(cross_attend=True, cross_attn_output_gate_rank=2), "cross_attn_output_gate_rank: only meaningful"),
])
def test_options_without_their_gate_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Decoder(dim=DIM, depth=1, heads=H, **kwargs)


def copy_gates(ours, theirs, put):
    """Head scale, the head gate and the two gated-attention projections."""
    def logits(mine, th):
        if mine.down is not None:
            put(mine.down.weight, th.down.weight)
            put(mine.proj.weight, th.up.weight)
        else:
            put(mine.proj.weight, th.weight)

    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind == "f":
            continue
        gate = block.fn.output_gate
        for g in getattr(gate, "gates", [gate]):
            if isinstance(g, HeadGate):
                put(g.to_gate.weight, fn.to_v_head_gate.weight)
                put(g.to_gate.bias, fn.to_v_head_gate.bias)
            elif isinstance(g, ValueGate):
                if g.to_gate is not None:
                    logits(g.to_gate, fn.to_v_gate)
                if g.to_output_gate is not None:
                    logits(g.to_output_gate, fn.to_output_gate)
            else:
                put(g.scale, fn.head_scale_params)


@pytest.mark.parametrize("kwargs", [
    dict(attn_gate_values=True, attn_gate_values_rank=4, attn_output_gate=True, attn_swiglu_values=True),
    dict(attn_gate_values=True, attn_gate_values_headwise=True, attn_output_gate=True, attn_output_gate_rank=3,
         attn_low_rank_silu_gates=False, attn_head_scale=True, attn_gate_value_heads=True),
], ids=["rank_output_swiglu", "headwise_head_scale_head_gate"])
def test_parity_with_xtransformers(kwargs):
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder", dict(dim=DIM, depth=2, heads=H, **kwargs))
    torch.manual_seed(3)
    with torch.no_grad():  # move the zero-initialised gates, so that each one matters
        for name, p in theirs.named_parameters():
            if "gate" in name or "head_scale" in name:
                p.add_(torch.randn_like(p) * 0.3)
    assert_same_logits(ours, theirs, num_tokens=64, grads="attn_head_scale" in kwargs, extra=[copy_gates])
