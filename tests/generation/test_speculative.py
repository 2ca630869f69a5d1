"""Speculative decoding: the acceptance rule, exactness of greedy and sampled outputs, rewinding."""

import copy

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation import AutoregressiveWrapper, speculative
from labml_style_nn.generation.compiled_decoding import step_recorder
from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.generation.speculative import accept_draft, accept_draft_greedy, packed_linears

V = 8


def make(dim=16, depth=2, seed=0, **layers):
    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=V, max_seq_len=64,
                              attn_layers=Decoder(dim=dim, depth=depth, heads=2, **layers)).eval()


def perturbed(net, noise=0.5, seed=3):
    """A draft that agrees with `net` on most tokens but not all."""
    torch.manual_seed(seed)
    draft = copy.deepcopy(net)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(noise * p.std() * torch.randn_like(p))
    return draft


def sharpen(net, scale=8.0):
    """Random-init logits are nearly uniform; scaled up, target and draft disagree often."""
    with torch.no_grad():
        net.to_logits.weight.mul_(scale)
    return net


#
# The rule on a hand-made example: p = (0.5, 0.3, 0.2), q = (0.2, 0.6, 0.2), the draft guessed 1.
# Accept with probability 0.3 / 0.6 = 0.5; after a rejection only token 0 has p > q.
def test_acceptance_rule_on_a_hand_made_example():
    p = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]])
    q = torch.tensor([[[0.2, 0.6, 0.2]]])
    guess = torch.tensor([[1]])
    a, x = accept_draft(p, q, guess, uniform=torch.tensor([[0.49]]))
    assert a.tolist() == [1]  # accepted; x is then drawn from p_2
    for _ in range(20):
        a, x = accept_draft(p, q, guess, uniform=torch.tensor([[0.51]]))
        assert a.tolist() == [0] and x.tolist() == [0]  # rejected: max(0, p - q) = (0.3, 0, 0)
    # A guess the target likes more than the draft is always accepted.
    assert accept_draft(p, q, torch.tensor([[0]]), uniform=torch.tensor([[0.999]]))[0].tolist() == [1]
    # Greedy: accepted while the guess is the target's argmax, then the argmax.
    logits = torch.tensor([[[0., 5., 0.], [5., 0., 0.], [0., 0., 5.]]])
    assert [t.tolist() for t in accept_draft_greedy(logits, torch.tensor([[1, 2]]))] == [[1], [0]]
    assert [t.tolist() for t in accept_draft_greedy(logits, torch.tensor([[1, 0]]))] == [[2], [2]]


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = counts.sum() * probs
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a token of probability 0 was emitted"
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def test_each_emitted_token_follows_the_target_distribution():
    # Three guesses with fixed target and draft distributions per position, 40 000 rows: among the
    # rows that reach position j, the emitted token must be distributed as p_j, whatever was accepted.
    torch.manual_seed(0)
    k, n = 3, 40_000
    p = torch.softmax(torch.randn(k + 1, V) * 1.5, -1)
    q = torch.softmax(torch.randn(k, V) * 1.5, -1)
    q[0, 3] = 0.0  # the draft never proposes token 3 first: only the correction can emit it
    q = q / q.sum(-1, keepdim=True)
    guesses = torch.stack([torch.multinomial(q[i], n, replacement=True) for i in range(k)], 1)  # (n, k)
    a, x = accept_draft(p.expand(n, -1, -1), q.expand(n, -1, -1), guesses)
    assert 0.2 < (a.float() / k).mean() < 0.9  # both branches of the rule are exercised
    for j in range(k + 1):
        reached = a >= j
        # Position j + 1 holds the accepted guess when a > j, else the correction.
        token = torch.where(a[reached] > j, guesses[reached, j] if j < k else x[reached], x[reached])
        counts = torch.bincount(token, minlength=V).float()
        # chi-square with V - 1 = 7 degrees of freedom: 24.3 is its 0.999 quantile
        assert chi_square(counts, p[j]) < 24.3, j


@torch.no_grad()
def test_sampled_tokens_follow_the_target_model():
    target, draft = sharpen(make(seed=0), 3.0), sharpen(make(dim=8, depth=1, seed=1), 3.0)
    model = AutoregressiveWrapper(target)
    n = 4000
    prompt = torch.tensor([[1, 2, 3]]).repeat(n, 1)
    torch.manual_seed(0)
    out = model.generate(prompt, 2, draft=draft, num_speculative=2, filter_logits_fn="top_k",
                         filter_kwargs=dict(k=V))
    # both paths run many times (8000 guesses): accepted guesses and resampled rejections
    assert 0.05 < model.speculative_stats.acceptance_rate < 0.95
    # The exact joint distribution of the two tokens under the target alone.
    p1 = target(prompt[:1]).softmax(-1)[0, -1]  # (V,)
    seconds = torch.cat((prompt[:1].repeat(V, 1), torch.arange(V)[:, None]), 1)
    p2 = target(seconds).softmax(-1)[:, -1]  # (V, V): row t1
    joint = (p1[:, None] * p2).flatten()
    counts = torch.bincount(out[:, 0] * V + out[:, 1], minlength=V * V).float()
    # 63 degrees of freedom: 103.4 is the 0.999 quantile
    assert chi_square(counts, joint) < 103.4


@pytest.mark.parametrize("num_speculative", [1, 3, 6])
def test_greedy_output_is_the_target_greedy_output(num_speculative):
    target = sharpen(make(seed=0, rotary_pos_emb=True))
    draft = perturbed(target)
    model = AutoregressiveWrapper(target)
    prompts = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7])]  # left padded
    alone = model.generate(prompts, 30, temperature=0)
    fast = model.generate(prompts, 30, temperature=0, draft=draft, num_speculative=num_speculative)
    assert torch.equal(fast, alone)
    stats = model.speculative_stats
    assert 0 < stats.accepted < stats.proposed  # guesses were both accepted and rejected
    # With eos each row still stops where the target alone stops.
    eos = int(alone[0, 10])
    assert torch.equal(model.generate(prompts, 30, temperature=0, eos_token=eos, draft=draft,
                                      num_speculative=num_speculative),
                       model.generate(prompts, 30, temperature=0, eos_token=eos))


def test_a_draft_equal_to_the_target_is_always_accepted():
    target = make(seed=0, alibi_pos_emb=True)
    model = AutoregressiveWrapper(target)
    prompt = torch.randint(0, V, (1, 4))
    out = model.generate(prompt, 20, temperature=1.0, draft=target, num_speculative=4)
    assert out.shape == (1, 20)
    assert model.speculative_stats.acceptance_rate > 0.99
    assert model.speculative_stats.tokens_per_round > 4


def test_rewound_cache_continues_like_a_fresh_one():
    net = make(seed=0, rotary_pos_emb=True)
    x = torch.randint(0, V, (2, 9))
    cache = LayersCache(net.attn_layers, 2, 16)
    net(x[:, :5], cache=cache)
    net(torch.randint(0, V, (2, 3)), cache=cache)  # rejected guesses
    cache.rewind(5)
    rewound = net(x[:, 5:], cache=cache)
    torch.testing.assert_close(rewound, net(x)[:, 5:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="offset"):
        cache.rewind(10)


def test_bad_drafts_are_rejected_by_name():
    model = AutoregressiveWrapper(make())
    prompt = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="num_speculative"):
        model.generate(prompt, 4, draft=make(), num_speculative=0)
    other = TransformerWrapper(num_tokens=V + 1, max_seq_len=64, attn_layers=Decoder(dim=8, depth=1, heads=2))
    with pytest.raises(ValueError, match="draft: .*vocabulary"):
        model.generate(prompt, 4, draft=other)
    with pytest.raises(ValueError, match="draft: .*token shift"):
        model.generate(prompt, 4, draft=make(shift_tokens=1))


def test_compiled_decoding_gives_the_target_greedy_output(counting_backend, monkeypatch):
    # compile= runs the draft's one-token steps and the target's passes over k + 1 tokens as graphs on
    # static caches, the target's products through the packed operator (aot_eager keeps the test fast).
    monkeypatch.setattr(speculative, "PACK_MIN_NUMEL", 0)  # pack even these small layers
    target = sharpen(make(seed=0, rotary_pos_emb=True))
    draft = perturbed(target)
    model = AutoregressiveWrapper(target)
    prompts = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7])]  # left padded
    alone = model.generate(prompts, 30, temperature=0)
    torch._dynamo.reset()
    for calls, k in enumerate((1, 3), 1):
        before = counting_backend.calls
        fast = model.generate(prompts, 30, temperature=0, draft=draft, num_speculative=k,
                              compile={"backend": counting_backend})
        assert torch.equal(fast, alone), k
        stats = model.speculative_stats
        assert 0 < stats.accepted < stats.proposed  # rewinds of the static caches were exercised
        # Every draft step and target pass after the prompt ran a graph, and only the first of each
        # went through Dynamo.
        assert step_recorder({"backend": counting_backend}).dispatched == 2 * calls
        # (Eager: each model's prompt, and the target's last rounds, with fewer guesses.)
        assert counting_backend.calls - before >= stats.proposed // len(prompts) - 1 + stats.rounds - 1 - k
    # One graph of the draft's step for both calls; one of the target's pass per k.
    assert counting_backend.graphs == 3
    assert not speculative._PACKED  # the packed weights are released after the call
    with pytest.raises(ValueError, match="compile: .*static cache"):
        model.generate(prompts, 4, draft=make(attn_max_attend_past=4), compile={"backend": "eager"})




@pytest.mark.slow
def test_compile_true_with_inductor_gives_the_target_greedy_output(monkeypatch):
    # The default compile=True: Inductor with its C++ wrapper calling the packed operator.
    monkeypatch.setattr(speculative, "PACK_MIN_NUMEL", 0)
    target = sharpen(make(seed=0, rotary_pos_emb=True))
    model = AutoregressiveWrapper(target)
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    fast = model.generate(prompt, 20, temperature=0, draft=perturbed(target, noise=0.1), num_speculative=3,
                          compile=True)
    assert torch.equal(fast, model.generate(prompt, 20, temperature=0))
    assert model.speculative_stats.accepted > 0



@pytest.mark.slow
@pytest.mark.parametrize("case", ["alibi", "t5", "memory tokens"])
def test_compiled_speculative_decoding_equals_the_target_with_other_positions(case):
    # The static caches' positions, biases and memory slots, rewound after rejected guesses.
    torch.manual_seed(0)
    layers = {"alibi": dict(alibi_pos_emb=True), "t5": dict(rel_pos_bias=True),
              "memory tokens": dict(rotary_pos_emb=True)}[case]
    target = sharpen(TransformerWrapper(num_tokens=V, max_seq_len=64, num_memory_tokens=2 if case == "memory tokens" else 0,
                                        attn_layers=Decoder(dim=16, depth=2, heads=2, **layers)).eval())
    draft = perturbed(target)
    model = AutoregressiveWrapper(target)
    prompts = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7])]  # left padded
    alone = model.generate(prompts, 24, temperature=0)
    fast = model.generate(prompts, 24, temperature=0, draft=draft, num_speculative=3, compile={"backend": "aot_eager"})
    assert torch.equal(fast, alone)
    assert 0 < model.speculative_stats.accepted < model.speculative_stats.proposed


def test_compiled_draft_samples_the_eager_tokens():
    # The guesses are drawn outside the graph from the draft's logits, which the next step
    # overwrites: the sampled tokens of a seed are those of the eager draft.
    target, draft = sharpen(make(seed=0, rotary_pos_emb=True), 2.0), make(dim=8, depth=1, seed=1, rotary_pos_emb=True)
    model = AutoregressiveWrapper(target)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    torch.manual_seed(3)
    eager = model.generate(prompt, 24, draft=draft, num_speculative=3, filter_kwargs=dict(k=5))
    accepted = model.speculative_stats.accepted
    torch.manual_seed(3)
    compiled = model.generate(prompt, 24, draft=draft, num_speculative=3, filter_kwargs=dict(k=5),
                              compile={"backend": "aot_eager"})
    assert torch.equal(compiled, eager) and model.speculative_stats.accepted == accepted > 0

@pytest.mark.parametrize("traceable", [False, True])
def test_packed_linears_compute_the_same_products_and_are_undone(monkeypatch, traceable):
    # (`traceable`: through the `labml_style_nn::packed_linear` operator that a compiled pass calls.)
    monkeypatch.setattr(speculative, "PACK_MIN_NUMEL", 0)  # pack even these small layers
    net = make(seed=0, rotary_pos_emb=True)
    x = torch.randint(0, V, (2, 5))
    plain = net(x)
    layers = [m for m in net.modules() if type(m) is torch.nn.Linear]
    with packed_linears(net, 4, traceable=traceable):
        if speculative._packable():
            assert all("forward" in m.__dict__ for m in layers)  # each layer runs the packed product
            assert len(speculative._PACKED) == (len(layers) if traceable else 0)
        packed = net(x)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in layers)  # back to nn.Linear.forward
    assert not speculative._PACKED
    if traceable:
        return
    # With the packed pass switched off the target runs through nn.Linear: same greedy tokens.
    target, draft = sharpen(make(seed=0)), perturbed(sharpen(make(seed=0)))
    model = AutoregressiveWrapper(target)
    prompt = torch.tensor([[1, 2, 3]])
    packed_out = model.generate(prompt, 20, temperature=0, draft=draft, num_speculative=3)
    assert 0 < model.speculative_stats.accepted < model.speculative_stats.proposed
    monkeypatch.setattr(speculative, "PACKED_PASS", False)
    assert torch.equal(model.generate(prompt, 20, temperature=0, draft=draft, num_speculative=3), packed_out)


@pytest.mark.parametrize("traceable", [False, True])
def test_packed_linears_fall_back_to_nn_linear_when_packing_fails(monkeypatch, traceable):
    """A oneDNN build that cannot pack a weight leaves every layer on `nn.Linear`, with the same output."""
    import labml_style_nn.generation.speculative as spec
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
    calls = []

    def failing_second(layer, rows):
        calls.append(layer)
        if len(calls) == 2:
            raise RuntimeError("cannot pack")
        return lambda x: torch.full((x.shape[0], layer.out_features), float("nan"))
    monkeypatch.setattr(spec, "traceable_forward" if traceable else "packed_forward", failing_second)
    monkeypatch.setattr(spec, "_packable", lambda: True)
    x = torch.randn(3, 256)
    with torch.no_grad(), packed_linears(net, 3, traceable=traceable):
        assert not any("forward" in m.__dict__ for m in net)
        out = net(x)
    torch.testing.assert_close(out, net(x).detach())
    assert len(calls) == 2
