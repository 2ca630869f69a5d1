"""GPTVAE (families/gpt_vae.py): x-transformers' usage, the latent steers generation, parity."""

import pytest
import torch

from labml_style_nn import GPTVAE

SIZES = dict(num_tokens=10, dim=16, depth=1, enc_depth=1, max_seq_len=8, dim_latent=4, heads=2, attn_dim_head=8)


def test_usage_shapes_and_bad_input():
    torch.manual_seed(0)
    model = GPTVAE(**SIZES)
    seq = torch.randint(0, 10, (2, 8))
    loss, (ar_loss, kl) = model(seq, return_all_losses=True)
    assert loss.dim() == 0 and kl >= 0
    loss.backward()
    assert model.to_latent_mean_log_variance.weight.grad is not None
    padded = seq.clone()
    padded[1, 6:] = -1  # pad_id=-1 is ignored by the loss and masked in the encoder
    assert torch.isfinite(model(padded))
    assert model.generate(seq[:, :2], 4, latents=torch.randn(4)).shape == (2, 4)
    assert model.generate(seq[0, :2], 3, latents=[0.0, 1.0, 0.0, 0.0]).shape == (3,)
    assert model.generate(seq[:, :2], 3, seq_for_latents=seq).shape == (2, 3)
    assert model.generate(seq[:, :2], 3).shape == (2, 3)
    with pytest.raises(ValueError, match="latents and seq_for_latents"):
        model.generate(seq[:, :2], 3, latents=torch.randn(4), seq_for_latents=seq)
    with pytest.raises(ValueError, match="latents"):
        model.generate(seq[:, :2], 3, latents=torch.randn(5))
    with pytest.raises(ValueError, match="latents_dropout_prob"):
        GPTVAE(**SIZES, latents_dropout_prob=1.5)


def test_a_dropped_latent_is_not_seen():
    torch.manual_seed(0)
    model = GPTVAE(**SIZES, latents_dropout_prob=1.0, vae_kl_loss_weight=0.0)  # train mode: always dropped
    seq = torch.randint(0, 10, (2, 8))
    torch.manual_seed(1)
    a = model(seq)
    with torch.no_grad():
        model.from_latent_to_prepend_token.weight.add_(1.0)
    torch.manual_seed(1)
    torch.testing.assert_close(model(seq), a)
    model.latents_dropout.p = 0.0  # kept: the latent reaches the loss
    torch.manual_seed(1)
    assert (model(seq) - a).abs() > 1e-4


def test_loss_falls_and_a_reference_sequence_gives_its_latent():
    torch.manual_seed(0)
    model = GPTVAE(**SIZES, latents_dropout_prob=0.0, vae_kl_div_floor=0.5)
    seq = torch.randint(0, 10, (4, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(seq).item()
    for _ in range(15):
        loss = model(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.7
    model.eval()
    torch.manual_seed(4)
    by_reference = model.generate(seq[:, :1], 5, seq_for_latents=seq, temperature=0.0)
    torch.manual_seed(4)
    z = model.encode_to_latents(seq)
    torch.testing.assert_close(by_reference, model.generate(seq[:, :1], 5, latents=z, temperature=0.0))


def test_loss_and_gradients_equal_xtransformers():
    pytest.importorskip("x_transformers")
    from x_transformers.gpt_vae import GPTVAE as Theirs
    from xt_parity import _Writer, copy_weights

    torch.manual_seed(0)
    theirs = Theirs(**SIZES, vae_kl_div_floor=0.1).eval()
    ours = GPTVAE(**SIZES, vae_kl_div_floor=0.1).eval()
    copy_weights(ours.encoder, theirs.encoder)
    copy_weights(ours.decoder, theirs.decoder)
    put = _Writer(ours)
    put.written |= {id(p) for p in ours.encoder.parameters()} | {id(p) for p in ours.decoder.parameters()}
    put(ours.to_latent_mean_log_variance.weight, theirs.to_latent_mean_log_variance[0].weight)
    put(ours.to_latent_mean_log_variance.bias, theirs.to_latent_mean_log_variance[0].bias)
    put(ours.from_latent_to_prepend_token.weight, theirs.from_latent_to_prepend_token[0].weight)
    put(ours.from_latent_to_prepend_token.bias, theirs.from_latent_to_prepend_token[0].bias)
    assert not put.unwritten()
    seq = torch.randint(0, 10, (2, 8))
    torch.manual_seed(2)
    mine = ours(seq)
    torch.manual_seed(2)
    their = theirs(seq)
    torch.testing.assert_close(mine, their, atol=1e-5, rtol=1e-4)
    mine.backward()
    their.backward()
    torch.testing.assert_close(ours.to_latent_mean_log_variance.weight.grad,
                               theirs.to_latent_mean_log_variance[0].weight.grad, atol=1e-5, rtol=1e-4)
    torch.manual_seed(3)
    z = torch.randn(4)
    torch.testing.assert_close(ours.generate(seq[:, :2], 4, latents=z, temperature=0.0),
                               theirs.generate(seq[:, :2], 4, latents=z, temperature=0.0))
