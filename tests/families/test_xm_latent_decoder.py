"""Explorative modeling (families/xm_latent_decoder.py): x-transformers' usage and numbers, winner takes
all, the repulsion, causality, cached generation with prepended latents, learning, bad input."""

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.families.xm_latent_decoder import XMLatentDecoder

NET = dict(num_tokens=20, max_seq_len=16)
STACK = dict(dim=16, depth=1, heads=2, attn_dim_head=8)


def model():
    return TransformerWrapper(**NET, attn_layers=Decoder(**STACK))


def test_usage_runs_with_only_the_import_changed():
    torch.manual_seed(0)
    xm = XMLatentDecoder(model(), num_latents=4, candidates=3)
    seq = torch.randint(0, 20, (2, 10))
    loss = xm(seq)
    assert loss.dim() == 0
    loss.backward()
    assert xm.net.token_emb.weight.grad is not None
    assert xm.generate(seq[:, :2], 6).shape == (2, 6)
    first = lambda logits: logits[..., 0].mean(-1)  # noqa: E731 - scores (b, k)
    out, (candidate_latents, winner) = xm.generate_with_candidate_latents(seq[:, :2], 6, winner_fn=first,
                                                                          return_best_latents=True)
    assert out.shape == (2, 6) and candidate_latents.shape == (2, 3, 4, 16) and winner.shape == (2,)
    # A sequence of winner functions chooses every latent in turn.
    _, (_, winners) = xm.generate_with_candidate_latents(seq[:, :2], 3, winner_fns=[first] * 4,
                                                         return_best_latents=True)
    assert winners.shape == (2, 4)


def highest_loss(losses, intermediates):
    assert intermediates.logits.shape[:2] == losses.shape  # the candidates' logits come along
    return losses.argmax(dim=-1)


@pytest.mark.parametrize("cfg,masked", [(dict(), False),
                                        (dict(always_latent_proj=True, candidates=3, repulsive_loss_weight=0.5,
                                              max_batch_size=4), False),
                                        (dict(latent_dim=8, dim=16, candidates=3, winner_fn=highest_loss), True)])
def test_losses_and_logits_equal_xtransformers(cfg, masked):
    pytest.importorskip("x_transformers")
    from x_transformers.xm_latent_decoder import XMLatentDecoder as Theirs
    from xt_parity import build_pair, copy_weights

    ours_net, their_net = build_pair(NET, "Decoder", STACK)
    ours, theirs = XMLatentDecoder(ours_net, **cfg), Theirs(their_net, **cfg)

    def projection(_ours, _theirs, put):
        if isinstance(ours.latent_proj, torch.nn.Linear):
            put(ours.latent_proj.weight, theirs.latent_proj.weight)
            put(ours.latent_proj.bias, theirs.latent_proj.bias)

    copy_weights(ours_net, their_net, [projection])
    x = torch.randint(0, 20, (2, 10))
    x[0, -1] = -100  # an ignored target
    kw = {}
    if masked:
        kw["mask"] = torch.ones(2, 10, dtype=torch.bool)
        kw["mask"][1, -3:] = False
    # The candidates are Gaussian draws: the same seed draws the same ones.
    torch.manual_seed(0)
    a = ours(x, active_latent_index=1, **kw)
    torch.manual_seed(0)
    b = theirs(x, active_latent_index=1, **kw)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    a.backward()
    b.backward()
    torch.testing.assert_close(ours_net.token_emb.weight.grad, their_net.token_emb.emb.weight.grad, atol=1e-5, rtol=1e-4)
    torch.manual_seed(0)
    la, za = ours(x.clamp(min=0), active_latent_index=2, return_loss=False)
    torch.manual_seed(0)
    lb, zb = theirs(x.clamp(min=0), active_latent_index=2, return_loss=False)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-4)
    assert torch.equal(za, zb)


def test_winner_takes_all_and_the_repulsion_lowers_the_loss():
    torch.manual_seed(0)
    xm = XMLatentDecoder(model(), num_latents=2, candidates=4).eval()
    x = torch.randint(0, 20, (3, 9))
    latents = torch.randn(3, 4, 2, 16)  # (b, k, L, d): every candidate given
    logits, _ = xm(x[:, :-1], latents=latents, return_loss=False)  # (b, k, n, V)
    per_candidate = F.cross_entropy(logits.flatten(0, 1).transpose(1, 2), x[:, 1:].repeat_interleave(4, 0),
                                    reduction="none").mean(-1).unflatten(0, (3, 4))
    assert per_candidate.std() > 0  # the latents change the prediction
    torch.testing.assert_close(xm(x, latents=latents), per_candidate.min(dim=1).values.mean())
    # Only the active slot is explored: the other slot is the same in every candidate.
    _, drawn = xm(x, active_latent_index=1, return_loss=False)
    assert torch.equal(drawn[:, 0, 0], drawn[:, 3, 0]) and not torch.equal(drawn[:, 0, 1], drawn[:, 3, 1])
    # The mixture divergence is >= 0: with it the loss is lower.
    assert xm(x, latents=latents, repulsive_loss_weight=1.0) < xm(x, latents=latents)


def test_causal_and_cached_generation_with_prepended_latents():
    torch.manual_seed(0)
    xm = XMLatentDecoder(model(), num_latents=2, candidates=2).eval()
    x, latents = torch.randint(0, 20, (2, 8)), torch.randn(2, 2, 2, 16)
    other = x.clone()
    other[:, -1] = (x[:, -1] + 1) % 20
    a, _ = xm(x, latents=latents, return_loss=False)
    b, _ = xm(other, latents=latents, return_loss=False)
    torch.testing.assert_close(a[:, :, :-1], b[:, :, :-1])
    z = torch.randn(2, 2, 16)
    cached = xm.generate(x[:, :3], 6, latents=z, temperature=0)
    assert torch.equal(cached, xm.generate(x[:, :3], 6, latents=z, temperature=0, cache_kv=False))


def test_the_loss_falls():
    torch.manual_seed(0)
    xm = XMLatentDecoder(model(), num_latents=2, candidates=2)
    opt = torch.optim.Adam(xm.parameters(), lr=3e-3)
    x = torch.randint(0, 20, (4, 10))
    losses = []
    for _ in range(12):
        loss = xm(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


def test_bad_input_is_refused():
    for bad, name in ((dict(candidates=0), "candidates"), (dict(winner_fns=[min]), "winner_fns"),
                      (dict(num_latents=0), "num_latents")):
        with pytest.raises(ValueError, match=name):
            XMLatentDecoder(model(), **bad)
    xm = XMLatentDecoder(model(), num_latents=2)
    x = torch.randint(0, 20, (2, 6))
    with pytest.raises(ValueError, match="active_latent_index"):
        xm(x, active_latent_index=2)
    with pytest.raises(ValueError, match="latents"):
        xm(x, latents=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="seq"):
        xm(x.float())
    with pytest.raises(ValueError, match="winner_fn"):  # the default ranks losses, which generation lacks
        xm.generate_with_candidate_latents(x[:, :2], 3)
