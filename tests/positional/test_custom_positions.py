"""Custom positions `pos=`: `(n,)`, one row per sequence `(b, n)`, and per ALiBi head `(b, h, n)`."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn import Decoder, Encoder, TransformerWrapper
from labml_style_nn.positional.alibi import AlibiPositionalBias

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import assert_same_logits, build_pair  # noqa: E402

SMALL = dict(dim=16, depth=1, heads=2, attn_dim_head=8, verbose=False)
# Two rows with different gaps: a row of positions per sequence.
ROWS = torch.tensor([[0, 1, 2, 4, 5, 7, 8, 9, 10, 12, 13, 14], [3, 4, 5, 6, 9, 10, 11, 12, 20, 21, 22, 23]])


@pytest.mark.parametrize("kw, pos", [
    (dict(rotary_pos_emb=True), ROWS),
    (dict(rotary_xpos=True, rotary_xpos_scale_base=8), ROWS),
    (dict(alibi_pos_bias=True), ROWS),  # with the absolute positions x-transformers keeps for ALiBi
    (dict(alibi_pos_bias=True, rel_pos_kwargs=dict(slopes=[0.5, 0.25])), torch.stack((ROWS, ROWS.flip(-1)), 1))])
def test_per_row_positions_match_x_transformers(kw, pos):
    # x-transformers keeps its absolute positions beside ALiBi; they read `(b, n)` too, not `(b, h, n)`.
    wrapper = dict(num_tokens=20, max_seq_len=32, use_abs_pos_emb=pos.dim() == 2 and "alibi_pos_bias" in kw)
    ours, theirs = build_pair(wrapper, "Decoder", dict(SMALL, **kw))
    assert_same_logits(ours, theirs, 20, pos=pos, grads="rotary_xpos" in kw)


def test_each_row_is_rotated_by_its_own_positions():
    model = Decoder(**dict(SMALL, depth=2), rotary_pos_emb=True, alibi_pos_bias=True).eval()
    x = torch.randn(2, 12, 16)
    together = model(x, pos=ROWS)
    apart = torch.cat([model(x[i:i + 1], pos=ROWS[i]) for i in range(2)])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together, model(x), atol=1e-3)  # the positions act


def test_alibi_positions_per_head_give_each_head_its_own_distances():
    alibi = AlibiPositionalBias(3, 2, slopes=[1.0, 0.5])
    pos = torch.tensor([[[0, 1, 3], [0, 2, 2]]])  # (b=1, k=2, n=3)
    bias = alibi(pos, pos)  # (1, 3, 3, 3)
    assert bias[0, 0].tolist() == [[0, -1, -3], [-1, 0, -2], [-3, -2, 0]]
    assert bias[0, 1].tolist() == [[0, -1, -1], [-1, 0, 0], [-1, 0, 0]]
    assert bias[0, 2].abs().sum() == 0  # past alibi_num_heads: no bias


def test_per_row_positions_keep_the_fused_kernel(monkeypatch):
    calls, real = [], F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    for kw, pos in ((dict(rotary_pos_emb=True), ROWS), (dict(alibi_pos_bias=True), torch.stack((ROWS, ROWS), 1))):
        model = Encoder(**SMALL, **kw).eval()
        x, mask = torch.randn(2, 12, 16), torch.ones(2, 12, dtype=torch.bool)
        mask[1, -3:] = False
        calls.clear()
        fused = model(x, pos=pos, mask=mask)
        assert calls, "the fused kernel did not run"
        explicit = model(x, pos=pos, mask=mask, attn_sink=[])  # asking for the weights takes the explicit path
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_bad_positions_are_refused_naming_pos():
    x = torch.randn(2, 12, 16)
    with pytest.raises(ValueError, match=r"pos: .*\(12,\), \(2, 12\)"):
        Decoder(**SMALL, rotary_pos_emb=True)(x, pos=ROWS[:, :5])
    with pytest.raises(ValueError, match="pos: expected an integer tensor"):
        Decoder(**SMALL, rotary_pos_emb=True)(x, pos=ROWS.float())
    with pytest.raises(ValueError, match=r"pos: expected .* of shape \(12,\), \(2, 12\), got \(2, 2, 12\)"):
        Decoder(**SMALL, rotary_pos_emb=True)(x, pos=torch.stack((ROWS, ROWS), 1))  # per head: ALiBi alone
    with pytest.raises(ValueError, match="pos: per-row positions .* rel_pos_bias take only"):
        Decoder(**SMALL, rel_pos_bias=True)(x, pos=ROWS)
    model = TransformerWrapper(num_tokens=20, max_seq_len=32, attn_layers=Decoder(**SMALL, rotary_pos_emb=True)).eval()
    _, cache = model(torch.randint(0, 20, (2, 12)), return_intermediates=True)
    with pytest.raises(ValueError, match="pos.*cache"):
        model(torch.randint(0, 20, (2, 13)), cache=cache, pos=torch.cat((ROWS, ROWS[:, -1:] + 1), 1))
