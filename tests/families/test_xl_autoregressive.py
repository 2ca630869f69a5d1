"""Transformer-XL autoregressive wrapper (families/xl_autoregressive.py): x-transformers' usage, parity, invariants."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.families.xl_autoregressive import XLAutoregressiveWrapper

V, L = 32, 8


def _model(seed: int = 0, **stack) -> TransformerWrapper:
    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=V, max_seq_len=L, max_mem_len=L,
                              attn_layers=Decoder(dim=16, depth=2, heads=2, **(stack or {"rel_pos_bias": True})))


def _pair(**wrapper):
    from x_transformers.xl_autoregressive_wrapper import XLAutoregressiveWrapper as Theirs
    from xt_parity import build_pair, copy_weights

    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=L, max_mem_len=L), "Decoder",
                              dict(dim=16, depth=2, heads=2, rotary_pos_emb=True))
    a, b = XLAutoregressiveWrapper(ours, **wrapper), Theirs(theirs, **wrapper)
    extra = []
    if "episodic_mem_len" in wrapper:
        extra = [lambda o, t, put: put(a.episodic_mems.mem_kv, b.net.episodic_mems.mem_kv)]  # type: ignore[union-attr]
    copy_weights(ours, theirs, extra)
    return a, b


def test_xtransformers_usage_runs_with_the_import_changed():
    xl = XLAutoregressiveWrapper(_model())
    seg = torch.randint(0, V, (2, 3 * L + 3))  # three full segments and a short one
    loss = xl(seg)
    assert loss.dim() == 0
    loss.backward()
    assert xl.net.token_emb.weight.grad is not None
    assert xl.generate(seg[:, :10], 12).shape == (2, 12)
    assert xl.generate(seg[0, :3], 4).shape == (4,)


def test_loss_and_gradients_through_two_segments_equal_xtransformers():
    pytest.importorskip("x_transformers")
    ours, theirs = _pair(tbptt_steps=2)
    x = torch.randint(0, V, (2, 2 * L + 5))
    x[0, -1] = -100  # an ignored target (only a label, never an input)
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    ga = torch.autograd.grad(a, ours.net.token_emb.weight)[0]
    gb = torch.autograd.grad(b, theirs.net.token_emb.emb.weight)[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)


def test_episodic_memories_equal_xtransformers_and_act():
    pytest.importorskip("x_transformers")
    ours, theirs = _pair(episodic_mem_len=3)
    x = torch.randint(0, V, (2, L + 6))
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    plain = XLAutoregressiveWrapper(ours.net)
    assert not torch.allclose(ours(x), plain(x))
    assert ours.episodic_mems is not None and ours.episodic_mems.mem_kv.shape == (2, 2, 2, 3, 64)  # default head dim 64


@pytest.mark.parametrize("prompt, new", [(8, 5), (13, 3)])
def test_greedy_generation_within_a_segment_equals_xtransformers(prompt, new):
    pytest.importorskip("x_transformers")
    ours, theirs = _pair()
    x = torch.randint(0, V, (2, prompt))
    assert torch.equal(ours.generate(x, new, temperature=0.0), theirs.generate(x, new, temperature=0.0))


def test_greedy_generation_predicts_what_the_segment_recurrent_pass_predicts():
    # Across segment boundaries, in the prompt and in generation.
    xl = XLAutoregressiveWrapper(_model(1, rotary_pos_emb=True)).eval()
    prompt = torch.randint(0, V, (2, 5))
    seq = torch.cat((prompt, xl.generate(prompt, 2 * L + 2, temperature=0.0)), dim=1)  # (2, 23)
    mems, logits = None, []
    with torch.no_grad():
        for segment in seq[:, :-1].split(L, dim=1):
            out, mems = xl.net(segment, mems=mems, return_mems=True)
            logits.append(out)
    predicted = torch.cat(logits, dim=1).argmax(dim=-1)  # (2, 22)
    assert torch.equal(predicted[:, 4:], seq[:, 5:])


def test_memories_carry_the_past_and_dropout_mems_removes_it():
    xl = XLAutoregressiveWrapper(_model(2)).eval()
    x = torch.randint(0, V, (2, 2 * L + 1))  # two segments of L inputs
    with torch.no_grad():
        separate = 0.5 * (xl(x[:, :L + 1]) + xl(x[:, L:]))  # each segment alone, half the tokens each
        torch.testing.assert_close(xl(x, dropout_mems=True), separate)
        assert not torch.allclose(xl(x), separate)  # the second segment reads the first through the memories


def test_tbptt_changes_gradients_not_the_loss():
    x = torch.randint(0, V, (2, 2 * L + 1))
    grads, losses = [], []
    for steps in (1, 2):
        xl = XLAutoregressiveWrapper(_model(3), tbptt_steps=steps)
        loss = xl(x)
        losses.append(loss.detach())
        grads.append(torch.autograd.grad(loss, xl.net.token_emb.weight)[0])
    torch.testing.assert_close(losses[0], losses[1])
    assert not torch.allclose(grads[0], grads[1])


def test_a_few_steps_lower_the_loss_and_eos_pads_the_rest():
    xl = XLAutoregressiveWrapper(_model(4), pad_value=0)
    x = torch.arange(2 * L + 1).repeat(2, 1) % 5 + 1
    opt = torch.optim.Adam(xl.parameters(), lr=3e-2)
    first = xl(x).item()
    for _ in range(15):
        opt.zero_grad()
        xl(x).backward()
        opt.step()
    assert xl(x).item() < 0.5 * first
    torch.manual_seed(0)
    out = xl.generate(x[:, :3], 10, eos_token=5, temperature=0.0)  # learnt: 4, 5, ...
    assert (out == 5).any(dim=1).all()
    for row in out:
        after = row[int((row == 5).nonzero()[0]) + 1:]
        assert (after == 0).all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="max_mem_len"):
        XLAutoregressiveWrapper(TransformerWrapper(num_tokens=V, max_seq_len=L,
                                                   attn_layers=Decoder(dim=16, depth=1, heads=2)))
    with pytest.raises(ValueError, match="ttt_module_paths"):
        XLAutoregressiveWrapper(_model(), ttt_module_paths=("attn_layers.nothing",), tbptt_steps=2)
    with pytest.raises(ValueError, match="tbptt_steps"):
        XLAutoregressiveWrapper(_model(), ttt_module_paths=("to_logits",))
    with pytest.raises(ValueError, match="tbptt_steps"):
        XLAutoregressiveWrapper(_model(), tbptt_steps=0)
    xl = XLAutoregressiveWrapper(_model())
    with pytest.raises(ValueError, match="x:"):
        xl(torch.randint(0, V, (5,)))
    with pytest.raises(ValueError, match="ttt_recurrent_steps"):
        xl(torch.randint(0, V, (1, 5)), ttt_recurrent_steps=2)  # without test-time training
    with pytest.raises(ValueError, match="start_tokens"):
        xl.generate(torch.zeros(1, 0, dtype=torch.long), 3)


#
# Test-time training (families/xl_test_time_training.py)
OUR_FF_OUT, THEIR_FF_OUT = "attn_layers.blocks.1.fn.proj_out", "attn_layers.layers.1.1.ff.2"
OUR_OUT, THEIR_OUT = "attn_layers.blocks.2.fn.to_out", "attn_layers.layers.2.1.to_out"


def _ttt_pair(ours_kw: dict, theirs_kw: dict, **shared):
    from x_transformers.xl_autoregressive_wrapper import XLAutoregressiveWrapper as Theirs
    from xt_parity import build_pair, copy_weights

    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=L, max_mem_len=L), "Decoder",
                              dict(dim=16, depth=2, heads=2, rotary_pos_emb=True))
    copy_weights(ours, theirs)  # before the fast-weight modules are wrapped
    a = XLAutoregressiveWrapper(ours, tbptt_steps=2, **ours_kw, **shared)
    b = Theirs(theirs, tbptt_steps=2, **theirs_kw, **shared)
    return a, b


def test_test_time_training_equals_xtransformers_with_meta_gradients():
    pytest.importorskip("x_transformers")
    ours, theirs = _ttt_pair(dict(ttt_module_paths=(OUR_FF_OUT,)), dict(ttt_module_paths=(THEIR_FF_OUT,)),
                             ttt_lr=0.5)
    ours.train()
    theirs.train()
    x = torch.randint(0, V, (2, 3 * L + 1))
    a, b = ours(x, ttt_recurrent_steps=2), theirs(x, ttt_recurrent_steps=2)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    ga = torch.autograd.grad(a, ours.ttt_wrappers[OUR_FF_OUT].module.weight)[0]
    gb = torch.autograd.grad(b, theirs.ttt_wrappers[THEIR_FF_OUT].module.weight)[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
    assert all(w.batch_params is None for w in ours.ttt_wrappers.values())  # nothing stale after the call


@pytest.mark.parametrize("kind", ["low_rank_muon", "next_latent"])
def test_test_time_training_variants_equal_xtransformers(kind):
    pytest.importorskip("x_transformers")
    if kind == "low_rank_muon":
        ours, theirs = _ttt_pair(dict(ttt_low_rank_paths=((OUR_OUT, 2),)), dict(ttt_low_rank_paths=((THEIR_OUT, 2),)),
                                 ttt_use_muon=True)
        with torch.no_grad():
            ours.ttt_wrappers[OUR_OUT].module.weight_a.copy_(theirs.ttt_wrappers[THEIR_OUT].module.weight_a)
    else:
        ours, theirs = _ttt_pair(dict(ttt_module_paths=(OUR_FF_OUT,)), dict(ttt_module_paths=(THEIR_FF_OUT,)),
                                 ttt_next_latent_loss=True, ttt_lr=0.5)
        ours.ttt_custom_loss_module.load_state_dict(theirs.ttt_custom_loss_module.state_dict())
    x = torch.randint(0, V, (2, 2 * L + 4))
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_fast_weights_act_only_when_they_move():
    x = torch.randint(0, V, (2, 2 * L + 1))
    plain = XLAutoregressiveWrapper(_model(5))
    still = XLAutoregressiveWrapper(_model(5), ttt_module_paths=(OUR_FF_OUT,), tbptt_steps=2, ttt_lr=0.0, ttt_wd=0.0)
    moving = XLAutoregressiveWrapper(_model(5), ttt_module_paths=(OUR_FF_OUT,), tbptt_steps=2, ttt_lr=1.0)
    torch.testing.assert_close(still(x), plain(x))  # fast weights that never move are the slow ones
    assert not torch.allclose(moving(x), plain(x))
    # The episodic memories can be fast weights too; generation trains them on the prompt.
    episodic = XLAutoregressiveWrapper(_model(5), ttt_module_paths=("episodic_mems",), episodic_mem_len=2,
                                       tbptt_steps=2, ttt_lr=1.0)
    episodic(x).backward()
    assert episodic.generate(x[:, :L + 3], 4, temperature=0.0).shape == (2, 4)


@pytest.mark.parametrize("name", ["xl_test_time_training", "latent_autoregressive", "universal_pretrain"])
def test_worked_examples_in_the_docstrings(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"labml_style_nn.families.{name}"), extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_meta_learning_kl_loss_is_nonnegative_per_position():
    from labml_style_nn.families.xl_test_time_training import TTTMetaLearningTargetKLLoss

    loss_fn = TTTMetaLearningTargetKLLoss(dim=16, num_classes=5, heads=2, dim_head=8)
    xl = XLAutoregressiveWrapper(_model(6), ttt_module_paths=(OUR_FF_OUT,), tbptt_steps=2,
                                 ttt_custom_loss_module=loss_fn)
    _, inter = xl._net(torch.randint(0, V, (2, L)))
    kl = loss_fn(inter)
    assert kl.shape == (2, L) and (kl >= -1e-6).all()
    xl(torch.randint(0, V, (2, 2 * L + 1))).backward()
    assert loss_fn.to_meta_prediction.weight.grad is not None  # the inner loss is meta-learnt too
