"""Grouped-query / multi-query attention and the sliding window: closed forms and references."""

import doctest

import pytest
import torch

from labml_style_nn import Decoder
from labml_style_nn.attention import grouped_query, sliding_window
from labml_style_nn.attention.attention import Attention
from labml_style_nn.generation import LayersCache

DIM, H, D = 24, 6, 4


@pytest.mark.parametrize("module", [grouped_query, sliding_window])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def _mha_with_repeated_kv(gqa: Attention) -> Attention:
    """Multi-head attention whose key/value heads are copies: head $i$ gets key/value head $i // r$."""
    g, r = gqa.kv_heads, H // gqa.kv_heads
    mha = Attention(DIM, heads=H, dim_head=D, causal=gqa.causal, qkv_bias=True)
    w, b = gqa.to_qkv.weight.view(H + 2 * g, D, DIM), gqa.to_qkv.bias.view(H + 2 * g, D)
    rep = lambda t: t.repeat_interleave(r, dim=0)  # noqa: E731
    with torch.no_grad():
        mha.to_qkv.weight.copy_(torch.cat([w[:H], rep(w[H:H + g]), rep(w[H + g:])]).reshape(-1, DIM))
        mha.to_qkv.bias.copy_(torch.cat([b[:H], rep(b[H:H + g]), rep(b[H + g:])]).reshape(-1))
        mha.to_out.load_state_dict(gqa.to_out.state_dict())
    return mha.eval()


@pytest.mark.parametrize("kv_heads", [1, 2, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_equals_multi_head_with_shared_kv_heads(kv_heads, causal):
    torch.manual_seed(0)
    gqa = Attention(DIM, heads=H, dim_head=D, kv_heads=kv_heads, causal=causal, qkv_bias=True).eval()
    assert gqa.to_qkv.weight.shape == ((H + 2 * kv_heads) * D, DIM)
    mha = _mha_with_repeated_kv(gqa)
    x, mask = torch.randn(2, 9, DIM), torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    for kw in (dict(), dict(mask=mask), dict(mask=mask, return_scores=True)):
        out, ref = gqa(x, **kw)[0], mha(x, **kw)[0]
        torch.testing.assert_close(out[mask] if "mask" in kw else out, ref[mask] if "mask" in kw else ref,
                                   atol=1e-5, rtol=0)


def test_one_kv_head_is_one_group_and_the_cache_holds_only_kv_heads():
    net = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, attn_one_kv_head=True)
    assert net.blocks[0].fn.kv_heads == 1
    cache = LayersCache(net, 2, 10)
    net(torch.randn(2, 4, DIM), cache=cache)
    assert cache.blocks[0].attn.k.shape == (2, 1, 10, D)
    grouped = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, attn_kv_heads=3)
    cache = LayersCache(grouped, 2, 10)
    grouped(torch.randn(2, 4, DIM), cache=cache)
    assert cache.blocks[0].attn.v.shape == (2, 3, 10, D)


def test_attention_refuses_a_kv_head_count_that_does_not_divide_heads():
    with pytest.raises(ValueError, match="kv_heads"):
        Attention(DIM, heads=H, dim_head=D, kv_heads=4)


#
# The sliding window against a reference written here.
def _reference(attn: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    n = x.shape[1]
    q, k, v = attn.to_qkv(x).view(x.shape[0], n, 3, H, D).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-1, -2) * D ** -0.5
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    s = s.masked_fill(~((j <= i) & (i - j <= window)), float("-inf"))
    return attn.to_out((s.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], n, H * D))


@pytest.mark.parametrize("window", [0, 1, 4, 20])
def test_window_matches_reference_on_both_paths(window):
    torch.manual_seed(0)
    attn = Attention(DIM, heads=H, dim_head=D, causal=True, max_attend_past=window).eval()
    x = torch.randn(2, 12, DIM)
    ref = _reference(attn, x, window)
    torch.testing.assert_close(attn(x)[0], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(attn(x, return_scores=True)[0], ref, atol=1e-5, rtol=0)


def test_window_zero_sees_only_itself():
    torch.manual_seed(0)
    attn = Attention(DIM, heads=H, dim_head=D, causal=True, max_attend_past=0).eval()
    x = torch.randn(1, 7, DIM)
    v = attn.to_qkv(x)[..., 2 * H * D:]
    torch.testing.assert_close(attn(x)[0], attn.to_out(v), atol=1e-5, rtol=0)


def test_window_longer_than_the_sequence_is_plain_causal_attention():
    torch.manual_seed(0)
    windowed = Decoder(dim=DIM, depth=2, heads=H, attn_dim_head=D, attn_max_attend_past=11).eval()
    plain = Decoder(dim=DIM, depth=2, heads=H, attn_dim_head=D).eval()
    plain.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 12, DIM)
    torch.testing.assert_close(windowed(x), plain(x), atol=1e-6, rtol=0)
    assert (windowed(torch.randn(2, 14, DIM)) - plain(torch.randn(2, 14, DIM))).abs().max() > 1e-3


def test_tokens_before_the_window_of_every_layer_change_nothing():
    # Two layers of window W: the last token is reached by tokens at most 2W back.
    torch.manual_seed(0)
    net = Decoder(dim=DIM, depth=2, heads=H, attn_dim_head=D, attn_max_attend_past=3).eval()
    x = torch.randn(1, 12, DIM)
    y = x.clone()
    y[:, :12 - 1 - 6] += torch.randn_like(y[:, :5])
    torch.testing.assert_close(net(x)[:, -1], net(y)[:, -1], atol=1e-6, rtol=0)
    z = x.clone()
    z[:, 12 - 1 - 6] += torch.randn(DIM)  # a constant shift would vanish in the LayerNorms
    assert (net(x)[:, -1] - net(z)[:, -1]).abs().max() > 1e-4
