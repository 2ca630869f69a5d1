"""Closed-form properties of each attention technique, checked on the `Attention` module itself."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from labml_style_nn.attention.attention import Attention
from labml_style_nn.attention.entmax15 import Entmax15
from labml_style_nn.attention.gate_values import ValueGate
from labml_style_nn.attention.head_scale import HeadScale
from labml_style_nn.attention.qk_norm import QKNorm, initial_temperature
from labml_style_nn.attention.sparse_topk import SparseTopK
from labml_style_nn.attention.talking_heads import TalkingHeads
from labml_style_nn.memory.persistent_memory import PersistentMemory
from labml_style_nn.models.layers import Decoder, Encoder

DIM, H, D = 32, 4, 8


def _mask(b=2, n=10):
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, :3] = False
    return mask


def _visible(mask, causal):
    """`(b, 1, i, j)` boolean: which keys each query may see."""
    n = mask.shape[-1]
    vis = mask[:, None, None, :].expand(-1, 1, n, -1)
    if causal:
        vis = vis & torch.ones(n, n, dtype=torch.bool).tril()
    return vis


def _capture_weights(attn):
    """Record the normalised weights of the next forward (after masking, before dropout)."""
    captured = []
    if attn.score_transform is not None:
        post = attn.score_transform.post_softmax
        attn.score_transform.post_softmax = lambda w: captured.append(w) or post(w)
    else:
        attn.normaliser.register_forward_hook(lambda m, i, o: captured.append(o))
    return captured


def _plain_and(module_kwargs, causal=True):
    """A plain attention layer and one with a technique, sharing every common weight."""
    plain = Attention(DIM, heads=H, dim_head=D, causal=causal)
    other = Attention(DIM, heads=H, dim_head=D, causal=causal, **module_kwargs)
    missing, unexpected = other.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    return plain, other


#
# Top-k: exactly k non-zero weights per row, fewer only where fewer keys are visible.
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_k_keeps_exactly_k_weights_per_row(k, causal):
    attn = Attention(DIM, heads=H, dim_head=D, causal=causal, score_transform=SparseTopK(k))
    weights = _capture_weights(attn)
    mask = _mask()
    attn(torch.randn(2, 10, DIM), mask=mask)
    nonzero = (weights[0] > 0).sum(-1)  # (b, h, i)
    n_visible = _visible(mask, causal).sum(-1).expand_as(nonzero)
    assert torch.equal(nonzero, torch.minimum(n_visible, torch.full_like(n_visible, k)))
    # The surviving keys are visible ones, and they are the k highest-scoring visible ones.
    assert not (weights[0] > 0)[~_visible(mask, causal).expand_as(weights[0])].any()


def test_top_k_from_keywords_selects_the_largest_scores():
    model = Decoder(dim=DIM, depth=1, heads=H, attn_dim_head=D, attn_sparse_topk=2)
    attn = model.blocks[0].fn
    weights = _capture_weights(attn)
    x = torch.randn(1, 6, DIM)
    _, scores = attn(x, return_scores=True)
    vis = _visible(torch.ones(1, 6, dtype=torch.bool), True)
    ref_scores = scores.masked_fill(~vis, float("-inf"))
    top = ref_scores.topk(2, dim=-1).indices
    kept = torch.zeros_like(ref_scores, dtype=torch.bool).scatter_(-1, top, True) & vis
    ref = ref_scores.masked_fill(~kept, float("-inf")).softmax(-1)
    torch.testing.assert_close(weights[0], ref)


#
# entmax-1.5: rows sum to one and hold exact zeros.
@pytest.mark.parametrize("causal", [False, True])
def test_entmax_rows_sum_to_one_with_exact_zeros(causal):
    attn = Attention(DIM, heads=H, dim_head=D, causal=causal, normaliser=Entmax15())
    weights = _capture_weights(attn)
    mask = _mask()
    attn(torch.randn(2, 10, DIM) * 4, mask=mask)
    # The hook sees the normaliser's output; rows with no visible key are zeroed after it.
    vis = _visible(mask, causal).expand(-1, H, -1, -1)
    rows = vis.any(-1)
    w, vis = weights[0][rows], vis[rows]  # (rows, j)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert (w[~vis] == 0).all()
    # Sparsity beyond the mask: visible keys with weight exactly zero.
    assert (w[vis] == 0).sum() > 0
    assert (w >= 0).all()


#
# Talking heads: identity mixing is plain attention; any mixing matches a reference in the test.
def test_talking_heads_identity_equals_plain_attention():
    plain, talking = _plain_and(dict(score_transform=TalkingHeads(H)))
    x, mask = torch.randn(2, 10, DIM), _mask()
    torch.testing.assert_close(talking(x, mask=mask)[0], plain(x, mask=mask)[0], atol=1e-6, rtol=1e-5)


def test_talking_heads_matches_reference():
    plain, talking = _plain_and(dict(score_transform=TalkingHeads(H)))
    with torch.no_grad():
        talking.score_transform.pre.copy_(torch.randn(H, H))
        talking.score_transform.post.copy_(torch.randn(H, H))
    x, mask = torch.randn(2, 10, DIM), _mask()
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=H) for t in talking.to_qkv(x).chunk(3, dim=-1))
    s = (q @ k.transpose(-1, -2)) * D ** -0.5
    s = torch.einsum("bhij,hg->bgij", s, talking.score_transform.pre)
    a = s.masked_fill(~_visible(mask, True), float("-inf")).softmax(-1).nan_to_num(0.0)  # empty rows: 0
    a = torch.einsum("bhij,hg->bgij", a, talking.score_transform.post)
    ref = talking.to_out(rearrange(a @ v, "b h n d -> b n (h d)"))
    out = talking(x, mask=mask)[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert (out - plain(x, mask=mask)[0]).abs().max() > 1e-2


#
# Value gating and head scale at initialisation.
def test_value_gate_at_init_scales_by_sigmoid_of_its_bias():
    x, mask = torch.randn(2, 10, DIM), _mask()
    # AlphaFold's form: zero weights and bias 10, the gate is $\sigma(10)$ everywhere, a near pass-through.
    plain, gated = _plain_and(dict(output_gate=ValueGate(DIM, H, D, input_bias=10.0)))
    torch.testing.assert_close(gated(x, mask=mask)[0], torch.sigmoid(torch.tensor(10.0)) * plain(x, mask=mask)[0])
    # x-transformers 2.31's form: no bias, zero weights, the gate is $\sigma(0) = 1/2$.
    plain, gated = _plain_and(dict(output_gate=ValueGate(DIM, H, D)))
    torch.testing.assert_close(gated(x, mask=mask)[0], 0.5 * plain(x, mask=mask)[0])


@pytest.mark.parametrize("keyword", ["attn_gate_values", "gate_values"])
def test_value_gate_from_keywords(keyword):
    plain = Encoder(dim=DIM, depth=2, heads=H, attn_dim_head=D)
    x = torch.randn(2, 10, DIM)
    for extra, bias in (({}, None), (dict(attn_gate_values_bias=10.0), 10.0)):
        gated = Encoder(dim=DIM, depth=2, heads=H, attn_dim_head=D, **{keyword: True}, **extra)
        gated.load_state_dict(plain.state_dict(), strict=False)
        gate = gated.blocks[0].fn.output_gate
        assert isinstance(gate, ValueGate) and (gate.to_gate.proj.weight == 0).all()
        if bias is None:
            assert gate.to_gate.proj.bias is None
            assert (gated(x) - plain(x)).abs().max() > 1e-2  # every gate at one half
        else:
            assert (gate.to_gate.proj.bias == bias).all()
            torch.testing.assert_close(gated(x), plain(x), atol=1e-3, rtol=1e-3)


def test_head_scale_at_init_is_plain_attention_and_scales_heads():
    plain, scaled = _plain_and(dict(output_gate=HeadScale(H)))
    x, mask = torch.randn(2, 10, DIM), _mask()
    torch.testing.assert_close(scaled(x, mask=mask)[0], plain(x, mask=mask)[0])
    # $\gamma_h = 0$ silences head $h$: zeroing the matching input columns of $W_O$ does the same.
    with torch.no_grad():
        scaled.output_gate.scale[0, 1] = 0.0
        plain.to_out.weight[:, D:2 * D] = 0.0
    torch.testing.assert_close(scaled(x, mask=mask)[0], plain(x, mask=mask)[0])


#
# Persistent memory: attended even when every real key is masked.
@pytest.mark.parametrize("causal", [False, True])
def test_memory_key_values_attended_when_every_real_key_is_masked(causal):
    n_mem = 3
    attn = Attention(DIM, heads=H, dim_head=D, causal=causal, memory_kv=PersistentMemory(H, D, D, n_mem))
    x = torch.randn(2, 5, DIM)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    out = attn(x, mask=mask)[0]
    # Closed form: $o_i = W_O\, \operatorname{softmax}(q_i M_K^\top / \sqrt d)\, M_V$
    q = rearrange(attn.to_qkv(x).chunk(3, dim=-1)[0], "b n (h d) -> b h n d", h=H)
    a = (q @ attn.memory_kv.keys.transpose(-1, -2) * D ** -0.5).softmax(-1)
    ref = attn.to_out(rearrange(a @ attn.memory_kv.values, "b h n d -> b n (h d)"))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert out.abs().max() > 1e-2
    # The explicit path agrees.
    torch.testing.assert_close(attn(x, mask=mask, return_scores=True)[0], out, atol=1e-5, rtol=1e-4)


def test_without_memory_a_fully_masked_row_gives_zeros_not_nan():
    attn = Attention(DIM, heads=H, dim_head=D)
    out = attn(torch.randn(1, 4, DIM), mask=torch.zeros(1, 4, dtype=torch.bool))[0]
    assert torch.equal(out, torch.zeros_like(out))


#
# qk-norm: the temperature bounds the scores, and starts at $\log_2(L^2 - L)$.
@pytest.mark.parametrize("with_memory", [False, True])
def test_qk_norm_scores_bounded_by_temperature(with_memory):
    extra = dict(memory_kv=PersistentMemory(H, D, D, 2)) if with_memory else {}
    attn = Attention(DIM, heads=H, dim_head=D, scale=1.0, qk_transform=QKNorm(16), **extra)
    with torch.no_grad():
        attn.qk_transform.temperature.fill_(2.5)
    _, scores = attn(torch.randn(2, 12, DIM) * 10, return_scores=True)
    assert scores.abs().max() <= 2.5 * (1 + 1e-5)
    assert scores.abs().max() > 0.5 * 2.5


def test_qk_norm_temperature_initialised_from_sequence_length():
    assert initial_temperature(16) == pytest.approx(math.log2(240))
    model = Decoder(dim=DIM, depth=2, heads=H, use_qk_norm_attn=True, qk_norm_attn_seq_len=1024)
    for block in model.blocks:
        if block.kind == "a":
            assert block.fn.scale == 1.0
            assert block.fn.qk_transform.temperature.item() == pytest.approx(math.log2(1024 ** 2 - 1024))
    # Without a sequence length, x-transformers' meaning: a fixed scale of 10 and nothing learned.
    default = Decoder(dim=DIM, depth=1, heads=H, use_qk_norm_attn=True)
    attn = default.blocks[0].fn
    assert attn.scale == 10.0 and attn.qk_transform.temperature is None
    assert not list(attn.qk_transform.parameters())


def test_qk_norm_is_cosine_similarity_times_temperature():
    attn = Attention(DIM, heads=H, dim_head=D, scale=1.0, qk_transform=QKNorm(16))
    x = torch.randn(1, 6, DIM)
    _, scores = attn(x, return_scores=True)
    q, k, _ = (rearrange(t, "b n (h d) -> b h n d", h=H) for t in attn.to_qkv(x).chunk(3, dim=-1))
    ref = F.cosine_similarity(q[..., :, None, :], k[..., None, :, :], dim=-1) * initial_temperature(16)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
