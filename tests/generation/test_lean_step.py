"""The lean one-token step of plain pre-norm stacks gives exactly the general path's numbers, and is taken only there."""

from __future__ import annotations

import pytest
import torch

import labml_style_nn.models.layers as layers_module
from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.generation import lean_step as lean
from labml_style_nn.generation.lean_step import lean_blocks

BASE = dict(dim=16, depth=2, heads=2, rotary_pos_emb=True)
PLAIN = {
    "llama": dict(use_rmsnorm=True, ff_glu=True, attn_kv_heads=1),
    "alibi": dict(rotary_pos_emb=False, alibi_pos_emb=True),
    "qk-rmsnorm-moe": dict(attn_qk_rmsnorm=True, ff_num_experts=3, ff_top_k=2),
    "gpt2-like": dict(rotary_pos_emb=False, ff_activation="gelu_tanh", norm_bias=True),
}
NOT_PLAIN = [dict(sandwich_norm=True), dict(use_rezero=True), dict(macaron=True), dict(shift_tokens=1),
             dict(pre_norm=False), dict(num_residual_streams=2), dict(add_value_residual=True),
             dict(residual_attn=True), dict(attn_num_mem_kv=2), dict(use_layerscale=True)]


def model(**kwargs):
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=29, max_seq_len=64, attn_layers=Decoder(**{**BASE, **kwargs}))
    return AutoregressiveWrapper(net).eval()


@pytest.mark.parametrize("name", list(PLAIN))
def test_lean_steps_give_the_general_paths_tokens_and_logits(name, monkeypatch):
    m = model(**PLAIN[name])
    assert lean_blocks(m.net.attn_layers)
    calls = []
    real = lean.lean_step
    monkeypatch.setattr(layers_module, "lean_step", lambda *a: calls.append(1) or real(*a))
    # Left-padded prompts of different lengths: the key mask goes through the lean step too
    prompts = [torch.randint(0, 29, (n,)) for n in (5, 2, 4)]
    fast = m.generate(prompts, 6, temperature=0.0)
    # Step by step, the logits themselves
    x = torch.randint(0, 29, (2, 5))
    cache = m._new_cache(True, 2, 12)
    logits_fast = [m.net(x, cache=cache)] + [m.net(x[:, i:i + 1], cache=cache) for i in range(3)]
    assert len(calls) == 5 + 3 and cache.lean is True  # 6 new tokens: the prompt pass, then 5 steps; 3 steps here
    monkeypatch.setattr(layers_module, "lean_applies", lambda *a: False)
    slow = m.generate(prompts, 6, temperature=0.0)
    cache = m._new_cache(True, 2, 12)
    logits_slow = [m.net(x, cache=cache)] + [m.net(x[:, i:i + 1], cache=cache) for i in range(3)]
    assert torch.equal(fast, slow)
    for a, b in zip(logits_fast, logits_slow, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs", NOT_PLAIN, ids=lambda k: next(iter(k)))
def test_stacks_with_any_extra_step_stay_on_the_general_path(kwargs):
    assert not lean_blocks(model(**kwargs).net.attn_layers)


def test_the_plan_calls_operators_and_keeps_modules_with_hooks():
    """Plain modules become their functional calls; a module with a hook stays a module, and its hook runs."""
    from torch import nn

    m = model(**PLAIN["llama"], norm_add_unit_offset=False)  # RMSNorm with its gain stored as is (as converted)
    prompt = torch.randint(0, 29, (1, 4))
    tokens = m.generate(prompt, 5, temperature=0.0)
    plan = m._last_cache.lean_plan
    for block, norm, fn in plan.blocks:
        assert not isinstance(norm, nn.Module)
        parts = fn if block.kind == "a" else (fn,)
        assert not any(isinstance(part, nn.Module) for part in parts)
    calls = []
    attn = m.net.attn_layers.blocks[0].fn
    handle = attn.to_qkv.register_forward_hook(lambda *a: calls.append(1))
    try:
        assert torch.equal(m.generate(prompt, 5, temperature=0.0), tokens)
    finally:
        handle.remove()
    assert len(calls) == 5  # the prompt pass and four one-token steps
    assert m._last_cache.lean_plan.blocks[0][2][0] is attn.to_qkv
    # A dropout left in training mode keeps the feed-forward a module (it would drop features)
    m.net.attn_layers.blocks[1].fn.dropout.p = 0.5
    m.net.attn_layers.blocks[1].fn.dropout.train()
    cache = m._new_cache(True, 1, 8)
    m.net(prompt, cache=cache)
    m.net(prompt[:, :1], cache=cache)
    assert isinstance(cache.lean_plan.blocks[1][2], nn.Module)
