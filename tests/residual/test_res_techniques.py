"""Properties every feed-forward, norm, residual and layout technique must keep, through the stack.

For each keyword of issue 5: a decoder stays causal, an encoder ignores padded tokens (padding at
the start and at the end, so that token shift is exercised), forward and backward are finite, and
the technique's own parameters receive gradients.
"""

import pytest
import torch

from labml_style_nn import Decoder, Encoder

DIM = 24

# keywords -> substring of the names of the parameters the technique adds (None: it adds none)
TECHNIQUES = {
    "ff_glu": (dict(ff_glu=True), "proj_in.proj"),
    "ff_relu_squared": (dict(ff_relu_squared=True), None),
    "ff_post_act_ln": (dict(ff_post_act_ln=True), "post_act_norm"),
    "ff_mult": (dict(ff_mult=2), None),
    "use_scalenorm": (dict(use_scalenorm=True), "norm.g"),
    "use_rmsnorm": (dict(use_rmsnorm=True), "norm.gamma"),
    "use_rezero": (dict(use_rezero=True), "branch_scale.alpha"),
    "sandwich_norm": (dict(sandwich_norm=True), "branch_norm"),
    "post_norm": (dict(pre_norm=False), "post_norm"),
    "sandwich_coef": (dict(sandwich_coef=2), None),
    "macaron": (dict(macaron=True), None),
    "gate_residual": (dict(gate_residual=True), "residual.gru"),
    "scale_residual": (dict(scale_residual=True), "residual.scale"),
    "shift_tokens_1": (dict(shift_tokens=1), None),
    "shift_tokens_2": (dict(shift_tokens=2), None),
    "shift_tokens_tuple": (dict(shift_tokens=(2, 1, 0, 1, 0, 0)), None),
    # The residual stream (layers-b; more in test_res_stream.py: cached decoding, XL memory, parity)
    "add_value_residual": (dict(add_value_residual=True), "value_mix.proj"),
    "scale_residual_constant": (dict(scale_residual_constant=1.7), None),
    "depth_scale_residual": (dict(depth_scale_residual=0.4), None),
    "reinject_input": (dict(reinject_input=True, learned_reinject_input_gate=True), "input_injection"),
    "unet_skips": (dict(unet_skips=True), "unet_skips.combine"),
    "num_residual_streams": (dict(num_residual_streams=3), "residual.dynamic_alpha_fn"),
    "qkv_receive_diff_residuals": (dict(num_residual_streams=2, qkv_receive_diff_residuals=True),
                                   "blocks.0.residual.static_alpha"),
    "orthog_residual": (dict(orthog_residual=True), None),
    "integrate_layers": (dict(integrate_layers=True), "integrations.2.to_weights"),
    "attn_aggregated_residuals": (dict(attn_aggregated_residuals=True, attn_aggregated_residual_kwargs={"lora_rank": 4}),
                                  "integrations.1.up"),
    "mv_split_residual": (dict(mv_split_residual=True, residual_fn_kwargs={"learned": True}), "residual.to_beta"),
    "gated_multi_residual": (dict(gated_multi_residual=True, num_residual_streams=2,
                                  residual_fn_kwargs={"read_gate_rank": 4}), "residual.to_read_gate"),
}


def stack(cls, name, depth=3):
    torch.manual_seed(0)
    return cls(dim=DIM, depth=depth, heads=2, attn_dim_head=8, **TECHNIQUES[name][0]).eval()


@pytest.mark.parametrize("name", TECHNIQUES)
def test_decoder_is_causal(name):
    dec = stack(Decoder, name)
    x = torch.randn(2, 9, DIM)
    y = x.clone()
    y[:, 5:] = torch.randn(2, 4, DIM)
    a, b = dec(x), dec(y)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("name", TECHNIQUES)
@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_padded_tokens_change_nothing(name, cls):
    model = stack(cls, name)
    x = torch.randn(2, 9, DIM)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :2] = False  # padding in front: a shift must bring in zeros, not these features
    mask[1, 6:] = False
    y = x.clone()
    y[~mask] = 50 * torch.randn(int((~mask).sum()), DIM)
    torch.testing.assert_close(model(x, mask=mask)[mask], model(y, mask=mask)[mask])


@pytest.mark.parametrize("name", TECHNIQUES)
@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_finite_and_new_parameters_learn(name, cls):
    model = stack(cls, name).train()
    x = torch.randn(2, 8, DIM, requires_grad=True)
    out = model(x, mask=torch.tensor([[True] * 8, [True] * 5 + [False] * 3]))
    # a loss that does not vanish under the final norm's invariances
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    named = dict(model.named_parameters())
    assert all(torch.isfinite(p.grad).all() for p in named.values() if p.grad is not None)
    pattern = TECHNIQUES[name][1]
    if pattern is not None:
        new = [n for n in named if pattern in n]
        assert new, f"no parameter matches {pattern}"
        for n in new:
            assert named[n].grad is not None and named[n].grad.abs().sum() > 0, n
