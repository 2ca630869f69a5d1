"""The speculative benchmark's draft: started from the target, distilled from it, tuned on its continuations."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "benchmarks"))
import fast_decoding  # noqa: E402

TARGET = dict(dim=16, depth=2, heads=2, rotary_pos_emb=True)
DRAFT = dict(dim=16, depth=1, heads=2, rotary_pos_emb=True)


def kl_to(teacher, student, x) -> float:
    with torch.no_grad():
        p, q = teacher(x).log_softmax(-1), student(x).log_softmax(-1)
    return float(F.kl_div(q.flatten(0, 1), p.flatten(0, 1), log_target=True, reduction="batchmean"))


def test_the_draft_starts_from_the_target_and_distillation_brings_it_closer():
    torch.manual_seed(0)
    target, draft = fast_decoding.build(TARGET).eval(), fast_decoding.build(DRAFT)
    fast_decoding.init_from(draft, target)
    theirs = target.state_dict()
    for name, value in draft.state_dict().items():
        assert torch.equal(value, theirs[name]), name  # embedding, first layer, final norm, head
    data = torch.randint(0, 256, (4096,), dtype=torch.uint8)
    x = torch.randint(0, 256, (4, 32))
    before = kl_to(target, draft, x)
    fast_decoding.train(draft, data, steps=30, batch=4, length=32, lr=3e-3, teacher=target)
    assert kl_to(target, draft, x) < 0.75 * before


def test_continuations_are_the_target_greedy_output_after_training_prompts():
    torch.manual_seed(0)
    target = fast_decoding.build(TARGET).eval()
    data = torch.randint(0, 256, (4096,), dtype=torch.uint8)
    rows = fast_decoding.continuations(target, data, rows=3, length=20, prompt=5)
    assert rows.shape == (3, 20)
    greedy = fast_decoding.AutoregressiveWrapper(target).generate(rows[:, :5], 15, temperature=0)
    assert torch.equal(rows[:, 5:], greedy)


def test_draft_config_takes_the_width_and_depth_options():
    from types import SimpleNamespace
    default = fast_decoding.draft_config(SimpleNamespace(quick=False, draft_dim=None, draft_depth=None))
    assert default == fast_decoding.DRAFT
    narrow = fast_decoding.draft_config(SimpleNamespace(quick=False, draft_dim=128, draft_depth=2))
    assert narrow == {**fast_decoding.DRAFT, "dim": 128, "depth": 2}
    assert fast_decoding.draft_config(SimpleNamespace(quick=True, draft_dim=None, draft_depth=3))["depth"] == 3
