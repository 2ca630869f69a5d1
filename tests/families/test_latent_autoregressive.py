"""LeJEPA-style latent autoregression (families/latent_autoregressive.py): usage, parity, SIGReg, the probe."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.families.latent_autoregressive import LatentAutoregressive, sigreg_loss

V, N = 32, 12
SMALL_SIGREG = dict(num_slices=32, domain=(-5, 5), num_knots=9)


def _net(seed: int = 0) -> TransformerWrapper:
    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=V, max_seq_len=N, attn_layers=Decoder(dim=16, depth=1, heads=2,
                                                                               rotary_pos_emb=True,
                                                                               pre_norm_has_final_norm=False))


def test_xtransformers_usage_runs_with_the_import_changed():
    net = _net()
    model = LatentAutoregressive(net, dim=16, num_rollouts=4, rollout_loss_weights=[1.0, 0.5, 0.25, 0.125],
                                 predict_next_embed_no_action=True, sigreg_loss_kwargs=SMALL_SIGREG)
    x = torch.randint(0, V, (2, N))
    loss = model(x)
    assert loss.dim() == 0
    loss.backward()
    assert net.token_emb.weight.grad is not None and model.to_next_embed_pred[1].weight.grad is not None
    assert net(x).shape == (2, N, V)  # the network's head is now the probe
    # Rollouts longer than the sequence are cut to it.
    assert model(x[:, :2]).isfinite()


def _copy_mlp(put, mine, theirs):
    from xt_parity import copy_norm

    copy_norm(put, mine[0], theirs[0])
    for i in (1, 3, 5):
        put(mine[i].weight, theirs[i].weight)
        put(mine[i].bias, theirs[i].bias)


def test_losses_and_gradients_equal_xtransformers():
    pytest.importorskip("x_transformers")
    from x_transformers.gpt_lejepa import LatentAutoregressive as Theirs
    from xt_parity import build_pair, copy_weights

    ours_net, their_net = build_pair(dict(num_tokens=V, max_seq_len=N), "Decoder",
                                     dict(dim=16, depth=2, heads=2, rotary_pos_emb=True))
    kw = dict(dim=16, num_rollouts=3, rollout_loss_weights=[1.0, 0.5, 0.25], predict_next_embed_no_action=True,
              sigreg_loss_kwargs=SMALL_SIGREG)
    ours, theirs = LatentAutoregressive(ours_net, **kw), Theirs(their_net, **kw)

    def extra(o, t, put):
        _copy_mlp(put, list(o.to_logits)[:6], list(t.to_logits)[:6])
        put(o.to_logits[6].weight, t.to_logits[6].weight)
        put.zero(o.to_logits[6].bias)
        put(ours.action_emb.weight, theirs.action_emb.weight)
        _copy_mlp(put, ours.to_next_embed_pred, theirs.to_next_embed_pred)
        _copy_mlp(put, ours.to_next_embed_no_action_pred, theirs.to_next_embed_no_action_pred)

    copy_weights(ours_net, their_net, [extra])  # checks every parameter of the network (probe included)
    x = torch.randint(0, V, (2, N))
    x[0, -2:] = -100  # ignored targets
    torch.manual_seed(3)  # SIGReg's random directions
    total, parts = ours(x, return_loss_breakdown=True)
    torch.manual_seed(3)
    their_total, their_parts = theirs(x, return_loss_breakdown=True)
    for a, b in zip((total, *parts), (their_total, *their_parts), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    ga = torch.autograd.grad(total, ours_net.token_emb.weight)[0]
    gb = torch.autograd.grad(their_total, their_net.token_emb.emb.weight)[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)


def test_sigreg_is_small_for_gaussians_and_large_for_collapse():
    torch.manual_seed(0)
    gaussian = sigreg_loss(torch.randn(4096, 8), num_slices=64)
    collapsed = sigreg_loss(torch.ones(4096, 8), num_slices=64)
    stretched = sigreg_loss(3 * torch.randn(4096, 8), num_slices=64)
    assert 0 <= gaussian < 0.01 < stretched < collapsed


def test_the_probe_reads_detached_embeddings_and_training_lowers_the_loss():
    net = _net(1)
    model = LatentAutoregressive(net, dim=16, sigreg_loss_kwargs=SMALL_SIGREG)
    x = torch.arange(N).repeat(2, 1) % 4
    _, (ce, *_) = model(x, return_loss_breakdown=True)
    assert torch.autograd.grad(ce, net.token_emb.weight, allow_unused=True)[0] is None
    grad = torch.autograd.grad(ce, model.net.to_logits[1].weight)[0]  # the probe itself learns
    assert grad.abs().sum() > 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    first = model(x).item()
    for _ in range(20):
        opt.zero_grad()
        model(x).backward()
        opt.step()
    assert model(x).item() < 0.7 * first


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="predict_next_embed"):
        LatentAutoregressive(_net(), dim=16, predict_next_embed_with_action=False)
    with pytest.raises(ValueError, match="rollout_loss_weights"):
        LatentAutoregressive(_net(), dim=16, num_rollouts=2, rollout_loss_weights=[1.0])
    with pytest.raises(ValueError, match="dim"):
        LatentAutoregressive(_net(), dim=32)
    with pytest.raises(ValueError, match="x:"):
        LatentAutoregressive(_net(), dim=16)(torch.randint(0, V, (5,)))


def _spy_predictor_input(model) -> list:
    """The streams the with-action predictor's first rollout step reads, `(b, n - 1, d)`."""
    seen: list = []
    model.to_next_embed_pred.register_forward_pre_hook(lambda _m, args: seen.append(args[0][..., :16]))
    return seen


@pytest.mark.parametrize("case", ["memory_tokens", "layer_dropout"])
def test_the_predictor_starts_from_the_named_layers_hiddens(case):
    # x-transformers' `hiddens`: the stream entering each self-attention layer, before its pre-norm,
    # without the memory tokens' positions, one per layer even when stochastic depth skips it.
    torch.manual_seed(0)
    if case == "memory_tokens":
        net = TransformerWrapper(num_tokens=V, max_seq_len=N, num_memory_tokens=2,
                                 attn_layers=Decoder(dim=16, depth=2, heads=2, rotary_pos_emb=True))
    else:  # the top layer (attention and feed-forward) is all but always skipped
        net = TransformerWrapper(num_tokens=V, max_seq_len=N,
                                 attn_layers=Decoder(dim=16, depth=2, heads=2, rotary_pos_emb=True,
                                                     layer_dropout=(0.0, 0.0, 0.999999, 0.999999)))
    model = LatentAutoregressive(net, dim=16, sigreg_loss_kwargs=SMALL_SIGREG)
    x = torch.randint(0, V, (2, 8))
    seen = _spy_predictor_input(model)
    torch.manual_seed(1)
    model(x).backward()
    torch.manual_seed(1)
    embed, inter = net(x, return_embeddings_and_intermediates=True)
    assert seen[0].shape == (2, 7, 16)
    assert torch.equal(seen[0], inter.hiddens[-1][:, :-1])
    if case == "layer_dropout":
        # The top layer passed its input through: the final norm of the predictor's input is the embedding.
        torch.testing.assert_close(net.attn_layers.final_norm(seen[0]), embed[:, :-1])
    # Evaluation reads the same stream (the weights in the intermediates take the explicit path).
    model.eval()
    with torch.no_grad():
        model(x)
        _, inter = net.eval()(x, return_embeddings_and_intermediates=True)
    torch.testing.assert_close(seen[-1], inter.hiddens[-1][:, :-1], atol=1e-6, rtol=0)


def test_predictor_input_hiddens_index_is_checked():
    with pytest.raises(ValueError, match="predictor_input_hiddens_index"):
        LatentAutoregressive(_net(), dim=16, predictor_input_hiddens_index=1)  # one self-attention layer
    LatentAutoregressive(_net(), dim=16, predictor_input_hiddens_index=-1)
    reversible = TransformerWrapper(num_tokens=V, max_seq_len=N, attn_layers=Decoder(dim=16, depth=1, heads=2,
                                                                                      reversible=True))
    with pytest.raises(ValueError, match="predictor_input_hiddens_index: a reversible"):
        LatentAutoregressive(reversible, dim=16)
    LatentAutoregressive(reversible, dim=16, predictor_input_hiddens_index=None)


def test_x_transformers_hiddens_leave_out_a_skipped_layer():
    # Why the index differs under layer_dropout: x-transformers' hiddens lose a skipped layer's entry.
    pytest.importorskip("x_transformers")
    from x_transformers import Decoder as TheirDecoder

    torch.manual_seed(0)
    theirs = TheirDecoder(dim=16, depth=2, heads=2, layer_dropout=0.999999)
    _, inter = theirs(torch.randn(1, 4, 16), return_hiddens=True)
    assert len(inter.hiddens) < 2
    ours = Decoder(dim=16, depth=2, heads=2, layer_dropout=0.999999)
    _, inter = ours(torch.randn(1, 4, 16), return_hiddens=True)
    assert len(inter.hiddens) == 2


def test_evaluation_with_flash_layers_reads_the_hiddens_on_the_fused_path():
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=V, max_seq_len=N, attn_layers=Decoder(dim=16, depth=1, heads=2,
                                                                               attn_flash=True))
    model = LatentAutoregressive(net, dim=16, sigreg_loss_kwargs=SMALL_SIGREG)
    x = torch.randint(0, V, (2, 8))
    torch.manual_seed(1)
    trained = model(x)
    torch.manual_seed(1)
    with torch.no_grad():
        evaluated = model.eval()(x)  # no dropout: the same loss
    torch.testing.assert_close(evaluated, trained.detach())
