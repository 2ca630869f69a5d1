"""x-transformers' other scoring functions: each keyword acts, keeps the invariants (`tests/attn_sweep.py`),
matches x-transformers 2.31.10 with weights copied, and computes what its page says."""

import pytest
import torch
from attn_sweep import DIM, DIM_HEAD, HEADS, check_keywords, make
from xt_parity import assert_same_logits, build_pair, copy_weights

from labml_style_nn.attention.attention import Attention
from labml_style_nn.attention.cog_attention import CogSigned
from labml_style_nn.attention.hard_attention import HardAttention
from labml_style_nn.attention.inverted_attention import InvertedSoftmax
from labml_style_nn.attention.l2_distance import L2DistanceQK
from labml_style_nn.attention.laser import Laser
from labml_style_nn.attention.learned_sink import LearnedSink
from labml_style_nn.attention.sparse_topk import SparseTopKSoftmax


def _sink(model):
    for block in model.blocks:
        if block.kind == "a":
            block.fn.normaliser.sink.normal_()


# keyword set -> (kind, sweep options)
SWEEPS = {
    "sigmoid": (dict(attn_sigmoid=True), "decoder", dict(fused=False)),
    "hard": (dict(attn_hard=True), "decoder", dict(fused=False)),
    "gumbel": (dict(attn_gumbel_softmax=True, attn_gumbel_softmax_temp=0.5), "decoder",
               dict(reseed=True, cache=False)),
    "topk_straight_through": (dict(attn_sparse_topk=2, attn_sparse_topk_straight_through=True), "decoder",
                              dict(fused=False)),
    "l2_distance": (dict(attn_l2_distance=True), "decoder", dict(fused=True)),
    "l2_distance_encoder": (dict(attn_l2_distance=True, attn_num_mem_kv=1), "encoder", dict(fused=True)),
    "selective": (dict(attn_selective=True), "decoder", dict(fused=False)),
    "cog_signed": (dict(attn_cog_signed=True), "decoder", dict(fused=False)),
    "inverted": (dict(attn_inverted_attention=True), "encoder", dict(fused=False)),
    "softclamp": (dict(attn_softclamp_logits=True, attn_logit_softclamp_value=0.5), "decoder", dict(fused=False)),
    "laser": (dict(attn_laser=True, attn_laser_softclamp_value=2.0), "decoder", dict(fused=True)),
    "zero_kv": (dict(attn_add_zero_kv=True), "decoder", dict(fused=True)),
    "learned_sink": (dict(attn_head_learned_sink=True, attn_cog_signed=True), "decoder",
                     dict(fused=False, perturb=_sink)),
}


@pytest.mark.parametrize("name", SWEEPS)
def test_keyword_acts_and_keeps_the_invariants(name):
    kwargs, kind, options = SWEEPS[name]
    # causal, padding-invariant, cached steps equal the full pass (asserted inside); and the keywords act
    assert check_keywords(kwargs, kind, **options) > 1e-4


def _sink_weights(ours, theirs, put):
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind == "a":
            fn.attend.head_attn_sink.data.normal_()
            put(block.fn.normaliser.sink, fn.attend.head_attn_sink)


PARITY = {
    "sigmoid": dict(attn_sigmoid=True),
    "hard": dict(attn_hard=True),
    "topk_straight_through": dict(attn_sparse_topk=3, attn_sparse_topk_straight_through=True),
    "l2_distance": dict(attn_l2_distance=True),
    "selective": dict(attn_selective=True),
    "cog_signed": dict(attn_cog_signed=True),
    "softclamp": dict(attn_softclamp_logits=True, attn_logit_softclamp_value=0.5),
    "laser": dict(attn_laser=True, attn_laser_softclamp_value=2.0),
    "zero_kv": dict(attn_add_zero_kv=True),
    "learned_sink": dict(attn_head_learned_sink=True),
}


@pytest.mark.parametrize("name", PARITY)
def test_parity_with_x_transformers(name):
    ours, theirs = build_pair(dict(num_tokens=32, max_seq_len=16), "Decoder",
                              dict(dim=32, depth=2, heads=4, attn_dim_head=8, **PARITY[name]))
    assert_same_logits(ours, theirs, 32, extra=[_sink_weights] if name == "learned_sink" else (),
                       grads=name in ("l2_distance", "topk_straight_through"))


@pytest.mark.parametrize("hard", [True, False])
def test_gumbel_softmax_parity_under_the_same_draws(hard):
    """Both libraries draw the noise with `F.gumbel_softmax` in the same order: the same seed, the same logits."""
    ours, theirs = build_pair(dict(num_tokens=32, max_seq_len=16), "Decoder",
                              dict(dim=32, depth=2, heads=4, attn_dim_head=8, attn_gumbel_softmax=True,
                                   attn_gumbel_softmax_hard=hard, attn_gumbel_softmax_temp=0.5))
    copy_weights(ours, theirs)
    x = torch.randint(0, 32, (2, 10))
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    torch.testing.assert_close(a, theirs(x), atol=1e-5, rtol=1e-4)


def test_inverted_attention_parity_in_cross_attention():
    """x-transformers applies inverted attention to cross-attention (`cross_attn_inverted_attention`); its
    stacks drop `attn_inverted_attention`, so self-attention is compared on its `Attention` module below."""
    ours, theirs = build_pair(dict(num_tokens=32, max_seq_len=16), "Encoder",
                              dict(dim=32, depth=1, heads=4, attn_dim_head=8, cross_attend=True,
                                   cross_attn_inverted_attention=True))
    assert_same_logits(ours, theirs, 32, context=torch.randn(2, 5, 32))


def test_inverted_self_attention_parity_on_the_attention_module():
    from x_transformers.x_transformers import Attention as TheirAttention

    theirs = TheirAttention(DIM, heads=HEADS, dim_head=DIM_HEAD, inverted_attention=True)
    ours = Attention(DIM, heads=HEADS, dim_head=DIM_HEAD, normaliser=InvertedSoftmax())
    with torch.no_grad():
        ours.to_qkv.weight.copy_(torch.cat([theirs.to_q.weight, theirs.to_k.weight, theirs.to_v.weight]))
        ours.to_out.weight.copy_(theirs.to_out.weight)
    x, mask = torch.randn(2, 7, DIM), torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    torch.testing.assert_close(ours(x, mask=mask)[0][mask], theirs(x, mask=mask)[mask], atol=1e-5, rtol=1e-4)


#
# What each page says.
def test_hard_is_one_hot_forward_and_softmax_backward():
    scores = torch.randn(3, 5, requires_grad=True)
    weights = HardAttention()(scores)
    assert torch.equal(weights, torch.zeros(3, 5).scatter(-1, scores.argmax(-1, keepdim=True), 1.0))
    target = torch.randn(3, 5)
    grad, = torch.autograd.grad((weights * target).sum(), scores)
    expected, = torch.autograd.grad((scores.softmax(-1) * target).sum(), scores)
    torch.testing.assert_close(grad, expected)


def test_top_k_straight_through_gets_gradient_outside_the_top_k():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]], requires_grad=True)
    weights = SparseTopKSoftmax(2)(scores)
    assert (weights[0, 2:] == 0).all()
    grad, = torch.autograd.grad(weights[0, 0], scores)
    assert grad[0, 2:].abs().min() > 0  # the dropped keys still learn


def test_l2_scores_are_negative_squared_distances():
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4)
    t = L2DistanceQK()
    torch.testing.assert_close(t.queries(q) @ t.keys(k).transpose(-1, -2), -torch.cdist(q, k) ** 2,
                               atol=1e-4, rtol=1e-4)


def test_sigmoid_weights_are_independent_per_key():
    model = make("decoder", attn_sigmoid=True)
    sink: list = []
    model(torch.randn(1, 6, DIM), attn_sink=sink)
    weights = sink[0]
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))  # the future gets exactly 0
    assert not torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)))  # rows need not sum to 1


def test_cog_attention_gives_negative_weights_with_unit_absolute_sum():
    cog = CogSigned()
    scores = torch.tensor([[2.0, -2.0, 0.5]])
    weights = cog.post_softmax(cog.pre_softmax(scores, None).softmax(-1))
    assert weights[0, 1] < 0 and torch.isclose(weights.abs().sum(), torch.tensor(1.0))


def test_inverted_attention_normalises_over_queries_and_padded_queries_do_not_compete():
    scores = torch.randn(1, 1, 4, 3)
    query_mask = torch.tensor([[True, True, True, False]])
    weights = InvertedSoftmax()(scores, None, query_mask)
    torch.testing.assert_close(weights[..., :3, :].sum(-1), torch.ones(1, 1, 3))
    alone = InvertedSoftmax()(scores[..., :3, :], None, None)
    torch.testing.assert_close(weights[..., :3, :], alone)


def test_inverted_attention_is_refused_on_causal_stacks():
    with pytest.raises(ValueError, match="attn_inverted_attention and causal"):
        make("decoder", attn_inverted_attention=True)


def test_softclamp_bounds_the_scores():
    model = make("decoder", attn_softclamp_logits=True, attn_logit_softclamp_value=0.3)
    _, scores = model.blocks[0].fn(torch.randn(1, 5, DIM) * 50, return_scores=True)
    transformed = model.blocks[0].fn.score_transform.pre_softmax(scores, None)
    assert scores.abs().max() > 1.0 and transformed.abs().max() <= 0.3


def test_laser_is_a_log_of_the_weighted_exponentials():
    laser = Laser(100.0)
    weights, v = torch.tensor([0.25, 0.75]), torch.tensor([[1.0], [-2.0]])
    out = laser.output(weights @ laser.values(v))
    torch.testing.assert_close(out, torch.log(0.25 * torch.exp(torch.tensor([1.0])) + 0.75 * torch.exp(
        torch.tensor([-2.0]))), atol=1e-5, rtol=1e-4)


def test_zero_kv_lets_weights_sum_to_less_than_one():
    model = make("encoder", attn_add_zero_kv=True)
    sink: list = []
    model(torch.randn(1, 5, DIM), attn_sink=sink)
    real = sink[0][..., 1:].sum(-1)  # the zero slot comes first
    assert (real < 1).all() and (real > 0).all()


def test_learned_sink_takes_weight_from_the_keys():
    sink = LearnedSink(2)
    with torch.no_grad():
        sink.sink.copy_(torch.tensor([0.0, 2.0]))
    weights = sink(torch.zeros(1, 2, 1, 2))
    torch.testing.assert_close(weights[0, :, 0].sum(-1), torch.tensor([2 / 3, 2 / (2 + 2.718281828 ** 2)]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(attn_sigmoid=True, attn_hard=True), "each replace the softmax"),
    (dict(attn_logit_softclamp_value=3.0), "attn_logit_softclamp_value: only meaningful"),
    (dict(attn_gumbel_softmax_temp=0.5), "attn_gumbel_softmax_temp: only meaningful"),
    (dict(attn_laser_softclamp_value=3.0), "attn_laser_softclamp_value: only meaningful"),
    (dict(attn_sparse_topk_straight_through=True), "only meaningful with attn_sparse_topk"),
    (dict(attn_selective=True), "attn_selective and causal=False"),
    (dict(attn_l2_distance=True, attn_qk_norm=True), "attn_l2_distance and attn_qk_norm"),
])
def test_meaningless_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make("encoder", **kwargs)
