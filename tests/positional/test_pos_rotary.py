"""Rotary embeddings: scores depend on relative positions only; partial rotation; norms preserved."""

import pytest
import torch

from labml_style_nn.positional.rotary import RotaryEmbedding, apply_rotary, rotate_half


def rotated(t, pos, rot):
    return apply_rotary(t[None, None], rot(torch.as_tensor(pos)))[0, 0]


@pytest.mark.parametrize("r, d", [(8, 8), (4, 8), (32, 64)])
def test_score_depends_only_on_distance(r, d):
    torch.manual_seed(0)
    rot = RotaryEmbedding(r)
    q, k = torch.randn(1, d, dtype=torch.float64), torch.randn(1, d, dtype=torch.float64)
    for i, j in [(3, 7), (10, 2), (0, 0)]:
        base = (rotated(q, [i], rot) * rotated(k, [j], rot)).sum()
        for shift in (1, 17, 500):
            moved = (rotated(q, [i + shift], rot) * rotated(k, [j + shift], rot)).sum()
            torch.testing.assert_close(moved, base, atol=1e-4, rtol=1e-4)
    # ... and it does depend on the distance
    far = (rotated(q, [0], rot) * rotated(k, [5], rot)).sum()
    near = (rotated(q, [0], rot) * rotated(k, [1], rot)).sum()
    assert not torch.allclose(far, near)


def test_rotation_matches_the_closed_form_and_preserves_norms():
    torch.manual_seed(0)
    r, d, p = 4, 6, 3
    x = torch.randn(d, dtype=torch.float64)
    out = rotated(x[None], [p], RotaryEmbedding(r))[0]
    # pair k is (x_k, x_{k + r/2}), rotated by p * theta_k with theta_k = 10000^{-2k/r}
    for kk in range(r // 2):
        theta = p * 10000 ** (-2 * kk / r)
        c, s = torch.cos(torch.tensor(theta)), torch.sin(torch.tensor(theta))
        a, b = x[kk], x[kk + r // 2]
        torch.testing.assert_close(out[kk], (a * c - b * s).to(out.dtype), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[kk + r // 2], (b * c + a * s).to(out.dtype), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[r:], x[r:])  # features beyond r are not rotated
    torch.testing.assert_close(out.norm(), x.norm())


def test_position_zero_is_identity_and_rotate_half_is_a_quarter_turn():
    x = torch.randn(2, 3, 5, 8)
    rot = RotaryEmbedding(8)
    torch.testing.assert_close(apply_rotary(x, rot(torch.zeros(5, dtype=torch.long))), x)
    torch.testing.assert_close(rotate_half(rotate_half(x)), -x)


@pytest.mark.parametrize("dim", [0, 3, 7])
def test_bad_width_refused(dim):
    with pytest.raises(ValueError, match="rotary_emb_dim"):
        RotaryEmbedding(dim)


@pytest.mark.parametrize("r, d", [(4, 4), (4, 6)])
def test_the_rotation_kernel_equals_the_composed_form_with_its_gradients(r, d):
    """`apply_rotary`'s kernel (angles without a gradient) against `x cos + rotate_half(x) sin`, written here:
    values, gradients and second derivatives, with sines whose two halves differ (a scaled variant)."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, d, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(2, 3, r, dtype=torch.float64)

    def composed(t):
        cos, sin = angles
        return torch.cat((t[..., :r] * cos + rotate_half(t[..., :r]) * sin, t[..., r:]), dim=-1)

    g = torch.randn(1, 2, 3, d, dtype=torch.float64)
    ours, ref = apply_rotary(x, angles), composed(x)
    assert ours.grad_fn is not None and "Rotate" in type(ours.grad_fn).__name__  # the kernel ran, not the composed form
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert torch.autograd.gradgradcheck(lambda t: apply_rotary(t, angles), (x,))
    # Angles that need a gradient take the composed form, so they receive one.
    learned = angles.clone().requires_grad_()
    apply_rotary(x, learned).sum().backward()
    assert learned.grad is not None and learned.grad.abs().sum() > 0


@pytest.mark.parametrize("r, d", [(4, 4), (4, 6)])
def test_inference_calls_the_kernel_forward_directly(r, d, monkeypatch):
    """Without gradients (generation) the rotation skips the autograd function and gives its numbers bit for bit."""
    from labml_style_nn.positional import rotary

    torch.manual_seed(0)
    x, angles = torch.randn(1, 2, 3, d), torch.randn(2, 3, r)
    with_grad = apply_rotary(x, angles)  # the autograd function (gradients are enabled here)
    calls = []
    monkeypatch.setattr(rotary._Rotate, "apply", lambda *a: calls.append(1) or rotary._rotate_into(*a))
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            assert torch.equal(apply_rotary(x, angles), with_grad)
    assert not calls
    apply_rotary(x, angles)
    assert calls  # with gradients enabled, the autograd function runs
