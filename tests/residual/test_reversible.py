"""Reversible layers: the custom backward against plain autograd, composition, refusals, memory."""

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labml_style_nn import CrossAttender, Decoder, Encoder, TransformerWrapper, XTransformer
from labml_style_nn.generation import AutoregressiveWrapper
from labml_style_nn.residual import reversible

ROOT = Path(__file__).resolve().parents[2]


def grads(model, *inputs):
    """Gradients of every parameter and input, in order (zeros where unused)."""
    tensors = list(model.parameters()) + [t for t in inputs if t is not None]
    return [t.grad.clone() if t.grad is not None else torch.zeros_like(t) for t in tensors]


def run(model, x, *, recompute, seed=1, loss_weights=None, **kwargs):
    """Forward and backward with a fixed random state; returns the output and all gradients."""
    model.zero_grad(set_to_none=True)
    for t in (x, kwargs.get("context")):
        if t is not None:
            t.grad = None
    model.reversible_recompute = recompute
    torch.manual_seed(seed)
    out = model(x, **kwargs)
    w = loss_weights if loss_weights is not None else torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * w.to(out.dtype)).sum().backward()
    return out.detach(), grads(model, x, kwargs.get("context"))


def assert_custom_backward_matches_autograd(model, x, *, atol, rtol, **kwargs):
    out_ref, g_ref = run(model, x, recompute=False, **kwargs)
    out, g = run(model, x, recompute=True, **kwargs)
    torch.testing.assert_close(out, out_ref, atol=0, rtol=0)  # the same function, forward
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def test_docstring_examples():
    result = doctest.testmod(reversible)
    assert result.attempted > 0 and result.failed == 0


#
# Gradients: the custom backward computes the gradient of the function that ran forward.
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradcheck_float64(dropout):
    torch.manual_seed(0)
    model = Decoder(dim=6, depth=2, heads=2, attn_dim_head=3, reversible=True, cross_attend=True,
                    attn_dropout=dropout, ff_dropout=dropout, ff_mult=2).double().train()
    x = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    context = torch.randn(2, 2, 6, dtype=torch.double, requires_grad=True)

    def f(x, context):
        torch.manual_seed(3)  # the same dropout masks at every evaluation
        return model(x, context=context)

    assert torch.autograd.gradcheck(f, (x, context))


FEATURES = {
    "plain": {},
    "rotary_glu": dict(rotary_pos_emb=True, ff_glu=True),
    "alibi": dict(alibi_pos_emb=True),
    "t5": dict(rel_pos_bias=True),  # the bias table's gradient comes through the shared inputs
    "persistent_memory": dict(attn_num_mem_kv=3),
    "shift_sandwich_rezero": dict(shift_tokens=1, sandwich_norm=True),
    "rezero": dict(use_rezero=True),
    "cross": dict(cross_attend=True, rotary_pos_emb=True),
    # layers-a keywords that compose with reversible layers (the others are refused by name)
    "layerscale_dyt_dynamic_bias": dict(use_layerscale=True, layerscale_init_value=0.5, use_dynamic_tanh=True,
                                        dynamic_pos_bias=True),
    "tied_xpos_softclamp": dict(weight_tie_layers=True, rotary_xpos=True, softclamp_output=True,
                                softclamp_output_value=2.0, use_derf=True),
}


@pytest.mark.parametrize("name", FEATURES)
def test_matches_autograd_in_float64(name):
    torch.manual_seed(0)
    kwargs = FEATURES[name]
    model = Decoder(dim=16, depth=3, heads=2, attn_dim_head=8, reversible=True, attn_dropout=0.1, ff_dropout=0.1,
                    **kwargs).double().train()
    if kwargs.get("use_rezero"):
        for p in model.parameters():  # ReZero starts at zero; move it so every branch is tested
            if p.dim() == 0 or p.numel() == 1:
                p.data.fill_(0.3)
    x = torch.randn(2, 6, 16, dtype=torch.double, requires_grad=True)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    extra = dict(mask=mask)
    if kwargs.get("cross_attend"):
        extra["context"] = torch.randn(2, 5, 16, dtype=torch.double, requires_grad=True)
    assert_custom_backward_matches_autograd(model, x, atol=1e-10, rtol=1e-8, **extra)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_matches_autograd_in_float32_at_a_useful_size(dropout):
    torch.manual_seed(0)
    model = Decoder(dim=64, depth=6, heads=4, reversible=True, rotary_pos_emb=True, attn_dropout=dropout,
                    ff_dropout=dropout).train()
    x = torch.randn(4, 32, 64, requires_grad=True)
    assert_custom_backward_matches_autograd(model, x, atol=2e-5, rtol=1e-3)


def test_cross_attender_and_context_gradient_accumulates_over_layers():
    torch.manual_seed(0)
    model = CrossAttender(dim=16, depth=3, heads=2, attn_dim_head=8, reversible=True).double()
    x = torch.randn(2, 4, 16, dtype=torch.double, requires_grad=True)
    context = torch.randn(2, 7, 16, dtype=torch.double, requires_grad=True)
    context_mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    assert_custom_backward_matches_autograd(model, x, atol=1e-10, rtol=1e-8, context=context,
                                            context_mask=context_mask)
    # Every layer reads the context: the gradient is the sum of their contributions.
    assert context.grad.abs().sum() > 0 and (context.grad[1, 5:] == 0).all()


def test_dropout_is_replayed_and_leaves_the_random_state_alone():
    torch.manual_seed(0)
    model = Decoder(dim=16, depth=2, heads=2, reversible=True, attn_dropout=0.5, ff_dropout=0.5).double().train()
    x = torch.randn(2, 5, 16, dtype=torch.double, requires_grad=True)
    torch.manual_seed(1)
    out = model(x)
    state = torch.get_rng_state()
    out.sum().backward()
    assert torch.equal(torch.get_rng_state(), state)  # the backward pass draws nothing from the generator
    torch.manual_seed(1)
    assert not torch.equal(model.eval()(x), out)  # dropout really ran


def test_backward_twice_with_retained_graph():
    torch.manual_seed(0)
    model = Decoder(dim=16, depth=3, heads=2, reversible=True).double()
    x = torch.randn(1, 5, 16, dtype=torch.double, requires_grad=True)
    out = model(x).sum()
    (first,) = torch.autograd.grad(out, x, retain_graph=True)
    (second,) = torch.autograd.grad(out, x)
    torch.testing.assert_close(first, second, atol=0, rtol=0)


#
# Properties of the stack
def test_causal_through_the_custom_backward():
    torch.manual_seed(0)
    model = Decoder(dim=16, depth=3, heads=2, reversible=True, rotary_pos_emb=True).double()
    x = torch.randn(1, 8, 16, dtype=torch.double, requires_grad=True)
    # A random projection of token 3's output: the plain sum of a LayerNorm's output is constant.
    (model(x)[0, 3] * torch.randn(16, dtype=torch.double)).sum().backward()
    assert (x.grad[0, 4:] == 0).all() and x.grad[0, :4].abs().sum() > 0


def test_padding_invariant():
    torch.manual_seed(0)
    model = Encoder(dim=16, depth=3, heads=2, reversible=True, rel_pos_bias=True).double()
    x = torch.randn(2, 7, 16, dtype=torch.double)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 5:] = False
    y = x.clone()
    y[:, 5:] = 100 * torch.randn(2, 2, 16, dtype=torch.double)
    torch.testing.assert_close(model(x, mask=mask)[:, :5], model(y, mask=mask)[:, :5])
    # Padded positions get no gradient from real outputs, through the custom backward too.
    y.requires_grad_()
    model(y, mask=mask)[:, :5].sum().backward()
    assert (y.grad[:, 5:] == 0).all()


def test_finite_in_bfloat16():
    torch.manual_seed(0)
    model = Decoder(dim=32, depth=4, heads=4, reversible=True, rotary_pos_emb=True, ff_glu=True).to(torch.bfloat16)
    x = torch.randn(2, 16, 32, dtype=torch.bfloat16, requires_grad=True)
    out = model(x)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters()) and torch.isfinite(x.grad).all()


def test_gradients_under_bf16_autocast_agree_with_autograd():
    torch.manual_seed(0)
    model = Decoder(dim=32, depth=3, heads=2, reversible=True, rotary_pos_emb=True, attn_dropout=0.1).train()
    x = torch.randn(2, 8, 32, requires_grad=True)
    results = []
    for recompute in (False, True):
        model.zero_grad(set_to_none=True)
        model.reversible_recompute = recompute
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        x.grad = None
        out.float().square().mean().backward()
        results.append(grads(model, x))
    # The inputs rebuilt in bfloat16 round, so the gradients agree to bfloat16's precision.
    for a, b in zip(*results, strict=True):
        assert (a - b).norm() <= 0.05 * b.norm() + 1e-6


def test_state_dict_round_trip_and_the_same_keys_as_a_plain_stack():
    torch.manual_seed(0)
    a = Decoder(dim=16, depth=2, heads=2, reversible=True, rel_pos_bias=True)
    b = Decoder(dim=16, depth=2, heads=2, reversible=True, rel_pos_bias=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)
    plain = Decoder(dim=16, depth=2, heads=2, rel_pos_bias=True)
    assert plain.state_dict().keys() == a.state_dict().keys()


def test_xtransformer_routes_enc_and_dec_reversible():
    torch.manual_seed(0)
    model = XTransformer(dim=16, enc_num_tokens=11, enc_depth=2, enc_heads=2, enc_max_seq_len=8, enc_reversible=True,
                         dec_num_tokens=11, dec_depth=2, dec_heads=2, dec_max_seq_len=8, dec_reversible=True).double()
    assert model.encoder.attn_layers.options.reversible and model.decoder.net.attn_layers.options.reversible
    src, tgt = torch.randint(0, 11, (2, 6)), torch.randint(0, 11, (2, 7))

    def loss_and_grads(recompute):
        model.zero_grad(set_to_none=True)
        model.encoder.attn_layers.reversible_recompute = recompute
        model.decoder.net.attn_layers.reversible_recompute = recompute
        loss = model(src, tgt)
        loss.backward()
        return loss.detach(), grads(model)

    (l_ref, g_ref), (loss, g) = loss_and_grads(False), loss_and_grads(True)
    torch.testing.assert_close(loss, l_ref, atol=0, rtol=0)
    for a, b in zip(g, g_ref, strict=True):  # the context gradient reaches the encoder
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("kwargs", [dict(rotary_pos_emb=True), dict(alibi_pos_emb=True, shift_tokens=1),
                                    dict(rel_pos_bias=True, attn_num_mem_kv=2)])
def test_cached_generation_equals_the_uncached_pass(kwargs):
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=13, max_seq_len=32,
                             attn_layers=Decoder(dim=16, depth=2, heads=2, reversible=True, **kwargs))
    model = AutoregressiveWrapper(net).eval()
    prompt = torch.randint(0, 13, (2, 4))
    out = model.generate(prompt, 6, temperature=0.0)
    seq = prompt
    for _ in range(6):
        seq = torch.cat((seq, net(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, seq[:, 4:])


def test_attention_maps_and_memory_tokens_through_the_wrapper():
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=13, max_seq_len=16, num_memory_tokens=2,
                             attn_layers=Decoder(dim=16, depth=3, heads=2, reversible=True, rotary_pos_emb=True))
    x = torch.randint(0, 13, (2, 5))
    logits, maps = net(x, return_attn=True)
    assert logits.shape == (2, 5, 13) and len(maps) == 3 and maps[0].shape == (2, 2, 7, 7)
    torch.testing.assert_close(logits, net(x))


def test_char_lm_trains_a_reversible_variant(tmp_path):
    from experiments import char_lm

    cfg = char_lm.Config(**{**char_lm.Config.SMOKE, "variant": "rotary+reversible", "device": "cpu",
                            "out_dir": str(tmp_path), "sample_len": 0})
    result = char_lm.train(cfg)
    assert result["steps"] == cfg.steps and 0 < result["val_bpc"] < 8


#
# What cannot be reversible is refused, naming both keywords
@pytest.mark.parametrize("kwargs, other", [
    (dict(macaron=True), "macaron"), (dict(sandwich_coef=1), "sandwich_coef"),
    (dict(gate_residual=True), "gate_residual"), (dict(scale_residual=True), "scale_residual"),
    (dict(residual_attn=True), "residual_attn"), (dict(gradient_checkpointing=True), "gradient_checkpointing"),
    (dict(pre_norm=False), "pre_norm"), (dict(cross_attend=True, cross_residual_attn=True), "cross_residual_attn"),
])
def test_refusals(kwargs, other):
    with pytest.raises(ValueError, match=rf"reversible and {other}"):
        Decoder(dim=16, depth=2, reversible=True, **kwargs)


def test_transformer_xl_memories_are_refused():
    with pytest.raises(ValueError, match="max_mem_len and reversible"):
        TransformerWrapper(num_tokens=5, max_seq_len=8, max_mem_len=4,
                           attn_layers=Decoder(dim=16, depth=1, reversible=True, rotary_pos_emb=True))
    model = Decoder(dim=16, depth=1, heads=2, reversible=True)
    with pytest.raises(ValueError, match="mems and reversible"):
        model(torch.randn(1, 3, 16), mems=[torch.randn(1, 2, 16)])
    with pytest.raises(ValueError, match="reversible: expected True or False"):
        Decoder(dim=16, depth=1, reversible=1)


#
# Memory: from 2 to 12 layers, a reversible step's peak grows by less than a third of a plain one's.
def test_peak_memory_does_not_grow_with_depth():
    # One fresh process measures the four points with the benchmark's own function: each step's peak
    # is taken after resetting the process's peak to its current size, so earlier points do not count.
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from reversible_memory import measure_point; "
            "print(json.dumps([measure_point(reversible=r, depth=d, dim=64, heads=4, batch=8, seq_len=64, "
            "device='cpu', time_steps=0) for r in (False, True) for d in (2, 12)]))")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "experiments" / "benchmarks")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    peak = {(p["reversible"], p["depth"]): p["peak_mib"] for p in json.loads(out.stdout.strip().splitlines()[-1])}
    plain, rev = peak[False, 12] - peak[False, 2], peak[True, 12] - peak[True, 2]
    assert plain > 10, peak  # the plain stack's activations are clearly visible
    assert rev < plain / 3, peak


def test_parameters_passed_through_functional_call_get_their_gradients():
    # `torch.func.functional_call` swaps the parameters only during the call; the custom backward must
    # differentiate the tensors that were passed in, not the module's own.
    torch.manual_seed(0)
    model = Decoder(dim=16, depth=2, heads=2, reversible=True, rotary_pos_emb=True).double()
    x = torch.randn(2, 5, 16, dtype=torch.double)
    weights = torch.randn(16, dtype=torch.double)

    def grads(recompute: bool):
        model.reversible_recompute = recompute
        params = {k: (v.detach() * 1.5).requires_grad_() for k, v in model.named_parameters()}
        (torch.func.functional_call(model, params, (x,)) @ weights).sum().backward()
        return {k: p.grad for k, p in params.items()}

    reference, custom = grads(False), grads(True)
    assert all(p.grad is None for p in model.parameters())  # the module's own tensors are untouched
    for name, g in reference.items():
        assert custom[name] is not None, name
        torch.testing.assert_close(custom[name], g, atol=1e-10, rtol=1e-8)
    # gradcheck through functional_call, on one parameter
    name = "blocks.1.fn.proj_out.weight"
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(w):
        return torch.func.functional_call(model, {**params, name: w}, (x[:1, :3],)) @ weights

    assert torch.autograd.gradcheck(f, (params[name].clone().requires_grad_(),))
