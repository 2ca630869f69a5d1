"""The layer stacks: causality, padding, cross-attention masks, embeddings in, post-norm."""

import pytest
import torch

from labml_style_nn import CrossAttender, Decoder, Encoder, TransformerWrapper


def _tokens(b=2, n=12, v=40):
    return torch.randint(0, v, (b, n))


@pytest.mark.parametrize("pre_norm", [True, False])
def test_decoder_is_causal(pre_norm):
    model = TransformerWrapper(num_tokens=40, max_seq_len=16,
                               attn_layers=Decoder(dim=32, depth=2, heads=4, pre_norm=pre_norm)).eval()
    x = _tokens()
    for t in (0, 5, 11):
        y = x.clone()
        y[:, t:] = (y[:, t:] + 1) % 40
        a, b = model(x), model(y)
        torch.testing.assert_close(a[:, :t], b[:, :t])
        assert not torch.allclose(a[:, t:], b[:, t:])


def test_encoder_ignores_padded_tokens():
    model = TransformerWrapper(num_tokens=40, max_seq_len=16, attn_layers=Encoder(dim=32, depth=2, heads=4)).eval()
    x = _tokens()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, 8:] = False
    mask[1, 10:] = False
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 7) % 40
    y[1, 10:] = (y[1, 10:] + 3) % 40
    a, b = model(x, mask=mask), model(y, mask=mask)
    torch.testing.assert_close(a[0, :8], b[0, :8])
    torch.testing.assert_close(a[1, :10], b[1, :10])
    # Without the mask the padded tokens do change the real outputs.
    assert not torch.allclose(model(x)[0, :8], model(y)[0, :8])


def test_cross_attention_ignores_masked_context():
    model = CrossAttender(dim=32, depth=2, heads=4).eval()
    x, ctx = torch.randn(2, 3, 32), torch.randn(2, 6, 32)
    cmask = torch.tensor([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    ctx2 = ctx.clone()
    ctx2[0, 4:] = torch.randn(2, 32)
    ctx2[1, 2:] = torch.randn(4, 32)
    a = model(x, context=ctx, context_mask=cmask)
    b = model(x, context=ctx2, context_mask=cmask)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(model(x, context=ctx), model(x, context=ctx2))


def test_decoder_with_cross_attention_is_causal_and_respects_context_mask():
    model = TransformerWrapper(num_tokens=40, max_seq_len=16,
                               attn_layers=Decoder(dim=32, depth=2, heads=4, cross_attend=True)).eval()
    x, ctx = _tokens(), torch.randn(2, 5, 32)
    cmask = torch.tensor([[True, True, True, False, False]] * 2)
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 40
    ctx2 = ctx.clone()
    ctx2[:, 3:] = torch.randn(2, 2, 32)
    a = model(x, context=ctx, context_mask=cmask)
    b = model(y, context=ctx2, context_mask=cmask)
    torch.testing.assert_close(a[:, :6], b[:, :6])


def test_encoder_runs_on_embeddings_directly():
    enc = Encoder(dim=32, depth=2, heads=4).eval()
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    out = enc(x, mask=mask)
    assert out.shape == (2, 9, 32)
    y = x.clone()
    y[1, 5:] = torch.randn(4, 32)
    torch.testing.assert_close(enc(y, mask=mask)[1, :5], out[1, :5])


def test_post_norm_blocks_normalise_after_the_residual():
    enc = Encoder(dim=32, depth=1, heads=4, pre_norm=False).eval()
    assert all(b.pre_norm is None and b.post_norm is not None for b in enc.blocks)
    out = enc(torch.randn(2, 5, 32) * 10)
    # LayerNorm output: zero mean, unit variance per token (the learned affine starts at identity).
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)


def test_gradients_reach_every_parameter():
    model = TransformerWrapper(num_tokens=40, max_seq_len=16,
                               attn_layers=Decoder(dim=32, depth=2, heads=4, cross_attend=True))
    model(_tokens(), context=torch.randn(2, 5, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_return_attn_gives_the_weights_every_layer_used():
    model = TransformerWrapper(num_tokens=40, max_seq_len=16,
                               attn_layers=Decoder(dim=32, depth=2, heads=4, alibi_pos_emb=True,
                                                   cross_attend=True)).eval()
    x, ctx = _tokens(), torch.randn(2, 5, 32)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, :3] = False
    logits, maps = model(x, context=ctx, mask=mask, return_attn=True)
    torch.testing.assert_close(logits, model(x, context=ctx, mask=mask))  # the explicit path agrees
    assert [m.shape for m in maps] == [(2, 4, 12, 12), (2, 4, 12, 5)] * 2  # self, cross, self, cross
    self_attn = maps[0]
    # Rows are distributions over the visible keys: causal, and padded keys get no weight.
    assert torch.allclose(self_attn[0].sum(-1), torch.ones(4, 12), atol=1e-5)
    assert (self_attn.triu(1) == 0).all()
    assert (self_attn[1, :, 3:, :3] == 0).all()


def test_return_attn_with_memories_orders_the_outputs():
    model = TransformerWrapper(num_tokens=40, max_seq_len=16, max_mem_len=8,
                               attn_layers=Decoder(dim=32, depth=2, heads=4, rotary_pos_emb=True)).eval()
    _, mems = model(_tokens(n=6), return_mems=True)
    logits, new_mems, maps = model(_tokens(n=4), mems=mems, return_mems=True, return_attn=True)
    assert logits.shape == (2, 4, 40) and len(new_mems) == 2
    assert [m.shape for m in maps] == [(2, 4, 4, 10)] * 2  # 6 memory positions + 4 tokens
