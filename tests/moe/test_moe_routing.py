"""Routing: Mixtral's softmax top-k, the Switch capacity and losses, DeepSeek's sigmoid gates, bias and groups."""

import math

import pytest
import torch

from labml_style_nn.moe import (
    Experts,
    MixtureOfExperts,
    SigmoidRouter,
    SoftmaxRouter,
    capacity,
    group_limited_top_k,
    load_balancing_loss,
    router_z_loss,
    top_k_softmax,
    within_capacity,
)


def test_renormalised_gates_are_a_softmax_over_the_chosen_logits():
    logits = torch.randn(7, 6)
    r = top_k_softmax(logits, 3, renormalise=True)
    chosen = logits.gather(1, r.experts)
    torch.testing.assert_close(r.gates, chosen.softmax(-1))
    # The chosen experts are the three largest logits.
    assert torch.equal(r.experts.sort(-1).values, logits.topk(3).indices.sort(-1).values)
    # Without renormalising the gates are the probabilities over all experts (Switch, Qwen2-MoE).
    torch.testing.assert_close(top_k_softmax(logits, 3, renormalise=False).gates,
                               logits.softmax(-1).gather(1, r.experts))


def test_top1_router_keeps_the_probability_as_gate():
    router = SoftmaxRouter(8, 4, 1)
    r = router(torch.randn(5, 8))
    assert not router.norm_gates and (r.gates < 1).all()


def test_capacity_and_queue_order():
    assert capacity(64, 8, 1.25) == 10 and capacity(3, 8, 1.0) == 1
    expert = torch.tensor([1, 1, 0, 1, 0, 1])
    keep = within_capacity(expert, 2, 2)
    assert keep.tolist() == [True, True, True, False, True, False]


def test_dropped_tokens_are_accounted_for():
    torch.manual_seed(1)
    moe = MixtureOfExperts(8, router=SoftmaxRouter(8, 4, 1), experts=Experts(4, 8, 16), capacity_factor=0.5).train()
    x = torch.randn(3, 10, 8)
    y = moe(x)
    # Reference: tokens in position order claim places first come, first served.
    tokens = x.transpose(0, 1).reshape(-1, 8)
    experts = moe.router(tokens).experts[:, 0]
    cap = math.ceil(0.5 * 30 / 4)
    seen = [0] * 4
    kept = []
    for e in experts.tolist():
        seen[e] += 1
        kept.append(seen[e] <= cap)
    kept = torch.tensor(kept)
    assert moe.dropped == int((~kept).sum()) > 0
    assert moe.load.sum() == 30 and int(moe.load.max()) > cap
    flat = y.transpose(0, 1).reshape(-1, 8)
    # A dropped token's layer output is zero (the residual carries it) ...
    assert flat[~kept].abs().max() == 0
    # ... and a kept token's output is what it is without any capacity.
    moe.capacity_factor = None
    full = moe(x).transpose(0, 1).reshape(-1, 8)
    torch.testing.assert_close(flat[kept], full[kept])
    # Evaluation never drops.
    moe.capacity_factor = 0.5
    moe.eval()
    torch.testing.assert_close(moe(x), full.view(10, 3, 8).transpose(0, 1))
    assert moe.dropped == 0


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_inference_path_equals_the_recorded_layer_and_keeps_its_record(router):
    # `MixtureOfExperts.infer` (evaluation without gradients) against the recorded forward, with shared
    # experts and a gate; in training under `no_grad` the full path runs and drops by capacity.
    torch.manual_seed(2)
    from labml_style_nn.feedforward.feedforward import FeedForward
    r = SoftmaxRouter(16, 6, 2) if router == "softmax" else SigmoidRouter(16, 6, 2, norm_gates=True)
    moe = MixtureOfExperts(16, router=r, experts=Experts(6, 16, 32), shared=FeedForward(16, inner_dim=32, glu=True),
                           shared_gate=torch.nn.Linear(16, 1, bias=False), capacity_factor=0.5, balance_loss=0.1)
    x = torch.randn(2, 9, 16)
    moe.train()
    moe(x)  # leaves a loss and drops behind
    assert moe.dropped > 0 and moe.aux_loss.item() > 0
    with torch.no_grad():
        trained = moe(x)
    torch.testing.assert_close(trained, moe(x), rtol=1e-6, atol=1e-6)  # the same drops with and without a graph
    moe.eval()
    recorded = moe(x)
    assert recorded.requires_grad
    with torch.inference_mode():
        torch.testing.assert_close(moe(x), recorded, rtol=1e-6, atol=1e-6)
    assert moe.dropped == 0 and moe.aux_loss.item() == 0.0 and int(moe.load.sum()) == 2 * 9 * 2


def test_balance_loss_is_one_when_uniform_and_grows_with_imbalance():
    probs = torch.full((8, 4), 0.25)
    even = torch.arange(8)[:, None] % 4
    assert load_balancing_loss(probs, even, 4).item() == pytest.approx(1.0)
    skewed_probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1)
    assert load_balancing_loss(skewed_probs, torch.zeros(8, 1, dtype=torch.long), 4).item() == pytest.approx(2.8)


def test_z_loss_closed_form():
    logits = torch.randn(5, 3)
    assert router_z_loss(logits).item() == pytest.approx((torch.logsumexp(logits, -1) ** 2).mean().item(), rel=1e-6)


def test_layer_records_the_weighted_losses_in_training_only():
    router = SoftmaxRouter(8, 4, 2)
    moe = MixtureOfExperts(8, router=router, experts=Experts(4, 8, 16), balance_loss=0.1, z_loss=0.01).train()
    x = torch.randn(2, 6, 8)
    moe(x)
    r = router(x.reshape(-1, 8))
    expected = 0.1 * load_balancing_loss(r.probs, r.experts, 4) + 0.01 * router_z_loss(r.logits)
    torch.testing.assert_close(moe.aux_loss, expected)
    assert moe.aux_loss.requires_grad
    moe.eval()
    moe(x)
    assert moe.aux_loss.item() == 0.0


def test_sigmoid_bias_chooses_but_does_not_weigh():
    torch.manual_seed(0)
    router = SigmoidRouter(8, 6, 2, routed_scale=2.5)
    x = torch.randn(10, 8)
    before = router(x)
    scores = router.proj(x).sigmoid()
    # Gates: $\lambda s_e / \sum_{\mathcal{T}} s$ from the scores alone
    chosen = scores.gather(1, before.experts)
    torch.testing.assert_close(before.gates, 2.5 * chosen / chosen.sum(-1, keepdim=True))
    # A large bias on expert 5 makes every token choose it, with its unbiased score as gate.
    router.expert_bias[5] = 10.0
    after = router(x)
    assert (after.experts == 5).any(-1).all()
    pos = (after.experts == 5).float().argmax(-1)
    gate5 = after.gates.gather(1, pos[:, None])[:, 0]
    other = after.experts.gather(1, 1 - pos[:, None])[:, 0]
    expected = 2.5 * scores[:, 5] / (scores[:, 5] + scores.gather(1, other[:, None])[:, 0])
    torch.testing.assert_close(gate5, expected)


def test_bias_update_lowers_the_overloaded_and_raises_the_idle():
    router = SigmoidRouter(4, 4, 1, bias_update_rate=0.01)
    router.update_bias(torch.tensor([[0], [0], [0], [1]]))
    # Loads 3, 1, 0, 0 against a mean of 1.
    torch.testing.assert_close(router.expert_bias, torch.tensor([-0.01, 0.0, 0.01, 0.01]))


def test_group_limited_choice_equals_a_loop_reference():
    torch.manual_seed(0)
    choice = torch.randn(20, 12)
    picked = group_limited_top_k(choice, 3, groups=4, groups_top_k=2)
    for row, p in zip(choice, picked, strict=True):
        groups = row.view(4, 3)
        score = groups.topk(2, -1).values.sum(-1)
        best = set(score.topk(2).indices.tolist())
        allowed = torch.tensor([i // 3 in best for i in range(12)])
        ref = row.masked_fill(~allowed, -math.inf).topk(3).indices
        assert sorted(p.tolist()) == sorted(ref.tolist())
        assert all(i // 3 in best for i in p.tolist())


def test_group_keywords_refuse_impossible_choices():
    with pytest.raises(ValueError, match="ff_expert_groups"):
        SigmoidRouter(4, 6, 2, groups=4)
    with pytest.raises(ValueError, match="ff_expert_groups_top_k"):
        SigmoidRouter(4, 8, 4, groups=4, groups_top_k=1)
