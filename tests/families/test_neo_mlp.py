"""NeoMLP (families/neo_mlp.py): x-transformers' function with its weights, and it fits a small regression."""

import pytest
import torch

from labml_style_nn.families.neo_mlp import NeoMLP


def test_outputs_equal_xtransformers():
    pytest.importorskip("x_transformers")
    from x_transformers.neo_mlp import NeoMLP as Theirs
    from xt_parity import _Writer, copy_stack

    kw = dict(dim_in=3, dim_hidden=4, dim_out=2, dim_model=16, depth=1, encoder_kwargs=dict(attn_dim_head=8, heads=2))
    torch.manual_seed(0)
    theirs, ours = Theirs(**kw).eval(), NeoMLP(**kw).eval()
    put = _Writer(ours)
    for name in ("input_embed", "hidden_embed", "output_embed", "to_output_weights", "to_output_bias"):
        put(getattr(ours, name), getattr(theirs, name))
    for layer in ("proj", None):
        mine, their = (ours.random_fourier[0].proj, theirs.random_fourier[0].proj) if layer else \
            (ours.random_fourier[1], theirs.random_fourier[1])
        put(mine.weight, their.weight)
        put(mine.bias, their.bias)
    copy_stack(put, ours.transformer, theirs.transformer)
    assert not put.unwritten()
    x = torch.randn(5, 3)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    assert ours(x[0]).shape == (2,)


def test_it_fits_a_function():
    torch.manual_seed(0)
    mlp = NeoMLP(dim_in=2, dim_hidden=4, dim_out=1, dim_model=16, depth=1,
                 encoder_kwargs=dict(attn_dim_head=8, heads=2))
    x = torch.rand(64, 2)
    y = (x[:, :1] - x[:, 1:]) * 2  # a simple target
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    first = ((mlp(x) - y) ** 2).mean().item()
    for _ in range(100):
        loss = ((mlp(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4
    assert not mlp.random_fourier[0].proj.weight.requires_grad  # the Fourier features stay fixed
