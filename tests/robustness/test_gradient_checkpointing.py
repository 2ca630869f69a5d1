"""`gradient_checkpointing=True` recomputes activations in the backward pass; gradients stay equal."""

import pytest
import torch
from robust_features import SEED_FEATURES, make_stack, padded_batch


@pytest.mark.parametrize("kind, feature", [("encoder", "default"), ("decoder", "rotary"), ("decoder", "t5_bias"),
                                           ("decoder", "residual_attn"), ("encoder", "talking_heads"),
                                           ("decoder", "shift_tokens"), ("encoder", "macaron")])
def test_checkpointed_gradients_equal_plain_ones(kind, feature):
    torch.manual_seed(0)
    plain = make_stack(kind, **SEED_FEATURES[feature])
    ckpt = make_stack(kind, gradient_checkpointing=True, **SEED_FEATURES[feature])
    ckpt.load_state_dict(plain.state_dict())
    x, mask = padded_batch()
    grads = []
    for model in (plain, ckpt):
        xi = x.clone().requires_grad_()
        out = model(xi, mask=mask)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
    for g_plain, g_ckpt in zip(*grads, strict=True):
        torch.testing.assert_close(g_ckpt, g_plain, rtol=1e-5, atol=1e-6)


def _saved_numel_and_calls(model):
    """Elements autograd keeps for the backward pass, and sublayer calls in forward + backward."""
    calls, saved = [], [0]
    for block in model.blocks:
        block.fn.register_forward_pre_hook(lambda *_: calls.append(1))
    x, mask = padded_batch()

    def pack(t):
        saved[0] += t.numel()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x, mask=mask)
    forward_calls = len(calls)
    out.sum().backward()
    return saved[0], forward_calls, len(calls)


def test_checkpointing_saves_less_and_recomputes():
    """Checkpointing is not a no-op: far fewer saved activations, every sublayer run again in backward."""
    torch.manual_seed(0)
    saved_plain, fwd_plain, total_plain = _saved_numel_and_calls(make_stack("decoder"))
    saved_ckpt, fwd_ckpt, total_ckpt = _saved_numel_and_calls(make_stack("decoder", gradient_checkpointing=True))
    assert total_plain == fwd_plain
    assert total_ckpt == 2 * fwd_ckpt
    assert saved_ckpt < saved_plain / 4


def test_checkpointing_is_off_in_eval_and_without_grad():
    model = make_stack("decoder", gradient_checkpointing=True).eval()
    saved, fwd, total = _saved_numel_and_calls(model)
    assert total == fwd
