"""Rotary embeddings on inputs that share memory across positions (stride 0, as `expand` makes them).

`notebooks/attention_patterns.ipynb` rotates one query expanded over 256 positions; the rotation kernel
writes into a fresh output, so such an input must give the numbers of its contiguous copy on every path
and stay unwritten."""

import pytest
import torch

from labml_style_nn.positional.rotary import RotaryEmbedding, apply_rotary


@pytest.mark.parametrize("r, d", [(8, 8), (4, 8)])
def test_expanded_inputs_rotate_like_contiguous_copies(r, d):
    torch.manual_seed(0)
    angles = RotaryEmbedding(r)(torch.arange(12))  # (2, n, r)
    expanded = torch.randn(2, 1, 1, d).expand(2, 3, 12, d)  # the same row at every head and position
    dense = expanded.contiguous()
    ref = apply_rotary(dense, angles)
    # With gradients enabled (the autograd function) and without (the kernel called directly).
    torch.testing.assert_close(apply_rotary(expanded, angles), ref, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(apply_rotary(expanded, angles), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(expanded, dense)  # the input is read, never written
    # The backward (the inverse rotation) with an expanded incoming gradient.
    x = dense.clone().requires_grad_()
    g = torch.randn(1, 1, 1, d).expand_as(dense)
    (grad,) = torch.autograd.grad(apply_rotary(x, angles), x, g)
    (grad_ref,) = torch.autograd.grad(apply_rotary(x, angles), x, g.contiguous())
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)
    # What the notebook checks: with q = k the same at every position, |R_i q|^2 is the same for every i.
    rotated = apply_rotary(expanded, angles)
    norms = (rotated * rotated).sum(-1)  # (b, h, n)
    assert (norms - norms[..., :1]).abs().max() < 1e-5
