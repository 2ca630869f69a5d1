"""Relative multi-head attention: the shift trick, parity with a direct reference, masking and errors."""

import math

import pytest
import torch

from labml_style_nn.transformer_xl import RelativeMultiHeadAttention, relative_shift
from labml_style_nn.transformer_xl.transformer_xl import causal_mask_with_memory


def reference_r(attn: RelativeMultiHeadAttention, distance: int) -> torch.Tensor:
    """$R_\\delta = W_R r_\\delta$ for one distance, written from the paper's formula: `[h, d]`."""
    d_model = attn.d_model
    r = torch.empty(d_model)
    half = (d_model + 1) // 2
    for k in range(half):
        angle = distance / 10_000 ** (2 * k / d_model)
        r[k] = math.sin(angle)
        if half + k < d_model:
            r[half + k] = math.cos(angle)
    return (attn.pos_proj.weight @ r).view(attn.heads, attn.d_k)


def reference_attention(attn, query, key, value, mask):
    """The four terms A + B + C + D by explicit loops over (i, j), a masked softmax, zeros for empty rows."""
    n, b, _ = query.shape
    klen, m = key.shape[0], key.shape[0] - query.shape[0]
    h, dk = attn.heads, attn.d_k
    q = attn.query(query).view(n, b, h, dk)
    k = attn.key(key).view(klen, b, h, dk)
    v = attn.value(value).view(klen, b, h, dk)
    scores = torch.empty(n, klen, b, h)
    for i in range(n):
        for j in range(klen):
            r = reference_r(attn, m + i - j)  # (h, d)
            a = (q[i] * k[j]).sum(-1)
            bb = (q[i] * r).sum(-1)
            c = (attn.u * k[j]).sum(-1)
            d = (attn.v * r).sum(-1)
            scores[i, j] = (a + bb + c + d) / math.sqrt(dk)
    full = mask.expand(n, klen, b).unsqueeze(-1)
    scores = scores.masked_fill(~full, float("-inf"))
    probs = torch.nan_to_num(scores.softmax(dim=1), nan=0.0)
    out = torch.einsum("ijbh,jbhd->ibhd", probs, v).reshape(n, b, h * dk)
    return attn.output(out)


def make_attn(heads=2, d_model=8, seed=0):
    torch.manual_seed(seed)
    attn = RelativeMultiHeadAttention(heads, d_model, 0.0)
    with torch.no_grad():
        attn.u.normal_()
        attn.v.normal_()
    return attn.eval()


def test_relative_shift_worked_example():
    x = torch.arange(1, 13).view(3, 4)
    assert relative_shift(x).tolist() == [[3, 4, 0, 5], [6, 7, 8, 0], [9, 10, 11, 12]]


@pytest.mark.parametrize("seq_len,mem_len", [(1, 0), (3, 0), (3, 2), (4, 5), (2, 7)])
def test_shift_equals_direct_relative_scores(seq_len, mem_len):
    attn = make_attn(seed=seq_len * 10 + mem_len)
    klen = seq_len + mem_len
    q = torch.randn(seq_len, 2, attn.heads, attn.d_k)
    got = attn.position_scores(q, klen)  # (q_i + v) . R_{m+i-j}
    want = torch.empty_like(got)
    for i in range(seq_len):
        for j in range(klen):
            want[i, j] = ((q[i] + attn.v) * reference_r(attn, mem_len + i - j)).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("seq_len,mem_len,causal", [(3, 0, True), (4, 3, True), (3, 2, False)])
def test_attention_matches_reference(fused, seq_len, mem_len, causal):
    attn = make_attn(heads=2, d_model=8, seed=1)
    attn.fused = fused
    b = 2
    query = torch.randn(seq_len, b, 8)
    key = torch.randn(mem_len + seq_len, b, 8)
    value = torch.randn(mem_len + seq_len, b, 8)
    if causal:
        mask = causal_mask_with_memory(seq_len, mem_len)
    else:
        mask = torch.rand(seq_len, mem_len + seq_len, b) > 0.4
        mask[0] = False  # a query that sees nothing
    with torch.no_grad():
        got = attn(query=query, key=key, value=value, mask=mask)
        want = reference_attention(attn, query, key, value, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fused_equals_explicit():
    attn = make_attn(seed=2)
    x, mem = torch.randn(5, 3, 8), torch.randn(4, 3, 8)
    kv = torch.cat([mem, x])
    mask = causal_mask_with_memory(5, 4)
    outs = []
    for fused in (False, True):
        attn.fused = fused
        outs.append(attn(query=x, key=kv, value=kv, mask=mask))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_fully_masked_row_is_zero_and_gradients_reach_u_v(fused):
    attn = make_attn(seed=3).train()
    attn.fused = fused
    x = torch.randn(3, 2, 8, requires_grad=True)
    mask = causal_mask_with_memory(3, 0).clone()
    mask[1] = False
    out = attn(query=x, key=x, value=x, mask=mask)
    assert torch.isfinite(out).all()
    # The output projection's bias is all a query that sees nothing gets
    torch.testing.assert_close(out[1], attn.output.bias.expand(2, 8))
    out.square().sum().backward()
    for p in (x.grad, attn.u.grad, attn.v.grad):
        assert p is not None and torch.isfinite(p).all()
    assert attn.u.grad.abs().sum() > 0 and attn.v.grad.abs().sum() > 0


def test_bad_inputs_name_the_argument():
    attn = make_attn()
    x = torch.randn(3, 2, 8)
    good = causal_mask_with_memory(3, 0)
    with pytest.raises(ValueError, match="d_model"):
        RelativeMultiHeadAttention(3, 8)
    with pytest.raises(ValueError, match="heads"):
        RelativeMultiHeadAttention(0, 8)
    with pytest.raises(ValueError, match="dropout_prob"):
        RelativeMultiHeadAttention(2, 8, 1.5)
    with pytest.raises(ValueError, match="mask"):
        attn(query=x, key=x, value=x, mask=causal_mask_with_memory(3, 1))
    with pytest.raises(ValueError, match="mask"):
        attn(query=x, key=x, value=x, mask=good.expand(3, 3, 5))
    with pytest.raises(ValueError, match="mask"):
        attn(query=x, key=x, value=x, mask=good.float())
    with pytest.raises(ValueError, match="query"):
        attn(query=torch.randn(3, 2, 6), key=x, value=x, mask=good)
    with pytest.raises(ValueError, match="key"):
        attn(query=x, key=x[:2], value=x[:2], mask=good[:, :2])
    with pytest.raises(ValueError, match="value"):
        attn(query=x, key=x, value=torch.randn(3, 1, 8), mask=good)
