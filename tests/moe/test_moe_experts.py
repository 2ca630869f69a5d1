"""The grouped expert computation equals a naive loop over assignments, with the grouped multiply and without."""

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn.moe import Experts, group_by_expert


def naive(experts: Experts, x, token, expert, gate):
    """One assignment at a time: $y_{t_s} \\mathrel{+}= g_s \\operatorname{FFN}_{e_s}(x_{t_s})$."""
    out = torch.zeros_like(x)
    for t, e, g in zip(token.tolist(), expert.tolist(), gate, strict=True):
        h = x[t] @ experts.w_in[e] + (experts.b_in[e] if experts.b_in is not None else 0)
        if experts.glu:
            value, gate_half = h.chunk(2)
            h = experts.act(gate_half) * value
        else:
            h = experts.act(h)
        y = h @ experts.w_out[e] + (experts.b_out[e] if experts.b_out is not None else 0)
        out[t] = out[t] + g * y
    return out


@pytest.mark.parametrize("grouped_mm", [None, False, True])
@pytest.mark.parametrize("glu,activation,bias", [(True, "silu", False), (False, "gelu", True)])
def test_grouped_equals_a_loop_over_assignments(grouped_mm, glu, activation, bias):
    experts = Experts(5, 12, 20, glu=glu, activation=activation, bias=bias)
    if bias:
        torch.nn.init.normal_(experts.b_in)
        torch.nn.init.normal_(experts.b_out)
    experts.grouped_mm = grouped_mm
    x = torch.randn(9, 12, requires_grad=True)
    # Expert 3 gets nobody; token 4 goes twice to expert 1; token 8 gets nothing.
    token = torch.tensor([0, 0, 1, 2, 3, 4, 4, 5, 6, 7])
    expert = torch.tensor([1, 4, 0, 0, 2, 1, 1, 4, 0, 2])
    gate = torch.rand(10, requires_grad=True)
    ours = experts(x, expert, gate, token)
    ref = naive(experts, x, token, expert, gate)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours[8].abs().max() == 0
    # Without gradients each expert's product is written in place: the same numbers.
    with torch.no_grad():
        torch.testing.assert_close(experts(x, expert, gate, token), ref, rtol=1e-5, atol=1e-5)
    # The gradients agree too (the grouped multiply has its own backward).
    w = torch.randn_like(ours)
    g_ours = torch.autograd.grad((ours * w).sum(), [x, gate, experts.w_in, experts.w_out])
    g_ref = torch.autograd.grad((ref * w).sum(), [x, gate, experts.w_in, experts.w_out])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_group_by_expert_is_stable_and_counts():
    expert = torch.tensor([2, 0, 2, 1, 0])
    order, counts = group_by_expert(expert, 4)
    assert order.tolist() == [1, 4, 3, 0, 2] and counts.tolist() == [2, 1, 2, 0]


def test_no_assignments_gives_zeros():
    experts = Experts(3, 4, 8)
    experts.grouped_mm = False
    x = torch.randn(2, 4)
    empty = torch.zeros(0, dtype=torch.long)
    assert experts(x, empty, torch.zeros(0), empty).abs().max() == 0


def test_bad_sizes_are_value_errors():
    with pytest.raises(ValueError, match="ff_num_experts"):
        Experts(0, 4, 8)


def test_grouped_mm_matches_per_expert_matmul_in_bfloat16():
    if not hasattr(F, "grouped_mm"):
        pytest.skip("no grouped_mm in this torch")
    experts = Experts(4, 16, 32).to(torch.bfloat16)
    experts.grouped_mm = True
    x = torch.randn(6, 16, dtype=torch.bfloat16)
    token, expert = torch.arange(6).repeat_interleave(2), torch.randint(0, 4, (12,))
    gate = torch.rand(12)
    a = experts(x, expert, gate, token)
    experts.grouped_mm = False
    torch.testing.assert_close(a, experts(x, expert, gate, token), rtol=2e-2, atol=2e-2)


def test_unaligned_widths_fall_back_to_one_matmul_per_expert():
    # Rows of 10 and 6 floats are not multiples of 16 bytes, which the grouped multiply needs.
    experts = Experts(3, 10, 6)
    x = torch.randn(4, 10)
    token, expert, gate = torch.arange(4), torch.tensor([0, 2, 2, 1]), torch.rand(4)
    torch.testing.assert_close(experts(x, expert, gate, token), naive(experts, x, token, expert, gate),
                               rtol=1e-5, atol=1e-5)


def test_without_tokens_the_assignments_are_each_tokens_k_choices():
    experts = Experts(4, 8, 16)
    x = torch.randn(5, 8)
    expert, gate = torch.randint(0, 4, (5, 3)), torch.rand(5, 3)
    torch.testing.assert_close(experts(x, expert.flatten(), gate.flatten()),
                               naive(experts, x, torch.arange(5).repeat_interleave(3), expert.flatten(), gate.flatten()),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("glu,bias", [(True, False), (False, True)])
def test_gathered_weights_for_small_steps_equal_the_grouped_path(glu, bias):
    # 6 assignments over 8 experts: fewer than the experts, so the dense path is not taken
    experts = Experts(8, 8, 16, glu=glu, bias=bias)
    if bias:
        torch.nn.init.normal_(experts.b_in)
        torch.nn.init.normal_(experts.b_out)
    x = torch.randn(3, 8)
    expert, gate = torch.randint(0, 8, (3 * 2,)), torch.rand(3 * 2)
    with torch.no_grad():
        assert experts._gather_pays(x, expert)
        gathered = experts(x, expert, gate)
        experts.gather_limit = 0
        assert not experts._gather_pays(x, expert)
        grouped = experts(x, expert, gate)
    torch.testing.assert_close(gathered, grouped, rtol=1e-5, atol=1e-5)
    # With gradients the grouped path always runs (the gathered copies would be differentiated).
    assert not Experts(6, 8, 16)._gather_pays(x.requires_grad_(), expert)


def test_grouped_mm_is_chosen_on_the_cpu_only_where_it_runs_and_pays():
    from labml_style_nn.moe.experts import _GROUPED_MM, _grouped_mm_runs
    if _GROUPED_MM is None:
        pytest.skip("no grouped_mm in this torch")
    w = torch.randn(4, 16, 32)
    with torch.no_grad():
        assert _grouped_mm_runs(torch.randn(5, 16), w)
        # Rows of 6 float32 numbers are 24 bytes: not a multiple of 16
        assert not _grouped_mm_runs(torch.randn(5, 6), torch.randn(4, 6, 6))
        assert not _grouped_mm_runs(torch.randn(5, 16, dtype=torch.float64), w.double())
    # With gradients on the CPU the loop runs (the CPU backward of grouped_mm fails on empty blocks)
    assert not _grouped_mm_runs(torch.randn(5, 16), w.requires_grad_())


# The inference paths and the limits that select them: (dense_limit, gather_limit)
PATHS = {"dense": (1 << 22, 0), "gathered": (0, 1 << 18), "grouped": (0, 0)}


def _inference_path(experts: Experts, path: str):
    """Set the limits so that `experts.infer` takes `path`, and count the calls of its small-step paths."""
    experts.dense_limit, experts.gather_limit = PATHS[path]
    calls = {"dense": 0, "gathered": 0, "one_token": 0}
    for name, method in (("dense", experts._dense), ("gathered", experts._gathered), ("one_token", experts._one_token)):
        def counted(*args, _name=name, _method=method):
            calls[_name] += 1
            return _method(*args)
        setattr(experts, "_" + name, counted)
    return calls


@pytest.mark.parametrize("activation", ["silu", "gelu", "relu_squared", "identity"])
@pytest.mark.parametrize("path", list(PATHS))
def test_inference_overwrites_only_its_own_intermediates(activation, path):
    # Without gradients the activation and the gate scaling run in place on each path: the same
    # numbers as the recorded pass, and the inputs and weights untouched.
    experts = Experts(4, 8, 16, activation=activation)
    calls = _inference_path(experts, path)
    x, expert, gate = torch.randn(5, 8), torch.randint(0, 4, (10,)), torch.rand(10)
    before = [t.clone() for t in (x, gate, experts.w_in, experts.w_out)]
    recorded, recorded_one = experts(x, expert, gate), experts(x[:1], expert[:2], gate[:2])
    assert recorded.requires_grad and calls == {"dense": 0, "gathered": 0, "one_token": 0}
    with torch.no_grad():
        torch.testing.assert_close(experts(x, expert, gate), recorded, rtol=1e-6, atol=1e-6)
        # One token and its two experts: their weights read in place, whatever the limits
        torch.testing.assert_close(experts(x[:1], expert[:2], gate[:2]), recorded_one, rtol=1e-6, atol=1e-6)
    assert calls == {"dense": path == "dense", "gathered": path == "gathered", "one_token": 1}
    for a, b in zip(before, (x, gate, experts.w_in, experts.w_out), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("glu,bias", [(True, False), (False, True)])
def test_each_inference_path_equals_the_recorded_grouped_pass(glu, bias):
    # Random inputs; expert 2 gets no assignment; with a token list, token 3 is dropped (capacity) and
    # token 0 goes twice to expert 1.  Every inference path equals the recorded grouped pass to 1e-6.
    torch.manual_seed(0)
    experts = Experts(6, 16, 24, glu=glu, bias=bias)
    if bias:
        torch.nn.init.normal_(experts.b_in)
        torch.nn.init.normal_(experts.b_out)
    x = torch.randn(7, 16)
    choices = torch.tensor([[0, 1], [4, 5], [1, 3], [0, 5], [3, 4], [5, 0], [1, 4]])  # (t, k), no expert 2
    gate = torch.rand(7, 2).flatten()
    token = torch.tensor([0, 0, 1, 1, 2, 2, 4, 4, 5, 6, 0])  # token 3 dropped, token 0 to expert 1 twice
    listed = torch.tensor([0, 1, 4, 5, 1, 3, 3, 4, 5, 1, 1])
    listed_gate = torch.rand(11)
    recorded = experts(x, choices.flatten(), gate)
    recorded_listed = experts(x, listed, listed_gate, token)
    assert recorded.requires_grad and recorded_listed[3].abs().max() == 0
    recorded_one = experts(x[5:6], choices[5], gate[10:12])  # one token: expert 5 and expert 0
    for path in PATHS:
        calls = _inference_path(experts, path)
        with torch.inference_mode():
            torch.testing.assert_close(experts(x, choices.flatten(), gate), recorded, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(experts(x, listed, listed_gate, token), recorded_listed, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(experts(x[5:6], choices[5], gate[10:12]), recorded_one, rtol=1e-6, atol=1e-6)
        # The gathered weights and the one-token loop serve only each token's own $k$ choices, never a token list
        assert calls == {"dense": 2 * (path == "dense"), "gathered": path == "gathered", "one_token": 1}


def test_the_size_rule_picks_each_inference_path_where_it_pays():
    experts = Experts(8, 32, 64)  # P = 32 * (128 + 64) = 6144 numbers per expert
    calls = _inference_path(experts, "dense")
    experts.gather_limit = 1 << 18
    with torch.no_grad():
        experts(torch.randn(1, 32), torch.tensor([0, 3]), torch.rand(2))  # one token: its experts in place
        assert calls == {"dense": 0, "gathered": 0, "one_token": 1}
        experts(torch.randn(2, 32), torch.tensor([0, 3, 3, 5]), torch.rand(4))  # 4 assignments < 8 experts
        assert calls == {"dense": 0, "gathered": 1, "one_token": 1}
        experts(torch.randn(4, 32), torch.randint(0, 8, (8,)), torch.rand(8))  # 8 >= 8, 4 * 8 * 6144 <= 2^22
        assert calls == {"dense": 1, "gathered": 1, "one_token": 1}
        experts(torch.randn(200, 32), torch.randint(0, 8, (400,)), torch.rand(400))  # 200 * 8 * 6144 > 2^22
        assert calls == {"dense": 1, "gathered": 1, "one_token": 1}
