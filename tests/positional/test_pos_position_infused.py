"""Position infused attention: positions enter queries and keys, never values."""

import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.attention.attention import Attention
from labml_style_nn.positional.absolute import SinusoidalPositionalEmbedding
from labml_style_nn.positional.position_infused import PositionInfusedAttention


def test_positions_go_into_queries_and_keys_only():
    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8)
    x = torch.randn(2, 5, 16)
    p = PositionInfusedAttention(16)(torch.arange(5))
    q0, k0, v0 = attn._project(x, x, None)
    q, k, v = attn._project(x, x, p)
    torch.testing.assert_close(v, v0)  # values carry no position
    # $q = (x + p) W_Q$, $k = (x + p) W_K$
    qx, kx, _ = attn._project(x + p, x + p, None)
    torch.testing.assert_close(q, qx)
    torch.testing.assert_close(k, kx)
    assert not torch.allclose(q, q0) and not torch.allclose(k, k0)


def test_positions_are_the_fixed_sinusoids():
    pos = torch.arange(7)
    torch.testing.assert_close(PositionInfusedAttention(16)(pos), SinusoidalPositionalEmbedding(16)(pos))
    assert not list(PositionInfusedAttention(16).parameters())


def test_residual_stream_values_do_not_depend_on_position():
    """With one attention layer, a token that attends only to itself (a decoder's first token)
    outputs a function of its value alone, so it is the same at position 0 of any segment offset."""
    torch.manual_seed(0)
    dec = Decoder(dim=16, depth=1, heads=2, position_infused_attn=True).eval()
    x = torch.randn(1, 1, 16)
    first = dec(x)
    # the same token at position 5, seeing only itself (all earlier keys padded away)
    xs = torch.cat((torch.randn(1, 5, 16), x), dim=1)
    mask = torch.tensor([[False] * 5 + [True]])
    torch.testing.assert_close(dec(xs, mask=mask)[:, -1:], first, atol=1e-5, rtol=1e-4)


def test_wrapper_adds_no_absolute_positions_with_position_infused_attention():
    model = TransformerWrapper(num_tokens=20, max_seq_len=8,
                               attn_layers=Decoder(dim=16, depth=1, heads=2, position_infused_attn=True))
    assert model.pos_emb is None
