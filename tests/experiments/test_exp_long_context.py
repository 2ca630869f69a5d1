"""The Bigram-Backcopy task of `experiments/long_context.py`: its rule, its determinism and its entropy floor."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.long_context import Backcopy, uniform_first_weight  # noqa: E402


def sample(task: Backcopy, seed: int, batch: int = 64, length: int = 200) -> torch.Tensor:
    return task.sample(batch, length, torch.Generator().manual_seed(seed))


def test_same_seeds_same_task_and_sequences():
    a, b = Backcopy(vocab=16, triggers=3, alpha=0.3, seed=5), Backcopy(vocab=16, triggers=3, alpha=0.3, seed=5)
    assert torch.equal(a.table, b.table)
    assert torch.equal(sample(a, 1), sample(b, 1))
    assert not torch.equal(sample(a, 1), sample(a, 2))
    assert not torch.equal(a.table, Backcopy(vocab=16, triggers=3, alpha=0.3, seed=6).table)


def test_trigger_rule_holds():
    task = Backcopy(vocab=12, triggers=4, alpha=1.0, seed=0)
    x = sample(task, 0)
    assert x.shape == (64, 201) and (x[:, 0] == 0).all() and (x[:, 1:] >= 1).all() and (x <= 12).all()
    trig = task.is_trigger[x]
    assert task.is_trigger.tolist() == [False] * 9 + [True] * 4
    # The first token is never a trigger; after a trigger the next token repeats the one before it.
    assert not trig[:, 1].any()
    after = trig[:, 1:-1]
    assert after.sum() > 500  # the rule is exercised
    assert torch.equal(x[:, 2:][after], x[:, :-2][after])
    # So a copy is never a trigger, and two triggers never follow each other.
    assert not (trig[:, 1:] & trig[:, :-1]).any()
    # Every other step follows the bigram table: only transitions of positive probability occur.
    prev, nxt = x[:, :-1][~trig[:, :-1]], x[:, 1:][~trig[:, :-1]]
    assert (task.table[prev, nxt] > 0).all()


def test_bigram_steps_follow_the_table():
    task = Backcopy(vocab=4, triggers=1, alpha=1.0, seed=3)
    x = task.sample(2000, 50, torch.Generator().manual_seed(0))
    prev, nxt = x[:, 1:-1], x[:, 2:]
    keep = ~task.is_trigger[prev]
    counts = torch.zeros(5, 5)
    counts.index_put_((prev[keep], nxt[keep]), torch.ones(int(keep.sum())), accumulate=True)
    freq = counts[1:4] / counts[1:4].sum(1, keepdim=True)  # rows of the three ordinary tokens
    torch.testing.assert_close(freq, task.table[1:4], atol=0.02, rtol=0)


def test_entropy_floor():
    task = Backcopy(vocab=10, triggers=2, alpha=0.5, seed=1)
    # By hand for one row, and 0 on triggers (a copy is certain).
    p = task.table[3][task.table[3] > 0]
    assert task.row_entropy[3].item() == pytest.approx(-(p * p.log2()).sum().item(), rel=1e-5)
    assert (task.row_entropy[task.is_trigger] == 0).all()
    x = sample(task, 4, batch=256, length=100)
    floor = task.floor_bits(x)  # (b, n)
    assert floor.shape == (256, 100)
    assert (floor[task.is_trigger[x[:, :-1]]] == 0).all()
    # The floor is the expected loss of the true next-token distribution: its mean log-loss on the
    # samples converges to the mean floor.
    true = torch.where(task.is_trigger[x[:, :-1]], 1.0, task.table[x[:, :-1], x[:, 1:]])
    loss = -true.log2().mean().item()
    assert loss == pytest.approx(floor.mean().item(), abs=0.03)
    assert 0.5 < floor.mean().item() < math.log2(10)


def test_draw_never_picks_a_token_of_probability_zero():
    task = Backcopy(vocab=6, triggers=2, alpha=1.0, seed=0)
    start = torch.zeros(3, dtype=torch.long)
    # After the start token: never the start token itself (u = 0) nor a trigger (u at or past the top).
    drawn = task.draw(start, torch.tensor([[0.0], [1.0], [1.5]]))
    assert drawn.tolist()[0] == 1 and drawn.tolist()[1:] == [4, 4]
    assert torch.equal(task.draw(start, torch.tensor([[0.5]] * 3)), task.draw(start, torch.tensor([[0.5]] * 3)))


def test_bad_trigger_count():
    with pytest.raises(ValueError, match="triggers"):
        Backcopy(vocab=4, triggers=4, alpha=1.0, seed=0)


def test_uniform_first_weight():
    # Queries 2 and 3 of 4 see 3 and 4 keys: (1/3 + 1/4) / 2.
    assert uniform_first_weight(4) == pytest.approx((1 / 3 + 1 / 4) / 2)
