"""ContinuousTransformerAutoencoder (families/continuous_autoencoder.py): usage, invariants, parity of encode."""

import pytest
import torch

from labml_style_nn.families.continuous_autoencoder import ContinuousTransformerAutoencoder, gaussian_kl

SIZES = dict(dim=16, enc_depth=1, dec_depth=1, max_seq_len=12, dim_input=3, dim_latent=4, heads=2, attn_dim_head=8)


def test_usage_shapes_and_bad_input():
    torch.manual_seed(0)
    model = ContinuousTransformerAutoencoder(**SIZES, bottleneck_type="variational")
    seq, lens = torch.randn(2, 8, 3), torch.tensor([8, 5])
    loss, (recon_loss, kl) = model(seq, lens=lens, return_all_losses=True)
    assert loss.dim() == 0 and kl >= 0
    loss.backward()
    assert model.from_latent_to_prepend_token.weight.grad is not None
    assert model(seq, return_unreduced_loss=True).shape == (2,)
    assert model.encode(seq, lens=lens).shape == (2, 4)
    assert model.decode(model.encode(seq), seq).shape == (2, 8, 3)
    assert gaussian_kl(torch.zeros(1), torch.zeros(1)).item() == 0
    assert (gaussian_kl(torch.randn(50), torch.randn(50)) >= 0).all()
    with pytest.raises(ValueError, match="seq"):
        model(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="lens"):
        model(seq, lens=torch.tensor([9, 1]))
    with pytest.raises(ValueError, match="bottleneck_type"):
        ContinuousTransformerAutoencoder(**SIZES, bottleneck_type="vq")


def test_decoder_is_causal_padding_is_ignored_and_the_floor_acts():
    torch.manual_seed(0)
    model = ContinuousTransformerAutoencoder(**SIZES, variational_bottleneck_kwargs=dict(kl_div_floor=0.5),
                                             bottleneck_type="variational").eval()
    seq = torch.randn(2, 8, 3)
    z = torch.randn(2, 4)
    recon = model.decode(z, seq)
    changed = seq.clone()
    changed[:, 4] += 1.0
    diff = (model.decode(z, changed) - recon).abs().amax(dim=(0, 2))
    assert (diff[:5] < 1e-6).all() and (diff[5:] > 1e-4).all()  # x_4 reaches only the steps after it
    # what lies past a row's length changes nothing (the loss is deterministic given the seed)
    lens = torch.tensor([8, 5])
    padded = seq.clone()
    padded[1, 5:] = 7.0
    torch.manual_seed(1)
    a = model(seq, lens=lens)
    torch.manual_seed(1)
    torch.testing.assert_close(model(padded, lens=lens), a)
    # free bits: no dimension pays less than nothing, and a floor lowers the KL
    mean, log_var = torch.randn(8, 4) * 0.3, torch.randn(8, 4) * 0.3
    assert (gaussian_kl(mean, log_var, 0.05).sum() < gaussian_kl(mean, log_var).sum())


def test_the_latent_carries_the_sequence():
    torch.manual_seed(0)
    model = ContinuousTransformerAutoencoder(**SIZES, latents_dropout_prob=0.0)
    seq = torch.randn(6, 8, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(seq).item()
    for _ in range(60):
        loss = model(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 2
    with torch.no_grad():  # without its latent the decoder does worse
        z = model.encode(seq)
        with_latent = (model.decode(z, seq) - seq).square().mean()
        without = (model.decode(z, seq, keep=torch.zeros(6, dtype=torch.bool)) - seq).square().mean()
    assert with_latent < without * 0.8


def _copy_continuous(put, ours, theirs):
    from xt_parity import copy_stack

    put(ours.pos_emb.emb.weight, theirs.pos_emb.emb.weight * (theirs.pos_emb.scale / ours.pos_emb.emb_scale))
    for mine, their in ((ours.project_in, theirs.project_in), (ours.project_out, theirs.project_out)):
        if isinstance(mine, torch.nn.Linear):  # theirs has no bias: ours gets 0
            put(mine.weight, their.weight)
            put.zero(mine.bias)
    copy_stack(put, ours.attn_layers, theirs.attn_layers)


@pytest.mark.parametrize("bottleneck_type", ["deterministic", "variational"])
def test_encode_equals_xtransformers_and_their_decoder_sees_its_target(bottleneck_type):
    pytest.importorskip("x_transformers")
    from x_transformers.continuous_autoencoder import ContinuousTransformerAutoencoder as Theirs
    from xt_parity import _Writer

    torch.manual_seed(0)
    theirs = Theirs(**SIZES, bottleneck_type=bottleneck_type).eval()
    ours = ContinuousTransformerAutoencoder(**SIZES, bottleneck_type=bottleneck_type).eval()
    put = _Writer(ours)
    _copy_continuous(put, ours.encoder, theirs.encoder)
    _copy_continuous(put, ours.decoder, theirs.decoder)
    for p, q in zip(ours.bottleneck.parameters(), theirs.bottleneck.parameters(), strict=True):
        put(p, q)
    for p, q in zip(ours.from_latent_to_prepend_token.parameters(), theirs.from_latent_to_prepend_token.parameters(),
                    strict=True):
        put(p, q)
    assert not put.unwritten()
    seq, lens = torch.randn(2, 8, 3), torch.tensor([8, 6])
    torch.manual_seed(3)
    a = ours.encode(seq, lens=lens, return_aux_loss=True)
    torch.manual_seed(3)
    b = theirs.encode(seq, lens=lens, return_aux_loss=True)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-4)
    if bottleneck_type == "variational":
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-4)
    # x-transformers' reconstruction of x_4 changes with x_4 itself under a fixed latent: it can copy
    token = theirs.from_latent_to_prepend_token(a[0])
    changed = seq.clone()
    changed[:, 4] += 1.0
    their_diff = (theirs.decoder(changed, prepend_embeds=token) - theirs.decoder(seq, prepend_embeds=token))[:, 1:]
    our_diff = ours.decode(a[0], changed) - ours.decode(a[0], seq)
    assert their_diff[:, 4].abs().amax() > 1e-4 and our_diff[:, 4].abs().amax() < 1e-6
