"""The Free Transformer (families/free_transformer.py): x-transformers' usage and numbers, the mapper's
sampling and free-bits KL, causality of the conditioned tail, cached generation, learning, bad input."""

import math

import pytest
import torch

from labml_style_nn import Decoder, Encoder
from labml_style_nn.families.free_transformer import NAT, BinaryMapper, FreeTransformer

# attn_dim_head=64: rotary turns at least 32 features in x-transformers, whatever the head width.
KW = dict(num_tokens=20, dim=16, dec_head_depth=1, dec_tail_depth=1, max_seq_len=16, heads=2, attn_dim_head=64,
          latent_bits=3)


def test_usage_runs_with_only_the_import_changed():
    torch.manual_seed(0)
    model = FreeTransformer(**KW, enc_depth=1)
    seq = torch.randint(0, 20, (2, 12))
    loss, (ar_loss, kl_loss) = model(seq, return_all_losses=True)
    assert loss.dim() == 0 and ar_loss.dim() == 0 and kl_loss.dim() == 0
    loss.backward()
    # The encoder learns through the straight-through code.
    assert model.query_token_for_latents.grad is not None and model.query_token_for_latents.grad.abs().sum() > 0
    assert model.generate(seq[:, :1], 12).shape == (2, 12)
    assert model.generate(seq[:, :3], 8, latents=5).shape == (2, 8)
    assert model.generate(seq[:2, :1].reshape(2, 1, 1), 6).shape == (2, 1, 6)  # any leading shape
    assert model(seq, seq_for_latents=seq[:, :5]).dim() == 0


def test_losses_gradients_and_generation_equal_xtransformers():
    pytest.importorskip("x_transformers")
    from x_transformers.free_transformer import FreeTransformer as Theirs
    from xt_parity import _Writer, copy_stack

    torch.manual_seed(0)
    theirs, ours = Theirs(**KW), FreeTransformer(**KW)
    put = _Writer(ours)
    for name in ("token_unembed", "to_latent_bit_logits", "from_latent_to_condition", "token_emb"):
        put(getattr(ours, name).weight, getattr(theirs, name).weight)
    put(ours.query_token_for_latents, theirs.query_token_for_latents)
    for stack in ("encoder", "decoder_head", "decoder_tail"):
        copy_stack(put, getattr(ours, stack), getattr(theirs, stack))
    assert not put.unwritten()
    seq = torch.randint(0, 20, (2, 9))
    seq[0, -2:] = -1  # x-transformers' default pad id: ignored by the loss, masked for the encoder
    seq_ok = seq.clamp(min=0)
    # The codes are sampled: the same seed draws the same bits in both.
    for call in (dict(seq=seq_ok), dict(seq=seq_ok, seq_for_latents=seq[:, :5].clamp(min=0))):
        torch.manual_seed(3)
        a = ours(**call, return_all_losses=True)
        torch.manual_seed(3)
        b = theirs(**call, return_all_losses=True)
        for x, y in zip((a[0], *a[1]), (b[0], *b[1]), strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
        a[0].backward()
        b[0].backward()
    for name in ("token_emb.weight", "token_unembed.weight", "to_latent_bit_logits.weight",
                 "from_latent_to_condition.weight", "query_token_for_latents"):
        # Ours agrees with its own float64 run to 1e-8; x-transformers' float32 gradients of the
        # encoder side differ from that by up to 1e-4 (rounding), hence the tolerance.
        torch.testing.assert_close(ours.get_parameter(name).grad, theirs.get_parameter(name).grad, atol=2e-4, rtol=1e-3)
    ours.eval()
    theirs.eval()
    for latents in (None, 3):
        for cache in (True, False):
            torch.manual_seed(5)
            a = ours.generate(seq_ok[:, :2], 10, latents=latents, use_kv_cache=cache)
            torch.manual_seed(5)
            assert torch.equal(a, theirs.generate(seq_ok[:, :2], 10, latents=latents, use_kv_cache=cache))


def test_the_mapper_samples_codes_with_their_probability_and_frees_kappa_nats():
    torch.manual_seed(0)
    mapper = BinaryMapper(bits=2, kl_loss_threshold=NAT)
    logits = torch.tensor([1.5, -0.5]).expand(4000, 2).clone().requires_grad_()
    one_hot, kl = mapper(logits, straight_through=True, calc_aux_loss=True)
    assert torch.equal(one_hot.detach().sum(-1), torch.ones(4000))
    # $G(z) = \prod_k \sigma(l_k)^{z_k} (1 - \sigma(l_k))^{1 - z_k}$; code $z = b_0 + 2 b_1$
    p0, p1 = torch.sigmoid(torch.tensor(1.5)), torch.sigmoid(torch.tensor(-0.5))
    g = torch.stack(((1 - p0) * (1 - p1), p0 * (1 - p1), (1 - p0) * p1, p0 * p1))
    torch.testing.assert_close(one_hot.detach().mean(0), g, atol=0.03, rtol=0)
    # Straight through: the value is the sample, the gradient is that of $G$.
    weights = torch.arange(4.0)
    (one_hot @ weights).sum().backward()
    ref = logits.detach().clone().requires_grad_()
    soft = torch.stack(((1 - ref[:, 0].sigmoid()) * (1 - ref[:, 1].sigmoid()), ref[:, 0].sigmoid() * (1 - ref[:, 1].sigmoid()),
                        (1 - ref[:, 0].sigmoid()) * ref[:, 1].sigmoid(), ref[:, 0].sigmoid() * ref[:, 1].sigmoid()), -1)
    (soft @ weights).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad)
    # KL from the uniform prior: 0 at fair coins, $H \log 2$ at certain bits, $\kappa$ of it free.
    assert mapper(torch.zeros(3, 2), calc_aux_loss=True)[1].item() == 0.0
    kl_certain = mapper(torch.full((3, 2), 30.0), calc_aux_loss=True)[1].item()
    assert math.isclose(kl_certain, 2 * NAT - NAT, abs_tol=1e-5)
    assert kl.item() >= 0


def test_tail_is_causal_and_the_condition_acts():
    torch.manual_seed(0)
    model = FreeTransformer(**KW).eval()
    x = torch.randint(0, 20, (2, 8))
    cond = torch.randn(2, 8, 16)  # one latent embedding per token

    def run(tokens, condition):
        return model.decoder_tail(model.decoder_head(model.token_emb(tokens)), self_attn_kv_residuals=condition)

    other_x, other_cond = x.clone(), cond.clone()
    other_x[:, -1] = (x[:, -1] + 1) % 20
    other_cond[:, -1] += 1
    base = run(x, cond)
    torch.testing.assert_close(run(other_x, other_cond)[:, :-1], base[:, :-1])
    assert not torch.allclose(run(x, other_cond)[:, -1], base[:, -1])
    assert not torch.allclose(run(x, None), base)
    # Different codes, different continuations (with the same sampling noise).
    outs = set()
    for code in range(8):
        torch.manual_seed(1)
        outs.add(tuple(model.generate(x[:, :2], 10, latents=code).flatten().tolist()))
    assert len(outs) > 1


def test_cached_generation_equals_the_full_pass_and_loss_falls():
    torch.manual_seed(0)
    model = FreeTransformer(**{**KW, "dec_head_depth": 0}).eval()  # no head: the tail alone is cached
    x = torch.randint(0, 20, (2, 3))
    for latents in (None, torch.tensor([1, 6])):
        torch.manual_seed(2)
        a = model.generate(x, 9, latents=latents)
        torch.manual_seed(2)
        assert torch.equal(a, model.generate(x, 9, latents=latents, use_kv_cache=False))
    model = FreeTransformer(**KW).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    seq = torch.randint(0, 20, (4, 10))
    losses = []
    for _ in range(12):
        torch.manual_seed(0)
        loss = model(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


def test_bad_input_is_refused():
    for bad, name in ((dict(dec_tail_depth=0), "dec_tail_depth"), (dict(dim_latent=8), "dim_latent"),
                      (dict(binary_mapper_kwargs=dict(bits=2)), "binary_mapper_kwargs"),
                      (dict(latent_bits=0), "latent_bits")):
        with pytest.raises(ValueError, match=name):
            FreeTransformer(**{**KW, **bad})
    model = FreeTransformer(**KW)
    with pytest.raises(ValueError, match="seq"):
        model(torch.randn(2, 8))
    with pytest.raises(ValueError, match="latents"):
        model.generate(torch.zeros(2, 1, dtype=torch.long), 4, latents=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="self_attn_kv_residuals"):
        Decoder(dim=16, depth=1, heads=2)(torch.randn(2, 5, 16), self_attn_kv_residuals=torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="context_pos"):
        Encoder(dim=16, depth=1, heads=2, cross_attend=True)(torch.randn(2, 5, 16), context=torch.randn(2, 3, 16),
                                                             context_pos=torch.arange(3))


def test_docstring_examples():
    import doctest

    from labml_style_nn.families import free_transformer, next_latent_wrapper

    for module in (free_transformer, next_latent_wrapper):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
