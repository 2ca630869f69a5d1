"""The stack's norm keywords: DyT, Derf, SimpleRMSNorm, the unit offset of the gains and bias-free LayerNorm."""

import doctest
import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from labml_style_nn import Decoder
from labml_style_nn.norms.derf import Derf
from labml_style_nn.norms.dynamic_tanh import DynamicTanh
from labml_style_nn.norms.layer_norm import LayerNorm
from labml_style_nn.norms.rms_norm import RMSNorm, SimpleRMSNorm
from labml_style_nn.norms.scale_norm import ScaleNorm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import assert_same_logits, build_pair  # noqa: E402

D = 16
SMALL = dict(dim=D, depth=2, heads=2, attn_dim_head=8)


def test_closed_forms():
    x = torch.randn(3, 4, D)
    dyt = DynamicTanh(D, init_alpha=0.7)
    with torch.no_grad():
        dyt.gamma.uniform_(0.5, 2)
        dyt.beta.normal_()
    torch.testing.assert_close(dyt(x), torch.tanh(0.7 * x) * dyt.gamma + dyt.beta)
    derf = Derf(D)
    with torch.no_grad():
        derf.shift.fill_(0.3)
    torch.testing.assert_close(derf(x), torch.erf(0.5 * x + 0.3))
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(SimpleRMSNorm(D)(x), x / rms)
    assert not list(SimpleRMSNorm(D).parameters())


@pytest.mark.parametrize("make", [
    lambda o: LayerNorm(D, unit_offset=o), lambda o: RMSNorm(D, unit_offset=o), lambda o: ScaleNorm(D, unit_offset=o),
    lambda o: DynamicTanh(D, 0.6, unit_offset=o), lambda o: Derf(D, unit_offset=o)])
def test_unit_offset_changes_what_is_stored_not_the_function(make):
    plain, offset = make(False), make(True)
    x = torch.randn(2, 3, D)
    torch.testing.assert_close(offset(x), plain(x))
    # Stored gains start at zero, and weight decay alone pulls the function back to its initial one.
    gains = [p for n, p in offset.named_parameters() if n in ("weight", "gamma", "g", "alpha")]
    assert gains and all(torch.count_nonzero(p) == 0 for p in gains)
    with torch.no_grad():
        for p in offset.parameters():
            p.add_(torch.randn_like(p))
    moved = (offset(x) - plain(x)).abs().max()
    opt = torch.optim.AdamW(offset.parameters(), lr=0.5, weight_decay=1.0)
    for _ in range(20):
        opt.zero_grad()
        (offset(x) * 0).sum().backward()  # no gradient signal: weight decay only
        opt.step()
    if isinstance(offset, (LayerNorm, DynamicTanh, Derf)):
        with torch.no_grad():  # biases are not gains; take them out of the comparison
            for name in ("bias", "beta", "shift"):
                if getattr(offset, name, None) is not None:
                    getattr(offset, name).zero_()
                    if getattr(plain, name, None) is not None:
                        getattr(plain, name).zero_()
    assert (offset(x) - plain(x)).abs().max() < 0.05 * moved


def test_stack_keywords_choose_the_norm_and_change_the_output():
    x = torch.randn(2, 6, D)
    torch.manual_seed(0)
    base = Decoder(**SMALL)
    assert isinstance(base.final_norm, LayerNorm) and base.final_norm.unit_offset == 1.0  # x-transformers' default
    assert torch.count_nonzero(base.blocks[0].pre_norm.weight) == 0
    outputs = {}
    for kw, cls in [(dict(use_dynamic_tanh=True), DynamicTanh), (dict(use_derf=True), Derf),
                    (dict(use_simple_rmsnorm=True), SimpleRMSNorm), (dict(norm_bias=True), LayerNorm)]:
        torch.manual_seed(0)
        model = Decoder(**SMALL, **kw)
        assert all(isinstance(b.pre_norm, cls) for b in model.blocks) and isinstance(model.final_norm, cls)
        outputs[next(iter(kw))] = model(x)
    assert base.final_norm.bias is None and Decoder(**SMALL, norm_bias=True).final_norm.bias is not None
    torch.manual_seed(0)
    ref = Decoder(**SMALL)(x)
    for name, out in outputs.items():
        if name != "norm_bias":  # a zero bias changes nothing at initialisation; the parameter is new
            assert not torch.allclose(out, ref, atol=1e-4), name


@pytest.mark.parametrize("kw, message", [
    (dict(use_dynamic_tanh=True, use_derf=True), "use_dynamic_tanh and use_derf"),
    (dict(use_dynamic_tanh=True, pre_norm=False), "use_dynamic_tanh and pre_norm=False"),
    (dict(dynamic_tanh_init_alpha=0.5), "dynamic_tanh_init_alpha"),
    (dict(norm_bias=True, use_rmsnorm=True), "norm_bias=True and use_rmsnorm"),
    (dict(use_rezero=True, use_derf=True), "use_rezero and use_derf"),
    (dict(use_derf=True, norm_eps=1e-6), "norm_eps and use_derf"),
])
def test_meaningless_combinations_are_refused_by_name(kw, message):
    with pytest.raises(ValueError, match=message):
        Decoder(**SMALL, **kw)


@pytest.mark.parametrize("kw", [
    dict(use_dynamic_tanh=True, dynamic_tanh_init_alpha=0.7), dict(use_derf=True), dict(use_simple_rmsnorm=True),
    dict(use_scalenorm=True), dict(use_rmsnorm=True, norm_add_unit_offset=False), dict(pre_norm=False)])
def test_parity_with_x_transformers(kw):
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder", dict(SMALL, **kw))
    with torch.no_grad():  # away from the initial values, so a wrong offset would show
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert_same_logits(ours, theirs, 20, grads="derf" in str(kw))


@pytest.mark.parametrize("name", ["dynamic_tanh", "derf", "layer_norm", "rms_norm"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(f"labml_style_nn.norms.{name}"))
    assert result.attempted > 0 and result.failed == 0


def test_layer_norm_keeps_nn_layer_norm_names():
    assert isinstance(LayerNorm(D), nn.LayerNorm)
    assert set(LayerNorm(D, unit_offset=True).state_dict()) == {"weight", "bias"}
