"""Positions inside attention: CoPE, the Forgetting Transformer's gates, the relative projection bias,
rotary positions on some heads, and the sliding window of an encoder."""

import pytest
import torch
from attn_sweep import DIM, check_keywords, make
from xt_parity import assert_same_logits, build_pair

from labml_style_nn.positional.cope import CoPE, contextual_positions


def _cope_table(model):
    for block in model.blocks:
        if block.kind == "a":
            block.fn.score_transform.pos_emb.normal_()


SWEEPS = {
    "cope": (dict(attn_use_cope=True, attn_cope_max_pos=4), "decoder", dict(fused=False, perturb=_cope_table)),
    "cope_soft_talking": (dict(attn_use_cope=True, attn_cope_soft_onehot_pos=True, attn_cope_talking_heads=True),
                          "decoder", dict(fused=False, perturb=_cope_table)),
    "forget_gates": (dict(attn_data_dependent_alibi=True, attn_data_dependent_alibi_kwargs=dict(bias_init=0.0)),
                     "decoder", dict(fused=True)),
    "forget_gates_encoder": (dict(attn_data_dependent_alibi=True), "encoder", dict(fused=True)),
    "forget_gates_per_row": (dict(attn_data_dependent_alibi=True, attn_data_dependent_alibi_per_row=True),
                             "decoder", dict(fused=True)),
    "rel_proj": (dict(attn_use_rel_proj_pos_bias=True, attn_rel_proj_max_dist=4, attn_data_dependent_alibi=True),
                 "decoder", dict(fused=True)),
    "rel_proj_encoder": (dict(attn_use_rel_proj_pos_bias=True), "encoder", dict(fused=True)),
    "rotate_num_heads": (dict(rotary_pos_emb=True, rotate_num_heads=1), "decoder", dict(fused=True)),
    "window_encoder": (dict(attn_max_attend_past=2), "encoder", dict(fused=True)),
}


@pytest.mark.parametrize("name", SWEEPS)
def test_keyword_acts_and_keeps_the_invariants(name):
    kwargs, kind, options = SWEEPS[name]
    # causal, padding-invariant, cached steps equal the full pass (asserted inside); and the keywords act
    assert check_keywords(kwargs, kind, **options) > 1e-4


def _pairs(ours, theirs):
    return [(b.fn, fn) for b, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True)
            if b.kind == "a"]


def _cope(ours, theirs, put):
    for mine, fn in _pairs(ours, theirs):
        fn.attend.cope.pos_emb.data.normal_()
        put(mine.score_transform.pos_emb, fn.attend.cope.pos_emb)
        if mine.score_transform.talking_heads is not None:
            put(mine.score_transform.talking_heads.weight, fn.attend.cope.talking_heads.weight)


def _forget(ours, theirs, put):
    for mine, fn in _pairs(ours, theirs):
        linear = fn.data_dependent_alibi.to_forget_gates[0]
        put(mine.score_bias.to_gates.weight, linear.weight)
        if linear.bias is not None:
            put(mine.score_bias.to_gates.bias, linear.bias)


def _rel_proj(ours, theirs, put):
    for mine, fn in _pairs(ours, theirs):
        theirs_bias = fn.rel_proj_pos_bias
        put(mine.score_bias.to_weights.weight, theirs_bias.to_distance_weights[0].weight)
        put(mine.score_bias.to_weights.bias, theirs_bias.to_distance_weights[0].bias)
        put(mine.score_bias.curves, theirs_bias.distance_bank)


PARITY = {
    "cope": ("Decoder", dict(attn_use_cope=True, attn_cope_max_pos=4, attn_cope_talking_heads=True), _cope),
    "forget_gates": ("Decoder", dict(attn_data_dependent_alibi=True,
                                     attn_data_dependent_alibi_kwargs=dict(bias_init=1.0)), _forget),
    "forget_gates_encoder": ("Encoder", dict(attn_data_dependent_alibi=True, attn_data_dependent_alibi_kwargs=dict(
        bias_init=1.0, post_log_scale=2.0)), _forget),
    "forget_gates_per_row": ("Decoder", dict(attn_data_dependent_alibi=True, attn_data_dependent_alibi_per_row=True,
                                             attn_data_dependent_alibi_per_row_dim_head=4), _forget),
    "rel_proj": ("Decoder", dict(attn_use_rel_proj_pos_bias=True, attn_rel_proj_max_dist=5,
                                 attn_rel_proj_num_distance_basis=3), _rel_proj),
    "rel_proj_encoder": ("Encoder", dict(attn_use_rel_proj_pos_bias=True), _rel_proj),
    "rotate_num_heads": ("Decoder", dict(rotary_pos_emb=True, rotary_emb_dim=4, rotate_num_heads=2), None),
}


@pytest.mark.parametrize("name", PARITY)
def test_parity_with_x_transformers(name):
    stack, kwargs, extra = PARITY[name]
    ours, theirs = build_pair(dict(num_tokens=32, max_seq_len=16), stack,
                              dict(dim=32, depth=2, heads=4, attn_dim_head=8, **kwargs))
    assert_same_logits(ours, theirs, 32, extra=[extra] if extra else (), grads=name in ("cope", "forget_gates"))


def test_cope_soft_one_hot_against_a_reference():
    """x-transformers' soft one-hot fails on 4-d positions (its `einx.subtract('i, j -> i j')`), so ours is
    checked against the formula: each score gains sum_p softmax_p(-|p_ij - p| / t) q_i.e[p]."""
    cope = CoPE(heads=1, dim_head=4, max_pos=3, soft_onehot=True)
    with torch.no_grad():
        cope.pos_emb.normal_()
    q, scores = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 3)
    visible = torch.ones(3, 3, dtype=torch.bool).tril()
    cope.bind(q=q)
    got = cope.pre_softmax(scores, visible)
    gates = scores.masked_fill(~visible, -torch.finfo(scores.dtype).max).sigmoid()
    for i in range(3):
        for j in range(i + 1):
            p = gates[0, 0, i, j:].sum().clamp(max=2)
            onehot = torch.softmax(-(p - torch.arange(3.0)).abs() / 0.05, dim=-1)
            expected = scores[0, 0, i, j] + (onehot * (cope.pos_emb @ q[0, 0, i])).sum()
            torch.testing.assert_close(got[0, 0, i, j], expected, atol=1e-5, rtol=1e-5)


def test_contextual_positions_count_open_gates():
    gates = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert contextual_positions(gates, 16).tolist() == [[2.0, 2.0, 1.0, 1.0]]
    assert contextual_positions(gates, 2).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_constant_forget_gate_is_alibi():
    """A gate that ignores its input, sigma(b), gives the bias (i - j) log sigma(b): ALiBi's line."""
    model = make("decoder", attn_data_dependent_alibi=True, attn_data_dependent_alibi_kwargs=dict(bias_init=-1.0))
    gates = model.blocks[0].fn.score_bias
    with torch.no_grad():
        gates.to_gates.weight.zero_()
    bias = gates(torch.randn(1, 5, DIM), torch.randn(1, 5, DIM), 0, None)[0, 0]
    i, j = torch.arange(5)[:, None], torch.arange(5)[None, :]
    slope = torch.nn.functional.logsigmoid(torch.tensor(-1.0))
    torch.testing.assert_close(bias.tril(), ((i - j) * slope).float().tril())


def test_relative_projection_bias_is_zero_beyond_its_distances():
    model = make("encoder", attn_use_rel_proj_pos_bias=True, attn_rel_proj_max_dist=2)
    bias = model.blocks[0].fn.score_bias(torch.randn(1, 5, DIM), None, 0, None)[0, 0]
    i, j = torch.arange(5)[:, None], torch.arange(5)[None, :]
    outside = (i - j < 0) | (i - j >= 2)
    assert (bias[outside] == 0).all() and (bias[~outside] != 0).all()


def test_unrotated_heads_ignore_position():
    """A content head's scores are the same whatever the position; a rotated head's are not."""
    model = make("decoder", rotary_pos_emb=True, rotate_num_heads=1)
    x = torch.randn(1, 1, DIM).expand(1, 6, DIM)  # one token repeated: only positions differ
    _, scores = model.blocks[0].fn(x, shared=model.shared_inputs(6, 0, False, x.device), return_scores=True)
    content, rotated = scores[0, 0], scores[0, 1]
    assert torch.allclose(content, content[0, 0].expand_as(content))
    assert not torch.allclose(rotated[-1, :], rotated[-1, 0].expand(6))


def test_encoder_window_sees_the_whole_future_and_w_tokens_back():
    attn = make("encoder", attn_max_attend_past=2).blocks[0].fn
    visible, _ = attn._visibility(torch.zeros(1, 1, 5, 8), torch.zeros(1, 1, 5, 8), None, 0, 0)
    i, j = torch.arange(5)[:, None], torch.arange(5)[None, :]
    assert torch.equal(visible[0, 0], i - j <= 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(attn_cope_max_pos=4), "attn_cope_max_pos: only meaningful"),
    (dict(attn_use_cope=True), "attn_use_cope and causal=False"),
    (dict(attn_data_dependent_alibi=True, attn_data_dependent_alibi_kwargs=dict(slope=1.0)), "unknown key 'slope'"),
    (dict(attn_data_dependent_alibi=True, attn_data_dependent_alibi_per_row=True), "per-row gates are causal"),
    (dict(attn_data_dependent_alibi=True, alibi_pos_emb=True), "both position biases"),
    (dict(attn_rel_proj_max_dist=4), "attn_rel_proj_max_dist: only meaningful"),
    (dict(rotate_num_heads=1), "rotate_num_heads: only meaningful with rotary_pos_emb"),
    (dict(rotary_pos_emb=True, rotate_num_heads=1, attn_rotate_num_heads=1), "choose one"),
    (dict(rotary_pos_emb=True, rotate_num_heads=1, attn_kv_heads=1), "shared key/value head"),
    (dict(cross_attend=True, cross_attn_use_rel_proj_pos_bias=True), "applies to self-attention only"),
])
def test_meaningless_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make("encoder", **kwargs)
