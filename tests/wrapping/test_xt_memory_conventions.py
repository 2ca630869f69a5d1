"""x-transformers 2.31's memory conventions, weight-copied: `hiddens` hold the residual stream each
self-attention layer reads *before* its pre-norm, so the Transformer-XL memories built from them are the
same tensors and a second segment gives the same logits."""

import pytest
import torch
from xt_parity import build_pair, copy_weights

WRAP = dict(num_tokens=13, max_seq_len=32, max_mem_len=8)
STACK = dict(dim=16, depth=2, heads=2, attn_dim_head=8, rel_pos_bias=True)


def test_hiddens_and_memories_equal_xtransformers():
    ours, theirs = build_pair(WRAP, "Decoder", STACK)
    copy_weights(ours, theirs)
    torch.manual_seed(1)
    x = torch.randint(0, 13, (2, 10))
    with torch.no_grad():
        a, inter_a = ours(x[:, :6], return_intermediates=True)
        b, inter_b = theirs(x[:, :6], return_intermediates=True)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert len(inter_a.hiddens) == len(inter_b.hiddens) == 2
        for h_a, h_b in zip(inter_a.hiddens, inter_b.hiddens, strict=True):
            torch.testing.assert_close(h_a, h_b, atol=1e-5, rtol=1e-4)
        # The first layer's hidden is the embedding itself, not its norm.
        torch.testing.assert_close(inter_a.hiddens[0], ours.token_emb(x[:, :6]))
        _, mems_a = ours(x[:, :6], return_mems=True)
        _, mems_b = theirs(x[:, :6], return_mems=True)
        for m_a, m_b in zip(mems_a, mems_b, strict=True):
            torch.testing.assert_close(m_a, m_b, atol=1e-5, rtol=1e-4)
        seg_a = ours(x[:, 6:], mems=mems_a)
        seg_b = theirs(x[:, 6:], mems=mems_b)
    torch.testing.assert_close(seg_a, seg_b, atol=1e-5, rtol=1e-4)
