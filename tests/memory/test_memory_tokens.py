"""Memory tokens: prepended, passed through every layer, stripped; masks and causality still hold."""

import pytest
import torch

from labml_style_nn.generation.autoregressive import AutoregressiveWrapper
from labml_style_nn.memory.memory_tokens import MemoryTokens
from labml_style_nn.models.layers import Decoder, Encoder
from labml_style_nn.models.wrappers import TransformerWrapper

M, DIM, V = 3, 32, 40


def test_prepend_and_strip():
    mem = MemoryTokens(M, DIM)
    x, mask = torch.randn(2, 5, DIM), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    h, h_mask = mem.prepend(x, mask)
    assert h.shape == (2, M + 5, DIM)
    assert torch.equal(h[:, :M], mem.tokens[None].expand(2, -1, -1))
    assert torch.equal(h_mask[:, :M], torch.ones(2, M, dtype=torch.bool)) and torch.equal(h_mask[:, M:], mask)
    assert torch.equal(mem.strip(h), x)
    assert mem.prepend(x, None)[1] is None


def _influence(stack, mask):
    """How much output position i depends on input token j, and on memory token t.

    One backward pass per output position, of a random projection of that output:
    `(M + n, n)` for the real tokens and `(M + n, M)` for the memory tokens.
    """
    mem = MemoryTokens(M, DIM)
    x = torch.randn(1, 6, DIM, requires_grad=True)
    h, full_mask = mem.prepend(x, mask)
    out = stack(h, mask=full_mask)[0]  # (M + n, D)
    on_tokens, on_memory = [], []
    for i in range(out.shape[0]):
        gx, gm = torch.autograd.grad(out[i] @ torch.randn(DIM), (x, mem.tokens), retain_graph=True)
        on_tokens.append(gx[0].abs().sum(-1))
        on_memory.append(gm.abs().sum(-1))
    return torch.stack(on_tokens), torch.stack(on_memory)


def test_encoder_memory_sees_and_is_seen_by_every_real_token_not_padding():
    stack = Encoder(dim=DIM, depth=2, heads=4).eval()
    mask = torch.tensor([[True, True, True, True, False, False]])
    influence, mem_influence = _influence(stack, mask)
    # Memory outputs depend on every real token, on no padded one.
    assert (influence[:M, :4] > 1e-6).all() and (influence[:M, 4:] == 0).all()
    # Every real token reads every memory token.
    assert (mem_influence[M:M + 4] > 1e-6).all()


def test_decoder_memory_is_read_by_every_token_and_sees_no_token():
    stack = Decoder(dim=DIM, depth=2, heads=4).eval()
    influence, mem_influence = _influence(stack, None)
    # Memory tokens come first: they cannot see any real token, so they leak no future.
    assert (influence[:M] == 0).all()
    # Real token i depends on tokens j <= i only, and on every memory token.
    real = influence[M:]
    assert (real.triu(1) == 0).all() and (real.diagonal() > 1e-6).all()
    assert (mem_influence[M:] > 1e-6).all()


def test_wrapper_encoder_padding_changes_nothing_and_output_is_stripped():
    model = TransformerWrapper(num_tokens=V, max_seq_len=32, num_memory_tokens=M,
                               attn_layers=Encoder(dim=DIM, depth=2, heads=4)).eval()
    x = torch.randint(0, V, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    x_changed = torch.where(mask, x, torch.randint(0, V, x.shape))
    out, out_changed = model(x, mask=mask), model(x_changed, mask=mask)
    assert out.shape == (2, 8, V)
    torch.testing.assert_close(out[mask], out_changed[mask], atol=1e-5, rtol=1e-5)


def test_wrapper_decoder_stays_causal_and_memory_gets_gradients():
    model = TransformerWrapper(num_tokens=V, max_seq_len=32, num_memory_tokens=M,
                               attn_layers=Decoder(dim=DIM, depth=2, heads=4, rotary_pos_emb=True))
    x = torch.randint(0, V, (2, 8))
    x_future = x.clone()
    x_future[:, 5:] = (x[:, 5:] + 1) % V
    out, out_future = model(x), model(x_future)
    torch.testing.assert_close(out[:, :5], out_future[:, :5], atol=1e-5, rtol=1e-5)
    assert (out[:, 5:] - out_future[:, 5:]).abs().max() > 1e-4
    out.square().mean().backward()
    assert model.memory_tokens.tokens.grad.abs().sum() > 0


@pytest.mark.parametrize("positions", [dict(), dict(rotary_pos_emb=True)])
def test_cached_generation_with_memory_tokens_equals_uncached(positions):
    net = TransformerWrapper(num_tokens=V, max_seq_len=32, num_memory_tokens=M,
                             attn_layers=Decoder(dim=DIM, depth=2, heads=4, **positions))
    model = AutoregressiveWrapper(net)
    prompt = torch.randint(0, V, (2, 4))
    cached = model.generate(prompt, 6, temperature=0.0, cache_kv=True)
    uncached = model.generate(prompt, 6, temperature=0.0, cache_kv=False)
    assert torch.equal(cached, uncached)
