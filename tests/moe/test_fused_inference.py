"""The mixture-of-experts layer's inference as one function equals the modular layer, router by router, way by way."""

import copy
import io

import pytest
import torch

from labml_style_nn.feedforward.feedforward import FeedForward
from labml_style_nn.moe import Experts, MixtureOfExperts, SigmoidRouter, SoftmaxRouter, fused_inference

E, D, H = 6, 16, 24


def layer(router: str, *, bias: bool = False) -> MixtureOfExperts:
    """A layer in evaluation whose last expert can never be chosen: it gets no tokens."""
    torch.manual_seed(3)
    shared = shared_gate = None
    if router == "mixtral":
        r = SoftmaxRouter(D, E, 2)
    elif router == "switch":
        r = SoftmaxRouter(D, E, 1)
    else:
        # DeepSeek-V3: sigmoid scores, bias, groups, scale; shared experts with Qwen2-MoE's gate
        r = SigmoidRouter(D, E, 2, routed_scale=2.5, groups=3, groups_top_k=2)
        r.expert_bias.copy_(torch.randn(E) * 0.1)
        shared = FeedForward(D, inner_dim=20, glu=True, activation="silu", bias=bias)
        shared_gate = torch.nn.Linear(D, 1, bias=False)
    experts = Experts(E, D, H, glu=router != "switch", activation="silu" if router != "switch" else "gelu", bias=bias)
    if bias:
        torch.nn.init.normal_(experts.b_in)
        torch.nn.init.normal_(experts.b_out)
    with torch.no_grad():
        # Positive inputs below: a negative router row means a logit far below the others
        r.proj.weight[-1] = -1.0
        if isinstance(r, SigmoidRouter):
            r.expert_bias[-1] = -10.0
    return MixtureOfExperts(D, router=r, experts=experts, shared=shared, shared_gate=shared_gate,
                            capacity_factor=1.0 if router == "switch" else None).eval()


# The four ways by their limits (dense, gathered) and the number of tokens
WAYS = {"dense": (1 << 30, 0, 5), "one token": (0, 0, 1), "gathered": (0, 1 << 30, 2), "grouped": (0, 0, 7)}


def spy(monkeypatch, width: int) -> list[str]:
    """The way each step took, read from the products it called."""
    taken = []
    sort, mm, bmm = torch.sort, torch.mm, torch.bmm

    def spy_sort(*args, **kwargs):
        taken.append("grouped")
        return sort(*args, **kwargs)

    def spy_mm(*args, **kwargs):
        taken.append("one token")
        return mm(*args, **kwargs)

    def spy_bmm(a, b, *args, **kwargs):
        # The first product of the dense way has the token rows shared by every expert (a stride of 0)
        if b.shape[-1] == width:
            taken.append("dense" if a.stride(0) == 0 else "gathered")
        return bmm(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "sort", spy_sort)
    monkeypatch.setattr(torch, "mm", spy_mm)
    monkeypatch.setattr(torch, "bmm", spy_bmm)
    return taken


@pytest.mark.parametrize("router,bias", [("mixtral", False), ("deepseek", True), ("switch", False)])
def test_each_router_and_way_equals_the_modular_layer(router, bias, monkeypatch):
    moe = layer(router, bias=bias)
    assert fused_inference.fused_covers(moe)
    x = torch.rand(1, 7, D) + 0.1
    for way, (dense, gather, t) in WAYS.items():
        if way == "dense" and router == "switch":
            t = 6  # the dense way needs at least as many assignments as experts
        step = fused_inference.inference_step(moe, dense=dense, gather=gather)
        assert step is not None
        moe.experts.dense_limit, moe.experts.gather_limit = dense, gather
        moe.fused = False
        with torch.no_grad():
            modular = moe(x[:, :t])
            chosen = moe.chosen
            taken = spy(monkeypatch, moe.experts.width)
            fused, fused_chosen = step(x[:, :t])
            monkeypatch.undo()
        assert taken[:1] == [way], (way, taken)
        assert torch.equal(fused_chosen, chosen)
        # The last expert got no token
        assert int(torch.bincount(chosen, minlength=E)[-1]) == 0
        torch.testing.assert_close(fused, modular, rtol=1e-6, atol=1e-6)
        assert fused.shape == (1, t, D)


def test_the_layer_runs_the_step_in_inference_and_the_modules_otherwise():
    moe = layer("deepseek")
    x = torch.rand(2, 5, D)
    recorded = moe(x)  # evaluation with gradients: the modules
    assert recorded.requires_grad and moe._step is None
    with torch.inference_mode():
        torch.testing.assert_close(moe(x), recorded, rtol=1e-6, atol=1e-6)
    assert callable(moe._step) and moe.load is not None and int(moe.load.sum()) == 2 * 5 * 2
    # Training mode drops the step; bad widths still name the argument
    moe.train()
    assert moe._step is None
    moe.eval()
    with torch.no_grad(), pytest.raises(ValueError, match="x"):
        moe(torch.rand(2, 5, D + 1))


def test_a_new_step_after_loading_copying_or_converting():
    moe = layer("mixtral")
    x = torch.rand(1, 4, D)
    with torch.no_grad():
        before = moe(x)
        # A copy builds its own step: changing its weights does not change the original's output
        twin = copy.deepcopy(moe)
        assert twin._step is None
        twin.experts.w_in.data.mul_(2)
        assert not torch.allclose(twin(x), before)
        torch.testing.assert_close(moe(x), before, rtol=0, atol=0)
        # Loading a state dict with new tensors (assign) is seen at the next call
        state = {name: value * 0.5 if name.endswith("w_out") else value for name, value in moe.state_dict().items()}
        moe.load_state_dict(state, assign=True)
        torch.testing.assert_close(moe(x), 0.5 * before, rtol=1e-5, atol=1e-6)
        # Converted to double precision, it computes in double precision
        assert moe.double()(x.double()).dtype == torch.float64
    torch.save(moe, io.BytesIO())  # the step is not pickled


@pytest.mark.parametrize("change", ["w_in", "shared", "top_k"])
def test_a_replaced_parameter_or_a_new_setting_builds_a_new_step(change):
    """Replacing a parameter object by hand or setting top_k anew is seen at the next call: no stale step runs."""
    moe = layer("deepseek")
    x = torch.rand(1, 5, D)
    with torch.no_grad():
        moe(x)  # builds the step
        assert moe._step
        if change == "w_in":
            moe.experts.w_in = torch.nn.Parameter(moe.experts.w_in * 2)
        elif change == "shared":
            moe.shared.proj_out.weight = torch.nn.Parameter(moe.shared.proj_out.weight * 3)
        else:
            moe.router.top_k = 1
        fused = moe(x)
        moe.fused = False
        modular = moe(x)
    torch.testing.assert_close(fused, modular, rtol=1e-6, atol=1e-6)


def test_layers_it_does_not_cover_keep_the_modules():
    moe = layer("mixtral")
    moe.shared = FeedForward(D, inner_dim=8, post_act_ln=True)
    assert not fused_inference.fused_covers(moe)
    x = torch.rand(1, 4, D)
    with torch.no_grad():
        y = moe(x)
    assert moe._step is False
    moe.fused = False
    with torch.no_grad():
        torch.testing.assert_close(moe(x), y, rtol=0, atol=0)


def test_an_unchosen_expert_that_overflows_in_float16_leaves_no_nan():
    """The dense way would multiply the overflowing expert's infinity by a zero gate; float16 never runs it."""
    moe = layer("mixtral").half()
    with torch.no_grad():
        moe.experts.w_in[-1].fill_(1e3)  # the last expert, never chosen, overflows float16 on any input
    x = (torch.rand(1, 5, D) + 0.1).half()
    moe.experts.dense_limit = 1 << 30  # the modules would take the dense way at any size
    step = fused_inference.inference_step(moe, dense=1 << 30)
    assert step is not None
    with torch.no_grad():
        out = step(x)
        assert out is not None
        fused = out[0]
        moe.fused = False
        modular = moe(x)
        # What the chosen experts give, in float32
        reference = moe.float()(x.float())
    assert torch.isfinite(fused).all() and torch.isfinite(modular).all()
    torch.testing.assert_close(fused.float(), reference, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(modular.float(), reference, rtol=1e-2, atol=1e-2)


def test_generation_keeps_the_step_between_calls():
    """`generate` puts the model in evaluation and back: no new step per call when the mode did not change."""
    from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper

    torch.manual_seed(0)
    model = TransformerWrapper(num_tokens=32, max_seq_len=16,
                               attn_layers=Decoder(dim=16, depth=1, heads=2, ff_num_experts=4, ff_top_k=2)).eval()
    moe = next(m for m in model.modules() if isinstance(m, MixtureOfExperts))
    generator = AutoregressiveWrapper(model)
    prompt = torch.randint(0, 32, (1, 4))
    first = generator.generate(prompt, 3, temperature=0.0)
    step = moe._step
    assert callable(step)
    assert torch.equal(generator.generate(prompt, 3, temperature=0.0), first)
    assert moe._step is step


@pytest.mark.parametrize("part", ["router", "router.proj", "experts", "shared", "global"])
def test_forward_hooks_on_a_part_run_at_inference(part):
    """The step calls no module: while a hook is registered on a part, the layer calls its modules instead."""
    moe = layer("deepseek")
    x = torch.rand(1, 5, D)
    seen = []
    with torch.no_grad():
        expected = moe(x)  # builds the step
        assert callable(moe._step)
        hook = lambda module, args, out: seen.append(type(module).__name__)  # noqa: E731
        if part == "global":
            handle = torch.nn.modules.module.register_module_forward_hook(hook)
        else:
            handle = moe.get_submodule(part).register_forward_hook(hook)
        try:
            torch.testing.assert_close(moe(x), expected, rtol=1e-6, atol=1e-6)
        finally:
            handle.remove()
        # The hooked part ran (for the global hook: the router, not only the layer itself)
        assert ("SigmoidRouter" if part == "global" else type(moe.get_submodule(part)).__name__) in seen, seen
        assert moe._step is False
        # With the hook gone, the step comes back
        count = len(seen)
        torch.testing.assert_close(moe(x), expected, rtol=1e-6, atol=1e-6)
        assert len(seen) == count and callable(moe._step)
