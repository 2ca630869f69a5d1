"""Recirculation (labml_style_nn/families/recirculation.py): x-transformers' usage, invariants, parity."""

import pytest
import torch
from xt_parity import build_pair, copy_weights

from labml_style_nn import AutoregressiveWrapper, Decoder, Recirculation, TransformerWrapper
from labml_style_nn.families.recirculation import norm_matched


def _net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=20, max_seq_len=16,
                              attn_layers=Decoder(dim=16, depth=3, heads=2, rotary_pos_emb=True, **kwargs)).eval()


def test_recirculation_usage_and_invariants():
    net = _net()
    model = Recirculation(net, source_layer=2, destination_layer=0, ramp_steps=2)
    x = torch.randint(0, 20, (2, 7))
    logits = model(x)
    assert logits.shape == (2, 7, 20)
    plain = net(x)
    # The first token's pass is the plain one; later tokens attend to recirculated keys.
    torch.testing.assert_close(logits[:, 0], plain[:, 0])
    assert (logits[:, 2:] - plain[:, 2:]).abs().amax() > 1e-3
    # alpha = 0 (beta = 1) recirculates z_d itself: the plain decoder.
    torch.testing.assert_close(Recirculation(net, 2, 0, alpha=0.0)(x), plain, atol=1e-5, rtol=1e-4)
    # Causal: a later token changes no earlier logits.
    changed = x.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 20
    torch.testing.assert_close(model(changed)[:, :5], logits[:, :5])
    # Decoding from x-transformers' cache equals reading the whole sequence.
    with torch.no_grad():
        head, cache = model(x[:, :6], return_intermediates=True)
        step, cache = model(x, cache=cache, return_intermediates=True)
    torch.testing.assert_close(step[:, -1], logits[:, 6].detach(), atol=1e-5, rtol=1e-4)
    # As the network of AutoregressiveWrapper: greedy generation is the argmax of the recirculated logits.
    out = AutoregressiveWrapper(model).generate(x[:, :4], 3, temperature=0.0)
    assert out.shape == (2, 3)
    seq = x[:, :4]
    for _ in range(3):
        seq = torch.cat((seq, model(seq)[:, -1:].argmax(-1)), dim=1)
    assert torch.equal(out, seq[:, 4:])
    # Prompts of different lengths (left-padded) decode as they would alone (no ramp, which counts columns).
    unramped = AutoregressiveWrapper(Recirculation(net, 2, 0, ramp_steps=0))
    long, short = x[0, :5], x[1, :2]
    both = unramped.generate([long, short], 3, temperature=0.0)
    assert torch.equal(both[0], unramped.generate(long[None], 3, temperature=0.0)[0])
    assert torch.equal(both[1], unramped.generate(short[None], 3, temperature=0.0)[0])


def test_recirculation_norm_matching_and_learned_mixer():
    z_s, z_d = torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    torch.testing.assert_close(norm_matched(z_s, z_d).norm(dim=-1), z_d.norm(dim=-1))
    assert norm_matched(torch.zeros(1, 8), z_d[0]).abs().max() == 0
    model = Recirculation(_net(), source_layer=(2, 1), destination_layer=(1, 0), use_learned=True)
    z_s, z_d = torch.randn(3, 1, 16), torch.randn(3, 1, 16)
    alpha, beta = model.learned_mixers[0](z_s, z_d)
    torch.testing.assert_close(alpha, torch.full_like(alpha, 0.1), atol=0.05, rtol=0)
    torch.testing.assert_close(beta, torch.full_like(beta, 0.9), atol=0.05, rtol=0)
    frozen = [p.clone() for p in model.net.parameters()]
    mixer = [p.clone() for p in model.learned_mixers.parameters()]
    x = torch.randint(1, 20, (4, 6))
    loss = model.learn_parameters(x, steps=2, batch_size=2, optimizer_kwargs=dict(lr=1e-2))
    assert loss == loss and loss > 0  # finite
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.net.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(mixer, model.learned_mixers.parameters(), strict=True))


@pytest.mark.parametrize("learned", [False, True])
def test_recirculation_matches_x_transformers(learned):
    from x_transformers.recirculation import Recirculation as TheirRecirculation
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder",
                              dict(dim=16, depth=3, heads=2, rotary_pos_emb=True))
    routes = dict(source_layer=(2, 1), destination_layer=(1, 0), alpha=(0.3, 0.2), ramp_steps=3,
                  use_learned=learned)
    mine, their = Recirculation(ours, **routes), TheirRecirculation(theirs, **routes)
    copy_weights(ours, theirs)
    if learned:
        for a, b in zip(mine.learned_mixers.parameters(), their.learned_mixers.parameters(), strict=True):
            a.data.copy_(b.data + 0.1 * torch.randn_like(b))  # away from the initial mixture
            b.data.copy_(a.data)
    torch.manual_seed(1)
    x = torch.randint(0, 20, (2, 8))
    a, b = mine(x), their(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    if not learned:
        ga = torch.autograd.grad(a.square().sum(), ours.token_emb.weight)[0]
        gb = torch.autograd.grad(b.square().sum(), theirs.token_emb.emb.weight)[0]
        torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-4)



def test_recirculation_with_memory_tokens_and_stochastic_depth():
    # Memory tokens: the first pass's streams hold them too; the mixture reads the latest token's position.
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=20, max_seq_len=16, num_memory_tokens=2,
                             attn_layers=Decoder(dim=16, depth=3, heads=2, rotary_pos_emb=True)).eval()
    x = torch.randint(0, 20, (2, 6))
    torch.testing.assert_close(Recirculation(net, 2, 0, alpha=0.0)(x), net(x), atol=1e-5, rtol=1e-4)
    model = Recirculation(net, 2, 0, ramp_steps=2)
    logits = model(x)
    assert (logits[:, 2:] - net(x)[:, 2:]).abs().amax() > 1e-3
    with torch.no_grad():
        _, cache = model(x[:, :5], return_intermediates=True)
        step = model(x, cache=cache)
    torch.testing.assert_close(step[:, -1], logits[:, -1].detach(), atol=1e-5, rtol=1e-4)
    # Stochastic depth never acts on a cached pass, so in training every layer runs and is read.
    dropped = _net(layer_dropout=0.5)
    model = Recirculation(dropped, 2, 0)
    x = torch.randint(0, 20, (2, 5))
    evaluated = model(x)
    dropped.train()
    assert torch.equal(model(x), evaluated)


def test_recirculation_refuses_bad_input():
    net = _net()
    with pytest.raises(ValueError, match="destination_layer"):
        Recirculation(net, source_layer=0, destination_layer=1)
    with pytest.raises(ValueError, match="source_layer"):
        Recirculation(net, source_layer=3, destination_layer=1)
    with pytest.raises(ValueError, match="source_layer and destination_layer"):
        Recirculation(net, source_layer=(2, 1), destination_layer=0)
    with pytest.raises(ValueError, match="causal"):
        Recirculation(TransformerWrapper(num_tokens=20, max_seq_len=8, attn_layers=_encoder()), 1, 0)
    model = Recirculation(net, 2, 0)
    with pytest.raises(ValueError, match="learn_parameters"):
        model.learn_parameters(torch.randint(0, 20, (2, 4)))
    with torch.no_grad():
        _, cache = model(torch.randint(0, 20, (1, 3)), return_intermediates=True)
        with pytest.raises(ValueError, match="exactly one new token"):
            model(torch.randint(0, 20, (1, 5)), cache=cache)


def _encoder():
    from labml_style_nn import Encoder
    return Encoder(dim=16, depth=2, heads=2)
