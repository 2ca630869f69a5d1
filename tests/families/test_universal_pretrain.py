"""Universal pre-training (families/universal_pretrain.py): usage, the buffer's enrichment, generator parity."""

import random

import pytest
import torch
from torch import nn

from labml_style_nn import Decoder, Encoder, TransformerWrapper
from labml_style_nn.families.universal_pretrain import (
    SyntheticDataGenerator,
    UniversalPretrainWrapper,
    random_sequences,
)

V, N = 16, 12


def _model(stack=Decoder) -> TransformerWrapper:
    torch.manual_seed(0)
    return TransformerWrapper(num_tokens=V, max_seq_len=N, attn_layers=stack(dim=16, depth=1, heads=2))


class CountingMachine(nn.Module):
    """A stand-in machine whose output is recognisable: 0, 1, 2, ... (never a random or a constant row)."""

    def generate(self, length, seed=None, condition=None):
        return torch.arange(length).repeat(condition.shape[0], 1)

    def reset_(self):
        pass


def test_xtransformers_usage_runs_with_the_import_changed():
    model = _model()
    pretrain = UniversalPretrainWrapper(model, seq_len=N, batch_size=4, buffer_size=10, num_reset=2, seed_length=3)
    loss = pretrain()
    assert loss.dim() == 0 and int(pretrain.step) == 1
    loss.backward()
    assert model.token_emb.weight.grad is not None
    assert pretrain.synth_data_buffer.shape == (10, N)


def test_random_sequences_mix_random_and_constant_rows():
    seqs = random_sequences(V, N, 3, 2)
    assert seqs.shape == (5, N)
    assert int(sum((row == row[0]).all() for row in seqs)) >= 2  # the constant rows


def test_generated_sequences_enter_the_buffer_unlike_xtransformers():
    torch.manual_seed(0)
    ours = UniversalPretrainWrapper(_model(), data_generator=CountingMachine(), seq_len=N, batch_size=4,
                                    buffer_size=10, num_reset=0, seed_length=3)
    made = torch.arange(N)
    assert not (ours.synth_data_buffer == made).all(dim=1).any()
    ours()
    assert int((ours.synth_data_buffer == made).all(dim=1).sum()) == 4  # the four conditions' slots
    # x-transformers writes into an indexed copy of its buffer: the buffer never changes.
    xt = pytest.importorskip("x_transformers")
    from x_transformers.up_wrapper import UniversalPretrainWrapper as Theirs

    theirs = Theirs(xt.TransformerWrapper(num_tokens=V, max_seq_len=N, attn_layers=xt.Decoder(dim=16, depth=1, heads=2)),
                    data_generator=CountingMachine(), seq_len=N, batch_size=4, buffer_size=10, num_reset=2,
                    seed_length=3)
    before = theirs.synth_data_buffer.clone()
    theirs()
    assert torch.equal(theirs.synth_data_buffer, before)


def test_the_random_machine_equals_xtransformers_and_makes_structured_data():
    xt_up = pytest.importorskip("x_transformers.up_wrapper")
    torch.manual_seed(0)
    random.seed(0)  # the machines scale their output layer by a factor from Python's generator
    theirs = xt_up.SyntheticDataGenerator(dim=16, num_tokens=V, max_seq_len=N)
    ours = SyntheticDataGenerator(dim=16, num_tokens=V, max_seq_len=N)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randint(0, V, (3, N))
    (logits, (h, c)), (their_logits, (their_h, their_c)) = ours(x), theirs(x)
    for a, b in ((logits, their_logits), (h, their_h), (c, their_c)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Nearly greedy continuations of random prompts repeat themselves: fewer distinct tokens than random data.
    torch.manual_seed(1)
    out = ours.generate(N, seed=x[:, :3], condition=x)
    assert out.shape == (3, N)
    distinct = lambda t: sum(len(row.unique()) for row in t)  # noqa: E731
    assert distinct(out) < distinct(torch.randint(0, V, (3, N)))


def test_reset_draws_a_new_machine():
    pretrain = UniversalPretrainWrapper(_model(), seq_len=N, batch_size=2, buffer_size=4, num_reset=2,
                                        seed_length=3, reset_turing_machine_every=1)
    before = pretrain.data_generator.to_logits.weight.clone()
    pretrain()
    assert not torch.equal(pretrain.data_generator.to_logits.weight, before)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="model"):
        UniversalPretrainWrapper(_model(Encoder), seq_len=N)
    with pytest.raises(ValueError, match="buffer_size"):
        UniversalPretrainWrapper(_model(), seq_len=N, batch_size=4, buffer_size=4)
    with pytest.raises(ValueError, match="num_reset"):
        UniversalPretrainWrapper(_model(), seq_len=N, batch_size=2, num_reset=3)
    with pytest.raises(ValueError, match="seed_length"):
        UniversalPretrainWrapper(_model(), seq_len=N, batch_size=2, seed_length=N)
    with pytest.raises(ValueError, match="seed, condition"):
        SyntheticDataGenerator(dim=8, num_tokens=V).generate(4)
