"""Mixture-of-experts layers in a stack: causal, padding-invariant, cached decoding equals the full pass, losses."""

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, Decoder, Encoder, TransformerWrapper
from labml_style_nn.feedforward import FeedForward
from labml_style_nn.moe import MixtureOfExperts, moe_aux_loss

V = 37
ROUTINGS = {
    "switch": dict(ff_num_experts=4, ff_top_k=1, ff_capacity_factor=1.0, ff_router_z_loss=1e-3),
    "mixtral": dict(ff_num_experts=4, ff_top_k=2, ff_glu=True, ff_swish=True, ff_no_bias=True),
    "deepseek": dict(ff_num_experts=8, ff_top_k=3, ff_router="sigmoid", ff_num_shared_experts=1, ff_expert_inner_dim=8,
                     ff_expert_groups=4, ff_expert_groups_top_k=2, ff_routed_scale=2.5, ff_bias_update_rate=1e-3,
                     ff_first_dense=1),
}


def model(routing: str, **kw) -> TransformerWrapper:
    return TransformerWrapper(num_tokens=V, max_seq_len=64, attn_layers=Decoder(
        dim=16, depth=2, heads=2, rotary_pos_emb=True, **ROUTINGS[routing], **kw))


@pytest.mark.parametrize("routing", list(ROUTINGS))
def test_causal_in_training_and_evaluation(routing):
    net = model(routing)
    x = torch.randint(0, V, (3, 12))
    changed = x.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % V
    for training in (False, True):
        net.train(training)
        # The balancing bias moves in training: compare two passes from the same state.
        state = {k: v.clone() for k, v in net.state_dict().items()}
        a = net(x)
        net.load_state_dict(state)
        b = net(changed)
        net.load_state_dict(state)
        torch.testing.assert_close(a[:, :8], b[:, :8], msg=f"training={training}")


@pytest.mark.parametrize("routing", list(ROUTINGS))
def test_padding_changes_no_real_token(routing):
    net = model(routing).eval()
    x = torch.randint(0, V, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    out = net(x, mask=mask)
    torch.testing.assert_close(out[1, :6], net(x[1:, :6])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("routing", list(ROUTINGS))
def test_cached_decoding_equals_the_full_pass(routing):
    net = model(routing).eval()
    wrapper = AutoregressiveWrapper(net)
    prompt = torch.randint(0, V, (2, 5))
    cached = wrapper.generate(prompt, 10, temperature=0.0)
    full = wrapper.generate(prompt, 10, temperature=0.0, cache_kv=False)
    assert torch.equal(cached, full)
    # And the last logits of the full pass over the generated tokens are the cached step's choice.
    seq = torch.cat([prompt, cached], dim=1)
    assert torch.equal(net(seq[:, :-1])[:, 4:].argmax(-1), cached)


def test_encoder_layers_route_without_a_causal_order():
    enc = Encoder(dim=16, depth=1, heads=2, ff_num_experts=3, ff_top_k=2).eval()
    x = torch.randn(2, 7, 16)
    perm = torch.randperm(7)
    # No positions: a permutation of the tokens permutes the outputs.
    torch.testing.assert_close(enc(x)[:, perm], enc(x[:, perm]), rtol=1e-5, atol=1e-5)


def test_first_dense_layers_stay_dense_and_widths_follow_the_keywords():
    net = model("deepseek")
    ffs = [b.fn for b in net.attn_layers.blocks if b.kind == "f"]
    assert isinstance(ffs[0], FeedForward) and isinstance(ffs[1], MixtureOfExperts)
    moe = ffs[1]
    assert moe.experts.w_in.shape == (8, 16, 8)  # 8 experts of width 8 (not gated), dim 16
    assert moe.shared is not None and moe.shared.proj_out.in_features == 8


def test_wrapper_loss_adds_the_auxiliary_losses():
    net = model("switch", ff_balance_loss=0.5)
    wrapper = AutoregressiveWrapper(net).train()
    x = torch.randint(0, V, (2, 9))
    loss = wrapper(x)
    aux = moe_aux_loss(net)
    assert aux.item() > 0
    # The same pass by hand: the cross-entropy plus every layer's weighted losses.
    ce = torch.nn.functional.cross_entropy(net(x[:, :-1]).transpose(1, 2), x[:, 1:])
    torch.testing.assert_close(loss, ce + sum(m.aux_loss for m in net.modules() if isinstance(m, MixtureOfExperts)))
    # The router gets a gradient from the losses.
    loss.backward()
    router = [m for m in net.modules() if isinstance(m, MixtureOfExperts)][0].router.proj.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    net.eval()
    wrapper(x)  # evaluation: no auxiliary loss
    assert moe_aux_loss(net).item() == 0.0
    assert moe_aux_loss(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(ff_capacity_factor=1.0), "ff_capacity_factor"),
    (dict(ff_num_shared_experts=1), "ff_num_shared_experts"),
    (dict(ff_num_experts=2, ff_top_k=3), "ff_top_k"),
    (dict(ff_num_experts=4, ff_expert_groups=2), "ff_expert_groups"),
    (dict(ff_num_experts=6, ff_router="sigmoid", ff_expert_groups=4), "ff_expert_groups"),
    (dict(ff_num_experts=4, ff_router="sparse"), "ff_router"),
    (dict(ff_num_experts=4, ff_post_act_ln=True), "ff_post_act_ln"),
    (dict(ff_num_experts=-1), "ff_num_experts"),
])
def test_bad_keywords_are_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Decoder(dim=16, depth=1, heads=2, **kwargs)
