"""The residual-stream techniques of x-transformers' `AttentionLayers` (value residual, the residual constant,
depth-scaled and zero-initialised branches, input injection, U-ViT skips): formulas, the invariant sweeps
(causal, padding, cached decoding, Transformer-XL memory), refusals and weight-copied parity."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair, copy_norm

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation import LayersCache
from labml_style_nn.models.unet_skips import skip_pairs
from labml_style_nn.residual.depth_scale_residual import block_numbers
from labml_style_nn.residual.value_residual import ValueResidual
from labml_style_nn.residual.zero_init_branch import output_projection

DIM, HEADS, V = 16, 2, 29

# name -> the stack keywords that turn the technique on (depth 2 unless given).
FEATURES = {
    "value_residual": dict(add_value_residual=True),
    "residual_constant_post_norm": dict(scale_residual_constant=1.7, pre_norm=False, scale_residual=True),
    "depth_scale_runtime": dict(depth_scale_residual=0.4, macaron=True),
    "reinject_input_gated": dict(reinject_input=True, learned_reinject_input_gate=True),
    "unet_skips": dict(unet_skips=True, depth=3),
    "orthog_residual": dict(orthog_residual=True, scale_residual=True),
    "integrate_layers": dict(integrate_layers=True, add_value_residual=True),
    "integrate_layers_hyper": dict(integrate_layers=True, num_residual_streams=2, qkv_receive_diff_residuals=True),
    "attn_aggregated_residuals": dict(attn_aggregated_residuals=True, attn_aggregated_residual_kwargs={"lora_rank": 4}),
    "hyper_connections": dict(num_residual_streams=3, hyper_conn_sinkhorn_iters=3),
    "hyper_connections_qkv_views": dict(num_residual_streams=2, qkv_receive_diff_residuals=True, add_value_residual=True),
    "gated_multi_residual": dict(gated_multi_residual=True, num_residual_streams=2, qkv_receive_diff_residuals=True,
                                 residual_fn_kwargs={"read_gate_rank": 4}),
    "together": dict(add_value_residual=True, reinject_input=True, learned_reinject_input_gate=True, unet_skips=True,
                     depth=3, rotary_pos_emb=True, num_residual_streams=2, attn_num_mem_kv=2),
}


def _perturbed(model):
    """Nonzero values for parameters that start at zero, so that every one of them matters."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def stack(cls, name, **more):
    kw = dict(FEATURES[name])
    torch.manual_seed(0)
    return _perturbed(cls(dim=DIM, heads=HEADS, attn_dim_head=8, **{"depth": 2, **kw, **more}))


def lm(name, rotary=False, **wrap):
    kw = dict(FEATURES[name], **({"rotary_pos_emb": True} if rotary else {}))
    torch.manual_seed(0)
    return _perturbed(TransformerWrapper(num_tokens=V, max_seq_len=32, **wrap, attn_layers=Decoder(
        dim=DIM, heads=HEADS, attn_dim_head=8, **{"depth": 2, **kw})))


#
# ## Each technique changes the output
# (The gated multi residual drops the blocks' pre-norms, so it cannot share a plain stack's parameters:
# `test_mv_split_and_gated_multi.py` shows its change.)
@pytest.mark.parametrize("name", [n for n in FEATURES if n != "gated_multi_residual"])
def test_output_changes_when_on(name):
    on = stack(Decoder, name)
    plain_kw = {"depth": FEATURES[name].get("depth", 2), **{k: v for k, v in FEATURES[name].items()
                                                            if k in ("pre_norm", "scale_residual", "macaron",
                                                                     "rotary_pos_emb")}}
    off = Decoder(dim=DIM, heads=HEADS, attn_dim_head=8, **plain_kw)
    # The constant wraps the residual sum (`residual.residual.scale` is NormFormer's scale inside it).
    state = {k.replace("residual.residual.", "residual."): v for k, v in on.state_dict().items()}
    missing, unexpected = off.load_state_dict(state, strict=False)
    assert not missing
    x = torch.randn(2, 7, DIM)
    assert (on(x) - off(x)).abs().max() > 1e-3


#
# ## The invariant sweeps (causality, padding and gradients: `test_res_techniques.py`)
@pytest.mark.parametrize("name", FEATURES)
def test_cached_steps_equal_the_full_pass(name):
    net = lm(name)
    seq = torch.randint(0, V, (2, 9))
    cache = LayersCache(net.attn_layers, 2, 9)
    with torch.no_grad():
        torch.testing.assert_close(net(seq[:, :4], cache=cache), net(seq[:, :4]), atol=1e-4, rtol=0)
        for t in range(4, 9):
            torch.testing.assert_close(net(seq[:, t:t + 1], cache=cache)[:, -1], net(seq[:, :t + 1])[:, -1],
                                       atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", FEATURES)
def test_segment_with_xl_memory_equals_the_full_pass(name):
    net = lm(name, max_mem_len=16) if "rotary_pos_emb" in FEATURES[name] else lm(name, max_mem_len=16, rotary=True)
    x = torch.randint(0, V, (2, 13))
    with torch.no_grad():
        full = net(x)
        _, mems = net(x[:, :8], return_mems=True)
        if FEATURES[name].get("qkv_receive_diff_residuals") or FEATURES[name].get("integrate_layers"):
            with pytest.raises(ValueError, match="mems and qkv_receive_diff_residuals"):
                net(x[:, 8:], mems=mems)
            return
        torch.testing.assert_close(net(x[:, 8:], mems=mems), full[:, 8:], atol=1e-4, rtol=1e-4)


def test_value_residual_with_cross_attention_cached_and_with_a_learned_context_mix():
    torch.manual_seed(0)
    net = _perturbed(TransformerWrapper(num_tokens=V, max_seq_len=32, attn_layers=Decoder(
        dim=DIM, depth=2, heads=HEADS, attn_dim_head=8, cross_attend=True, add_value_residual=True,
        cross_attn_learned_value_residual_mix=True)))
    assert net.attn_layers.blocks[4].fn.value_mix is not None and net.attn_layers.blocks[1].fn.value_mix is None
    seq, context = torch.randint(0, V, (2, 7)), torch.randn(2, 5, DIM)
    cache = LayersCache(net.attn_layers, 2, 7)
    with torch.no_grad():
        net(seq[:, :3], context=context, cache=cache)
        for t in range(3, 7):
            torch.testing.assert_close(net(seq[:, t:t + 1], context=context, cache=cache)[:, -1],
                                       net(seq[:, :t + 1], context=context)[:, -1], atol=1e-4, rtol=0)


#
# ## The formulas
def test_value_residual_mix_is_a_lerp_towards_the_layers_own_values():
    carry = ValueResidual()
    v1, v2 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    assert carry(v1, torch.zeros(1, 3, 8), None) is v1
    torch.testing.assert_close(carry(v2, torch.zeros(1, 3, 8), None), (v1 + v2) / 2)
    # A mix saturated at 1 keeps the layer's own values: the stack computes what a plain one does.
    model = stack(Decoder, "value_residual")
    plain = Decoder(dim=DIM, depth=2, heads=HEADS, attn_dim_head=8)
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        mix = model.blocks[2].fn.value_mix.proj
        mix.weight.zero_()
        mix.bias.fill_(50.0)
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)


def test_value_residual_with_gradient_checkpointing_has_the_same_gradients():
    model = stack(Decoder, "value_residual").train()
    ckpt = Decoder(dim=DIM, depth=2, heads=HEADS, attn_dim_head=8, add_value_residual=True, gradient_checkpointing=True)
    ckpt.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, DIM)
    g1 = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    g2 = torch.autograd.grad(ckpt.train()(x).square().sum(), list(ckpt.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_zero_initialised_branches_make_the_stack_its_final_norm():
    model = Decoder(dim=DIM, depth=2, heads=HEADS, zero_init_branch_output=True, attn_on_attn=True)
    x = torch.randn(2, 5, DIM)
    torch.testing.assert_close(model(x), model.final_norm(x))
    assert all(output_projection(b).weight.abs().sum() == 0 for b in model.blocks)


def test_depth_scaled_init_standard_deviations():
    torch.manual_seed(0)
    model = Decoder(dim=64, depth=3, heads=4, depth_scale_residual=True)
    assert block_numbers(model.options, model.layer_types) == [1, 1, 2, 2, 3, 3]
    for block, layer in zip(model.blocks, [1, 1, 2, 2, 3, 3], strict=True):
        w = output_projection(block).weight
        expected = (2 * w.shape[1] * layer) ** -0.5
        assert abs(w.std().item() / expected - 1) < 0.08


def test_residual_constant_and_runtime_scale_formulas():
    # Post-norm with the constant: block output = Norm(alpha x + F(x)).
    model = Decoder(dim=DIM, depth=1, heads=HEADS, scale_residual_constant=2.5, pre_norm=False)
    block, x = model.blocks[1], torch.randn(2, 4, DIM)
    out = block.fn(x)
    torch.testing.assert_close(block.join(out, x), block.post_norm(2.5 * x + out))
    scaled = Decoder(dim=DIM, depth=1, heads=HEADS, depth_scale_residual=0.25)
    block = scaled.blocks[1]
    torch.testing.assert_close(block.join(out, x), x + 0.25 * out)


def test_unet_pairs_and_input_injection_at_the_first_block():
    assert skip_pairs(4) == {2: 1, 3: 0}
    model = stack(Decoder, "reinject_input_gated")
    x = torch.randn(2, 5, DIM)
    inj = model.input_injection
    u = inj.proj(x) * torch.sigmoid(inj.gate(x))
    torch.testing.assert_close(model.blocks[0].branch_input(x + u), model.blocks[0].pre_norm(x + u))
    inter = model(x, return_hiddens=True)[1]
    # x-transformers' hiddens are the stream before the injection; the memory is what the keys read.
    torch.testing.assert_close(inter.hiddens[0], x)
    torch.testing.assert_close(inter.memory_inputs[0], x + u)


#
# ## Refusals name both keywords
@pytest.mark.parametrize(("kwargs", "names"), [
    (dict(reversible=True, add_value_residual=True), ("reversible", "add_value_residual")),
    (dict(reversible=True, scale_residual_constant=2.0), ("reversible", "scale_residual_constant")),
    (dict(reversible=True, reinject_input=True), ("reversible", "reinject_input")),
    (dict(reversible=True, unet_skips=True), ("reversible", "unet_skips")),
    (dict(gate_residual=True, scale_residual_constant=2.0), ("scale_residual_constant", "gate_residual")),
    (dict(learned_value_residual_mix=False), ("learned_value_residual_mix", "add_value_residual")),
    (dict(attn_learned_value_residual_mix=True), ("attn_learned_value_residual_mix", "add_value_residual")),
    (dict(learned_reinject_input_gate=True), ("learned_reinject_input_gate", "reinject_input")),
    (dict(unet_skips=True, custom_layers=("a", "f", "a", "f")), ("unet_skips", "custom_layers")),
    (dict(unet_skips=True, weight_tie_layers=True), ("unet_skips", "weight_tie_layers")),
    (dict(depth_scale_residual=0.5, sandwich_norm=True), ("depth_scale_residual", "sandwich_norm")),
    (dict(depth_scale_residual=True, zero_init_branch_output=True), ("depth_scale_residual", "zero_init_branch_output")),
    (dict(depth_scale_residual=-1.0), ("depth_scale_residual",)),
    (dict(num_residual_streams=2, reversible=True), ("num_residual_streams", "reversible")),
    (dict(orthog_residual=True, gate_residual=True), ("orthog_residual", "gate_residual")),
    (dict(orthog_residual=True, reversible=True), ("orthog_residual", "reversible")),
    (dict(integrate_layers=True, layer_dropout=0.1), ("integrate_layers", "layer_dropout")),
    (dict(integrate_layers=True, weight_tie_layers=True), ("integrate_layers", "weight_tie_layers")),
    (dict(layer_integrate_use_softmax=False), ("layer_integrate_use_softmax", "integrate_layers")),
    (dict(attn_aggregated_residuals=True, attn_aggregated_residual_kwargs={"rank": 4}),
     ("attn_aggregated_residual_kwargs",)),
    (dict(attn_aggregated_residuals=True, integrate_layers=True, attn_aggregated_residual_kwargs={"lora_rank": 4}),
     ("attn_aggregated_residuals", "integrate_layers")),
    (dict(num_residual_streams=2, gate_residual=True), ("num_residual_streams", "gate_residual")),
    (dict(qkv_receive_diff_residuals=True), ("qkv_receive_diff_residuals", "num_residual_streams")),
    (dict(num_residual_streams=2, qkv_receive_diff_residuals=True, shift_tokens=1),
     ("qkv_receive_diff_residuals", "shift_tokens")),
])
def test_refusals_name_the_keywords(kwargs, names):
    with pytest.raises(ValueError) as err:
        Decoder(dim=DIM, depth=2, heads=HEADS, **kwargs)
    assert all(n in str(err.value) for n in names), str(err.value)


def test_reversible_composes_with_the_branch_scales():
    # The custom backward gives the gradients of plain autograd on the same couplings.
    x = torch.randn(2, 5, DIM, dtype=torch.double)
    weights = torch.randn(DIM, dtype=torch.double)
    for kw in (dict(depth_scale_residual=0.5), dict(depth_scale_residual=True), dict(zero_init_branch_output=True)):
        torch.manual_seed(0)
        model = Decoder(dim=DIM, depth=2, heads=HEADS, reversible=True, **kw).double()
        grads = []
        for recompute in (True, False):
            model.reversible_recompute = recompute
            model.zero_grad()
            (model(x) @ weights).sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for custom, plain in zip(*grads, strict=True):
            torch.testing.assert_close(custom, plain, atol=1e-10, rtol=1e-8)
        assert any(g.abs().sum() > 0 for g in grads[0]), kw


#
# ## Parity with x-transformers 2.31.10, weights copied
def _copy_stream(ours, theirs, put):
    """The parameters of this file's techniques: value mixes, the injection, the skip projections."""
    layers, their = ours.attn_layers, theirs.attn_layers
    for block, (_, fn, _) in zip(layers.blocks, [their.layers[i] for i in their.layers_execute_order], strict=True):
        mix = getattr(block.fn, "value_mix", None)
        if mix is not None:
            while not hasattr(fn, "to_value_residual_mix"):
                fn = fn.fn
            put(mix.proj.weight, fn.to_value_residual_mix[0].weight)
            put(mix.proj.bias, fn.to_value_residual_mix[0].bias)
    for block, residual in zip(layers.blocks, [their.layers[i][2] for i in their.layers_execute_order], strict=True):
        scale = getattr(getattr(block.residual, "residual", None), "scale", None)  # NormFormer's, inside the constant
        if scale is not None:
            put(scale, residual.residual_scale)
    if layers.input_injection is not None:
        put(layers.input_injection.proj.weight, their.reinject_input_proj.weight)
        if layers.input_injection.gate is not None:
            put(layers.input_injection.gate.weight, their.learned_reinject_input_gate.weight)
    for block, residual in zip(layers.blocks, [their.layers[i][2] for i in their.layers_execute_order], strict=True):
        if type(block.residual).__name__ == "OrthogonalResidual" and block.residual.scale is not None:
            put(block.residual.scale, residual.residual_scale)
    if layers.integrations is not None and layers.options.attn_aggregated_residuals:
        for mine, agg in zip(layers.integrations, their.layer_integrators, strict=True):
            # torch's RMSNorm stores its gain as `weight`
            put(mine.query_norm.gamma, agg.to_query[0].weight)
            put(mine.down.weight, agg.to_query[1].down.weight)
            put(mine.up.weight, agg.to_query[1].up.weight)
            put(mine.key_norm.gamma, agg.to_keys.weight)
            put(mine.norm.gamma, agg.norm.weight)
    elif layers.integrations is not None:
        for mine, theirs_lime in zip(layers.integrations, their.layer_integrators, strict=True):
            copy_norm(put, mine.norm, theirs_lime.to_weights[0])
            put(mine.to_weights.weight, theirs_lime.to_weights[1].weight)
            put(mine.to_weights.bias, theirs_lime.to_weights[1].bias)
    if layers.streams is not None:
        put(layers.streams.stream_emb, their.stream_emb)
        for block, (_, _, hc) in zip(layers.blocks, [their.layers[i] for i in their.layers_execute_order], strict=True):
            mine = block.residual
            if hasattr(hc, "fn"):
                hc = hc.fn
            put(mine.norm.weight, hc.norm.weight)
            for name in ("static_alpha", "dynamic_alpha_fn", "dynamic_alpha_scale", "static_beta", "dynamic_beta_fn",
                         "dynamic_beta_scale"):
                put(getattr(mine, name), getattr(hc, name))
    if layers.unet_skips is not None:
        for i, combine in enumerate(their.skip_combines):
            if combine is not None:
                put(layers.unet_skips.combine[str(i)].weight, combine.combine.weight)


PARITY = [
    ("Decoder", dict(add_value_residual=True, rotary_pos_emb=True, rotary_emb_dim=4)),
    ("Encoder", dict(add_value_residual=True, learned_value_residual_mix=False, attn_kv_heads=1)),
    ("Decoder", dict(add_value_residual=True, cross_attend=True)),
    ("Decoder", dict(scale_residual_constant=1.7, pre_norm=False, scale_residual=True)),
    ("Encoder", dict(depth_scale_residual=0.4, macaron=True)),
    ("Decoder", dict(reinject_input=True, learned_reinject_input_gate=True)),
    ("Decoder", dict(unet_skips=True, depth=3)),
    ("Encoder", dict(unet_skips=True, depth=4)),
    ("Decoder", dict(zero_init_branch_output=True)),
    ("Decoder", dict(integrate_layers=True, cross_attend=True)),
    ("Encoder", dict(integrate_layers=True, layer_integrate_use_softmax=False)),
    ("Decoder", dict(attn_aggregated_residuals=True, attn_aggregated_residual_kwargs={"lora_rank": 4})),
]


@pytest.mark.parametrize(("stack_name", "kwargs"), PARITY, ids=lambda c: c if isinstance(c, str) else
                         "-".join(k for k in c if k not in ("depth",))[:50])
def test_parity_with_xtransformers(stack_name, kwargs):
    kwargs = {"dim": 32, "depth": 2, "heads": 4, "attn_dim_head": 8, **kwargs}
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), stack_name, kwargs)
    context = {}
    if kwargs.get("cross_attend"):
        context = dict(context=torch.randn(2, 5, 32), context_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    with torch.no_grad():
        for p in theirs.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)  # parameters that start at zero (LoRA's up projection, ...) must matter too
    assert_same_logits(ours, theirs, V, extra=[_copy_stream], grads=stack_name == "Decoder", **context)


def test_initialisations_match_xtransformers():
    """The init-only keywords: zero projections where x-transformers has them, and the same depth-scaled spread."""
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder",
                              dict(dim=32, depth=2, heads=4, zero_init_branch_output=True))
    assert theirs.attn_layers.layers[0][1].to_out.weight.abs().sum() == 0
    assert all(output_projection(b).weight.abs().sum() == 0 for b in ours.attn_layers.blocks)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder",
                              dict(dim=64, depth=2, heads=4, depth_scale_residual=True))
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        theirs_w = fn.to_out.weight if block.kind == "a" else fn.ff[-1].weight
        ratio = output_projection(block).weight.std() / theirs_w.std()
        assert abs(ratio.item() - 1) < 0.1


#
# ## Hyper-connections against x-transformers: the same up to its stream mixing
def test_hyper_connections_differ_from_xtransformers_only_by_its_all_ones_stream_mixing(monkeypatch):
    from labml_style_nn.residual import hyper_connections

    kwargs = dict(dim=32, depth=2, heads=4, attn_dim_head=8, num_residual_streams=3, add_value_residual=True)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", kwargs)
    hc_ours, hc_theirs = ours.attn_layers.blocks[1].residual, theirs.attn_layers.layers[1][2]
    # x-transformers' Sinkhorn sees logits of shape (..., 1, s): every entry of its mixing comes out 1.
    with torch.no_grad():
        hc_theirs.static_alpha.normal_()
        hc_theirs.dynamic_alpha_fn.normal_()
    h = torch.randn(2, 5, 3, 32)
    b_theirs, mixed_theirs, kw = hc_theirs.prepare(h.permute(0, 2, 1, 3).reshape(6, 5, 32))
    torch.testing.assert_close(mixed_theirs, h.sum(2, keepdim=True).expand_as(h))
    # Ours, with the same parameters, reads the same branch input and writes with the same weights,
    # but mixes the streams with a doubly stochastic matrix.
    from xt_parity import copy_weights
    copy_weights(ours, theirs, [_copy_stream])
    b_ours, (mixed_ours, write) = hc_ours.prepare(h)
    torch.testing.assert_close(b_ours, b_theirs)
    torch.testing.assert_close(write, kw["beta"])
    m = hyper_connections.sinkhorn(torch.randn(4, 3, 3) * 3, 5)
    torch.testing.assert_close(m.sum(-2), torch.ones(4, 3))  # each target's weights over the sources sum to 1
    torch.testing.assert_close(m.sum(-1), torch.ones(4, 3), atol=0.15, rtol=0)  # and nearly so each source's
    assert (mixed_ours - mixed_theirs).abs().max() > 0.5
    # With x-transformers' all-ones mixing put in, the whole models agree.
    monkeypatch.setattr(hyper_connections, "sinkhorn", lambda logits, iters: torch.ones_like(logits))
    assert_same_logits(ours, theirs, V, extra=[_copy_stream], grads=True)


def test_qkv_views_agree_with_xtransformers_given_its_stream_mixing(monkeypatch):
    """Three inputs for queries, keys and values: x-transformers' layout, once its all-ones mixing is put in."""
    from labml_style_nn.residual import hyper_connections

    kwargs = dict(dim=32, depth=2, heads=4, attn_dim_head=8, num_residual_streams=2, qkv_receive_diff_residuals=True)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", kwargs)
    for _, _, hc in theirs.attn_layers.layers:
        with torch.no_grad():
            hc.dynamic_alpha_fn.normal_()  # the three views differ
    monkeypatch.setattr(hyper_connections, "sinkhorn", lambda logits, iters: torch.ones_like(logits))
    assert_same_logits(ours, theirs, V, extra=[_copy_stream])
    assert ours.attn_layers.blocks[0].residual.static_alpha.shape == (2, 3 + 2)


def test_lime_over_hyper_connections_agrees_with_xtransformers_given_its_stream_mixing(monkeypatch):
    """LIMe mixes what each hyper-connection reads (x-transformers' `layer_hiddens`), with qkv views from LIMe."""
    from labml_style_nn.residual import hyper_connections

    kwargs = dict(dim=32, depth=2, heads=4, attn_dim_head=8, num_residual_streams=4, integrate_layers=True)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)
    monkeypatch.setattr(hyper_connections, "sinkhorn", lambda logits, iters: torch.ones_like(logits))
    assert_same_logits(ours, theirs, V, extra=[_copy_stream], grads=True)
    assert ours.attn_layers.integrations[2].views == 3  # the second self-attention reads three mixes


def test_orthogonal_update_per_token_agrees_with_xtransformers_only_on_single_tokens():
    from labml_style_nn.residual.orthogonal_residual import OrthogonalResidual

    r = OrthogonalResidual(DIM)
    x, f = torch.randn(2, 5, DIM), torch.randn(2, 5, DIM)
    out = r(f, x)
    assert ((out - x) * x).sum(-1).abs().max() < 1e-4  # the update is orthogonal to each token's stream
    # Weight-copied parity holds on one token, where x-transformers' whole-sequence projection is per token.
    kwargs = dict(dim=32, depth=2, heads=4, attn_dim_head=8, orthog_residual=True, scale_residual=True)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", kwargs)
    assert_same_logits(ours, theirs, V, seq_len=1, batch=3, pad=False, extra=[_copy_stream], grads=True)
    # On sequences x-transformers' decoder sees the future: changing the last token changes the first's output.
    ids = torch.randint(0, V, (1, 6))
    later = ids.clone()
    later[0, -1] = (later[0, -1] + 1) % V
    assert (theirs(ids)[0, 0] - theirs(later)[0, 0]).abs().max() > 1e-4
    torch.testing.assert_close(ours(ids)[0, :5], ours(later)[0, :5])
