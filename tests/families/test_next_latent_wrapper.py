"""Next-latent prediction (families/next_latent_wrapper.py): x-transformers' usage and numbers, the
rollout's start, SIGReg, learning, x-transformers' SIGReg failure, bad input."""

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.families.next_latent_wrapper import NextLatentWrapper, ResidualDynamics

NET = dict(num_tokens=20, max_seq_len=16)
STACK = dict(dim=16, depth=1, heads=2, attn_dim_head=8)


def test_usage_runs_with_only_the_import_changed():
    torch.manual_seed(0)
    model = TransformerWrapper(**NET, attn_layers=Decoder(**STACK))
    wrapper = NextLatentWrapper(model, dim=16, num_rollouts=3)
    token_ids = torch.randint(0, 20, (2, 12))
    loss = wrapper(token_ids)
    assert loss.dim() == 0
    loss.backward()
    assert model.token_emb.weight.grad is not None
    assert AutoregressiveWrapper(model).generate(token_ids[:, :1], 10).shape == (2, 10)


@pytest.mark.parametrize("cfg", [dict(num_rollouts=3),
                                 dict(num_rollouts=2, loss_type="mse", dynamic_rollout_loss_weight=False,
                                      rollout_weights=(1.0, 3.0)),
                                 dict(num_rollouts=2, dynamics_type="gru", loss_type="mse_and_cosine_sim")])
def test_losses_and_gradients_equal_xtransformers(cfg):
    pytest.importorskip("x_transformers")
    from x_transformers.next_latent_wrapper import NextLatentWrapper as Theirs
    from xt_parity import build_pair, copy_weights

    ours_net, their_net = build_pair(NET, "Decoder", STACK)
    torch.manual_seed(0)
    ours, theirs = NextLatentWrapper(ours_net, dim=16, **cfg), Theirs(their_net, dim=16, **cfg)

    def dynamics(_ours, _theirs, put):
        for mine, their in zip(ours.dynamics_model.parameters(), theirs.dynamics_model.parameters(), strict=True):
            # The zero-initialised last layer gets random values on both sides, so that it is tested too.
            value = their if their.abs().sum() > 0 else torch.randn_like(their) * 0.3
            put(mine, value)
            with torch.no_grad():
                their.copy_(value)

    copy_weights(ours_net, their_net, [dynamics])
    x = torch.randint(0, 20, (2, 10))
    x[0, -3:] = -100  # ignored targets
    a, b = ours(x, return_loss_breakdown=True), theirs(x, return_loss_breakdown=True)
    for u, v in zip((a[0], *a[1]), (b[0], *b[1]), strict=True):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)
    assert a[1].next_latent > 0 and a[1].kl > 0
    a[0].backward()
    b[0].backward()
    torch.testing.assert_close(ours_net.token_emb.weight.grad, their_net.token_emb.emb.weight.grad, atol=1e-5, rtol=1e-4)


def test_rollout_starts_at_the_current_latent_and_sigreg_prefers_a_gaussian():
    torch.manual_seed(0)
    model = TransformerWrapper(**NET, attn_layers=Decoder(**STACK))
    wrapper = NextLatentWrapper(model, dim=16, num_rollouts=2)
    assert isinstance(wrapper.dynamics_model, ResidualDynamics)
    h, e = torch.randn(2, 5, 16), torch.randn(2, 2, 5, 16)
    # $g$ starts at zero: every step predicts $h_t$.
    torch.testing.assert_close(wrapper.dynamics_model(e, h), h.expand(2, 2, 5, 16))
    gauss, shifted = torch.randn(512, 16), torch.randn(512, 16) * 0.3 + 1.0
    small = NextLatentWrapper.sigreg_loss(gauss, num_slices=64)
    assert 0 <= small < NextLatentWrapper.sigreg_loss(shifted, num_slices=64) / 5


def test_xtransformers_sigreg_fails_where_ours_regularises():
    pytest.importorskip("x_transformers")
    from x_transformers.next_latent_wrapper import NextLatentWrapper as Theirs
    from xt_parity import build_pair

    ours_net, their_net = build_pair(NET, "Decoder", STACK)
    x = torch.randint(0, 20, (2, 8))
    # It indexes the hidden states (b, n, D) with the targets' mask (b, n - 1).
    with pytest.raises(IndexError):
        Theirs(their_net, dim=16, sigreg_loss_weight=0.1)(x)
    loss, parts = NextLatentWrapper(ours_net, dim=16, sigreg_loss_weight=0.1)(x, return_loss_breakdown=True)
    assert parts.sigreg > 0 and torch.isfinite(loss)


def test_the_loss_falls():
    torch.manual_seed(0)
    model = TransformerWrapper(**NET, attn_layers=Decoder(**STACK))
    wrapper = NextLatentWrapper(model, dim=16, num_rollouts=2)
    opt = torch.optim.Adam(wrapper.parameters(), lr=3e-3)
    x = torch.randint(0, 20, (4, 10))
    losses = []
    for _ in range(12):
        loss = wrapper(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


def test_bad_input_is_refused():
    model = TransformerWrapper(**NET, attn_layers=Decoder(**STACK))
    for bad, name in ((dict(num_rollouts=0), "num_rollouts"), (dict(loss_type="l3"), "loss_type"),
                      (dict(num_rollouts=2, rollout_weights=(1.0,)), "rollout_weights"),
                      (dict(dynamics_type="custom"), "dynamics_type")):
        with pytest.raises(ValueError, match=name):
            NextLatentWrapper(model, dim=16, **bad)
    with pytest.raises(ValueError, match="num_rollouts"):
        NextLatentWrapper(model, dim=16, num_rollouts=3)(torch.randint(0, 20, (2, 4)))
