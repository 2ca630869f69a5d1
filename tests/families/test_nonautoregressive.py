"""NonAutoregressiveWrapper (families/nonautoregressive.py): x-transformers' usage, demasking, parity."""

import random

import pytest
import torch

from labml_style_nn import Encoder, TransformerWrapper
from labml_style_nn.families.nonautoregressive import (
    NonAutoregressiveWrapper,
    cosine_schedule,
    linear_schedule,
    schedule_and_slope,
)

MASK = 8


def tiny_net(cls=TransformerWrapper, enc=Encoder, **kwargs):
    return cls(num_tokens=9, max_seq_len=8, attn_layers=enc(dim=16, depth=1, heads=2), **kwargs)


def test_usage_shapes_schedules_and_bad_input():
    torch.manual_seed(0)
    model = NonAutoregressiveWrapper(tiny_net(), mask_id=MASK, steps=4, self_token_critic=True, self_cond=True)
    seq = torch.randint(0, 8, (3, 8))
    losses = model(seq)
    assert losses.loss.dim() == 0 and losses.critic_loss.dim() == 0 and losses.generator_loss > 0
    losses.loss.backward()
    assert model.to_self_cond.weight.grad is not None and model.token_critic.to_logits.weight.grad is not None
    assert model(seq, only_train_critic=True).generator_loss is None
    assert model.generate().shape == (8,)
    out = model.generate(batch_size=2)
    # gamma(1) = 0: every position is filled by the last step (an untrained generator may still predict the
    # mask token itself, as in x-transformers; the trained model of the next test demasks exactly)
    assert out.shape == (2, 8) and ((out >= 0) & (out < 9)).all()
    # the schedules and their slopes
    gamma, slope = schedule_and_slope(cosine_schedule, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(gamma, torch.tensor([1.0, 0.5 ** 0.5, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(slope, -torch.pi / 2 * torch.tensor([0.0, 0.5 ** 0.5, 1.0]), atol=1e-6, rtol=0)
    assert linear_schedule(torch.tensor(0.25)).item() == 0.75
    # MDLM's weight for the linear schedule is 1 / gamma
    torch.testing.assert_close(model.loss_weight(torch.tensor([0.5, 0.75]), 8), torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError, match="mask_id"):
        NonAutoregressiveWrapper(tiny_net(), mask_id=9)
    with pytest.raises(ValueError, match="schedule"):
        NonAutoregressiveWrapper(tiny_net(), mask_id=MASK, schedule="square")
    with pytest.raises(ValueError, match="self_token_critic and token_critic"):
        NonAutoregressiveWrapper(tiny_net(), mask_id=MASK, self_token_critic=True, token_critic=tiny_net())
    with pytest.raises(ValueError, match="x: expected"):
        model(seq[:, :5])


def test_learns_a_fixed_batch_and_demasks_it():
    torch.manual_seed(0)
    random.seed(0)
    # Learning in 40 steps at this tiny size: the embedding drawn at std 0.02 (x-transformers' draw, the
    # default, learns this batch more slowly here)
    model = NonAutoregressiveWrapper(tiny_net(token_emb_init_std=0.02), mask_id=MASK, steps=4, no_replace_prob=0.0,
                                     random_token_prob=0.0, use_simple_mdlm_loss_weight=False)
    seq = torch.arange(8)[None].repeat(4, 1)  # one sequence, always
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(seq).loss.item()
    for _ in range(40):
        loss = model(seq).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4
    assert (model.generate(batch_size=2, start_temperature=0.0) == seq[:2]).all()


def test_parity_with_xtransformers_and_its_negative_default_loss():
    xt = pytest.importorskip("x_transformers")
    from x_transformers.nonautoregressive_wrapper import NonAutoregressiveWrapper as Theirs
    from xt_parity import copy_weights

    torch.manual_seed(0)
    their_net = tiny_net(xt.TransformerWrapper, xt.Encoder).eval()
    ours_net = tiny_net().eval()
    copy_weights(ours_net, their_net)
    theirs = Theirs(their_net, mask_id=MASK, steps=4, self_token_critic=True, use_simple_mdlm_loss_weight=False)
    ours = NonAutoregressiveWrapper(ours_net, mask_id=MASK, steps=4, self_token_critic=True,
                                    use_simple_mdlm_loss_weight=False)
    with torch.no_grad():
        ours.token_critic.to_logits.weight.copy_(theirs.token_critic.to_logits.weight)
        ours.token_critic.to_logits.bias.copy_(theirs.token_critic.to_logits.bias)
    seq = torch.randint(0, 8, (3, 8))
    for seed in range(4):  # the coin flips of BERT's trick take both sides
        a, b = [], []
        for model, out in ((ours, a), (theirs, b)):
            torch.manual_seed(seed)
            random.seed(seed)
            out.append(model(seq).generator_loss)
            torch.manual_seed(seed)
            out.append(model.generate(batch_size=2).float())
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.token_critic(seq), theirs.token_critic(seq), atol=1e-5, rtol=1e-4)
    # x-transformers' MDLM weight has the wrong sign: its default loss is negative, ours is a weighted NLL.
    theirs.loss_weight_fn, ours.use_simple_mdlm_loss_weight = Theirs(their_net, mask_id=MASK).loss_weight_fn, True
    torch.manual_seed(0)
    random.seed(0)
    assert theirs(seq, only_train_generator=True).loss.item() < 0
    assert ours(seq, only_train_generator=True).loss.item() > 0
