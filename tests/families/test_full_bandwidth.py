"""Full-bandwidth transformer (labml_style_nn/families/full_bandwidth.py): usage, invariants, parity."""

import pytest
import torch
import torch.nn.functional as F
from xt_parity import build_pair, copy_weights

from labml_style_nn import AutoregressiveWrapper, Decoder, FullBandwidth, TransformerWrapper

WRAPPER = dict(num_tokens=20, max_seq_len=16, tie_embedding=True, tie_embedding_scale=0.25, post_emb_norm=True)
STACK = dict(dim=16, depth=3, heads=2, depth_scale_residual=True)


def _net(seed=0):
    torch.manual_seed(seed)
    return TransformerWrapper(**WRAPPER, attn_layers=Decoder(**STACK))


def test_full_bandwidth_usage_and_invariants():
    model = FullBandwidth(_net(), temporal_parallel_passes=3)
    seq = torch.randint(0, 20, (2, 9))
    loss = model(seq)
    assert loss.dim() == 0
    loss.backward()
    assert all(p.grad is not None for p in model.transitions.parameters())
    model.eval()
    out = model(seq, return_loss_breakdown=True, return_all_pass_logits=True)
    assert len(out.all_pass_logits) == 3 and out.all_pass_logits[0].shape == (2, 8, 20)
    assert len(out.loss_breakdown.feedback_pass_losses) == 2
    # The first pass is the plain decoder; one pass is its cross-entropy.
    plain = model.net(seq[:, :-1])
    torch.testing.assert_close(out.all_pass_logits[0], plain)
    torch.testing.assert_close(model(seq, temporal_parallel_passes=1),
                               F.cross_entropy(plain.transpose(1, 2), seq[:, 1:]))
    # Later passes change every position after the first (which has no latent before it).
    diff = (out.all_pass_logits[2] - plain).abs().amax(-1)
    assert (diff[:, 0] < 1e-5).all() and (diff[:, 1:] > 1e-4).all()
    # Causal in every pass: a later token changes no earlier logits.
    changed = seq.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 20
    again = model(changed, return_loss=False, return_all_pass_logits=True)
    for a, b in zip(again.all_pass_logits, out.all_pass_logits, strict=True):
        torch.testing.assert_close(a[:, :5], b[:, :5])
    # The latent jitter acts in training only.
    model.train()
    assert not torch.equal(model(seq), model(seq))
    model.eval()
    torch.testing.assert_close(model(seq), model(seq))
    assert model.generate(seq[:, :3], 4, filter_logits_fn="top_p", eos_token=3).shape[0] == 2
    assert model.generate(seq[0, :3], 4, temperature=0.0).shape == (4,)
    # Without feedback (no prompt passes, no fused latents) generation is the plain decoder's.
    plain_greedy = AutoregressiveWrapper(model.net).generate(seq[:, :3], 4, temperature=0.0)
    assert torch.equal(model.generate(seq[:, :3], 4, temperature=0.0, process_prompt=False,
                                      should_fuse_latent=lambda step: False), plain_greedy)
    assert type(FullBandwidth(_net(), transitions={1: "gru"}).transitions["3->1"]).__name__ == "GRUGatingTransition"


def test_full_bandwidth_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = FullBandwidth(_net(), recirc_pairs="top_and_prev", dynamic_rollout_loss_weight=True)
    seq = torch.randint(0, 20, (4, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(seq).item()
    for _ in range(15):
        loss = model(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


@pytest.mark.parametrize("pairs", [None, ((3, 2, "gru"), (2, 2, "residual"), (3, 1, "linear"), (1, 3, "residual_glu"))])
def test_full_bandwidth_matches_x_transformers(pairs):
    from x_transformers.full_bandwidth import FullBandwidth as TheirFullBandwidth
    ours, theirs = build_pair(WRAPPER, "Decoder", STACK)
    mine = FullBandwidth(ours, recirc_pairs=pairs, temporal_parallel_passes=3).eval()
    their = TheirFullBandwidth(theirs, recirc_pairs=pairs, temporal_parallel_passes=3).eval()

    def transitions(_ours, _theirs, put):
        for route, module in mine.transitions.items():
            by_name = dict(their.transitions[route].named_parameters())
            for name, p in module.named_parameters():
                put(p, by_name[name.replace(".gamma", ".g").replace("gamma", "g")])
    copy_weights(ours, theirs, [transitions])
    torch.manual_seed(1)
    seq = torch.randint(0, 20, (2, 9))
    a = mine(seq, return_loss=False, return_all_pass_logits=True).all_pass_logits
    b = their(seq, return_loss=False, return_all_pass_logits=True).all_pass_logits
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    loss_a, loss_b = mine(seq, dynamic_rollout_loss_weight=True), their(seq, dynamic_rollout_loss_weight=True)
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-4)
    if pairs is None:
        ga = torch.autograd.grad(loss_a, ours.token_emb.weight)[0]
        gb = torch.autograd.grad(loss_b, theirs.token_emb.emb.weight)[0]
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
    assert torch.equal(mine.generate(seq[:, :4], 5, temperature=0.0), their.generate(seq[:, :4], 5, temperature=0.0))


def test_full_bandwidth_refuses_bad_input():
    with pytest.raises(ValueError, match="depth-scaled"):
        FullBandwidth(TransformerWrapper(**WRAPPER, attn_layers=Decoder(dim=16, depth=2, heads=2)))
    with pytest.raises(ValueError, match="tie_embedding"):
        FullBandwidth(TransformerWrapper(num_tokens=20, max_seq_len=16, post_emb_norm=True, attn_layers=Decoder(**STACK)))
    with pytest.raises(ValueError, match="recirc_pairs"):
        FullBandwidth(_net(), recirc_pairs=((4, 1),))
    with pytest.raises(ValueError, match="recirc_pairs"):
        FullBandwidth(_net(), recirc_pairs="nearest")
    with pytest.raises(ValueError, match="transition"):
        FullBandwidth(_net(), transition="lstm")
    with pytest.raises(ValueError, match="temporal_parallel_passes"):
        FullBandwidth(_net())(torch.randint(0, 20, (2, 6)), temporal_parallel_passes=0)
