"""BeliefStateWrapper (families/belief_state.py): x-transformers' usage, what each state reads, parity."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.families.belief_state import BeliefStateWrapper, pair_indices


def tiny(cls=TransformerWrapper, dec=Decoder):
    return cls(num_tokens=12, max_seq_len=12, attn_layers=dec(dim=16, depth=1, heads=2))


def test_usage_and_what_each_state_reads():
    assert pair_indices(3).tolist() == [[0, 2], [0, 3], [1, 3]]
    torch.manual_seed(0)
    model = BeliefStateWrapper(forward_decoder=tiny(), backward_decoder=tiny(), pred_distance=True,
                               cond_on_distance=True, cond_on_distance_prob=0.5).eval()
    seq = torch.randint(0, 12, (2, 8))
    loss = model(seq)
    assert loss.dim() == 0
    loss.backward()
    assert model.suffix_token.grad is not None and model.backward_decoder.token_emb.weight.grad is not None
    assert model.generate_with_suffix_cond(seq[:, :2], 5, suffix=seq[0, -2:]).shape == (2, 5)
    assert model.generate_with_suffix_cond(seq[0, :2], 3, decode_backwards=True).shape == (3,)
    # cached decoding equals the full pass (greedy)
    a = model.generate_with_suffix_cond(seq[:, :2], 5, suffix=seq[:, -2:], temperature=0.0)
    torch.testing.assert_close(a, model.generate_with_suffix_cond(seq[:, :2], 5, suffix=seq[:, -2:],
                                                                  temperature=0.0, cache_kv=True))
    # b_j reads x_{j..n-1} only: changing token 4 changes b_0..b_4 and leaves b_5..b_8
    states = model._suffix_states(seq, None)
    changed = seq.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 12
    diff = (model._suffix_states(changed, None) - states).abs().amax(dim=(0, 2))
    assert (diff[:5] > 1e-4).all() and (diff[5:] < 1e-6).all()
    # cond_on_distance acts: the distance scales the head's input (x-transformers' changes no loss)
    model.cond_on_distance_prob = 1.0
    model.zero_grad()
    conditioned = model(seq)
    conditioned.backward()
    assert model.to_distance_cond[0].weight.grad.abs().sum() > 0 and model.to_distance_logits[0].weight.grad is None
    model.cond_on_distance = False
    assert (model(seq) - conditioned).abs() > 1e-4
    # lens: the full length is no lens, and what lies past a row's length changes nothing
    torch.testing.assert_close(model(seq, lens=torch.tensor([8, 8])), model(seq))
    lens = torch.tensor([8, 5])
    padded = seq.clone()
    padded[1, 5:] = 0
    torch.testing.assert_close(model(seq, lens=lens), model(padded, lens=lens))
    # a per-pair weight acts (x-transformers ignores it at backward_ar_loss_weight=1)
    plain = BeliefStateWrapper(model.forward_decoder, model.backward_decoder)
    by_side = plain(seq, loss_weight_by_fb_indices=lambda p: torch.tensor([2.0, 0.0]).expand(p.shape[0], 2))
    forward_only = BeliefStateWrapper(model.forward_decoder, model.backward_decoder, backward_ar_loss_weight=0.0)
    forward_only.text_head, forward_only.suffix_token = plain.text_head, plain.suffix_token
    torch.testing.assert_close(by_side, 2 * forward_only(seq))
    with pytest.raises(ValueError, match="forward_decoder and backward_decoder"):
        BeliefStateWrapper(tiny(), TransformerWrapper(num_tokens=10, max_seq_len=12,
                                                      attn_layers=Decoder(dim=16, depth=1, heads=2)))
    with pytest.raises(ValueError, match="lens"):
        model(seq, lens=torch.tensor([9, 2]))


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = BeliefStateWrapper(tiny())  # one network reads both ways
    seq = torch.randint(0, 12, (4, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(seq).item()
    for _ in range(25):
        loss = model(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.6


@pytest.mark.parametrize("kwargs", [dict(pred_distance=True), dict(backward_ar_loss_weight=0.5)])
def test_parity_with_xtransformers(kwargs):
    xt = pytest.importorskip("x_transformers")
    from x_transformers.belief_state_wrapper import BeliefStateWrapper as Theirs
    from xt_parity import copy_weights

    torch.manual_seed(0)
    their_f, their_b, ours_f, ours_b = tiny(xt.TransformerWrapper, xt.Decoder), tiny(xt.TransformerWrapper, xt.Decoder), \
        tiny(), tiny()
    copy_weights(ours_f, their_f)
    copy_weights(ours_b, their_b)
    theirs = Theirs(their_f, their_b, **kwargs).eval()
    ours = BeliefStateWrapper(ours_f, ours_b, **kwargs).eval()
    heads = [(ours.text_head, theirs.text_head), (ours.to_distance_logits, theirs.to_distance_logits)]
    with torch.no_grad():
        ours.suffix_token.copy_(theirs.suffix_token)
        for mine, their in heads:
            if mine is not None:
                for p, q in zip(mine.parameters(), their.parameters(), strict=True):
                    p.copy_(q)
    seq = torch.randint(0, 12, (2, 8))
    loss = ours(seq)
    torch.testing.assert_close(loss, theirs(seq), atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(loss, ours.suffix_token)[0], torch.autograd.grad(theirs(seq), theirs.suffix_token)[0]
    torch.testing.assert_close(*grads, atol=1e-6, rtol=1e-4)
    out = ours.generate_with_suffix_cond(seq[:, :2], 4, suffix=seq[:, -2:], temperature=0.0)
    torch.testing.assert_close(out, theirs.generate_with_suffix_cond(seq[:, :2], 4, suffix=seq[:, -2:], temperature=0.0))
    # x-transformers' lens flip is off by one: the full length gives another loss than no lens
    full = torch.tensor([8, 8])
    assert (theirs(seq, lens=full) - theirs(seq)).abs() > 1e-4
    torch.testing.assert_close(ours(seq, lens=full), ours(seq))
