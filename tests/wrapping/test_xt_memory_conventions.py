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


@pytest.mark.parametrize("wrapper", ["TransformerWrapper", "ContinuousTransformerWrapper"])
def test_mem_masks_equal_xtransformers_and_hide_memory_positions(wrapper):
    wrap = dict(WRAP, dim_in=5, dim_out=3) if wrapper != "TransformerWrapper" else WRAP
    if wrapper != "TransformerWrapper":
        wrap.pop("num_tokens")
    ours, theirs = build_pair(wrap, "Decoder", STACK, wrapper=wrapper)
    if wrapper == "TransformerWrapper":
        copy_weights(ours, theirs)
        torch.manual_seed(1)
        x, segment = torch.randint(0, 13, (2, 10)), (slice(None), slice(None, 6))
    else:
        ours.load_state_dict(_continuous_state(ours, theirs))
        torch.manual_seed(1)
        x, segment = torch.randn(2, 10, 5), (slice(None), slice(None, 6))
    first, second = x[segment], x[:, 6:]
    mem_masks = [torch.tensor([[True] * 6, [False] * 3 + [True] * 3])] * 2
    mask = torch.tensor([[True] * 4, [True] * 3 + [False]])
    with torch.no_grad():
        _, mems = ours(first, return_mems=True)
        _, their_mems = theirs(first, return_mems=True)
        assert type(mems) is type(their_mems) is (list if wrapper == "TransformerWrapper" else tuple)
        a = ours(second, mems=mems, mem_masks=mem_masks, mask=mask)
        b = theirs(second, mems=list(their_mems), mem_masks=mem_masks, mask=mask)
        torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-4)
        # Row 0 sees its whole memory, row 1 only the last three positions: hiding the first three
        # by the mask equals dropping them from the memory.
        unmasked = ours(second, mems=mems, mask=mask)
        torch.testing.assert_close(a[0], unmasked[0])
        assert (a[1] - unmasked[1]).abs().max() > 1e-4
        short = ours(second[1:], mems=[m[1:, 3:] for m in mems], mask=mask[1:])
        torch.testing.assert_close(a[1][mask[1]], short[0][mask[1]], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="mem_masks"):
        ours(second, mem_masks=mem_masks)
    with pytest.raises(ValueError, match="mem_masks"):
        ours(second, mems=mems, mem_masks=mem_masks[:1])


def _continuous_state(ours, theirs):
    """x-transformers' continuous wrapper's weights, as ours names them (T5 bias times its scale, norms
    gain-plus-one, no biases where it has none)."""
    from xt_parity import _Writer, copy_stack

    put = _Writer(ours)
    put(ours.project_in.weight, theirs.project_in.weight)
    put.zero(ours.project_in.bias)  # x-transformers' input projection has none
    put(ours.project_out.weight, theirs.project_out.weight)
    if theirs.project_out.bias is None:
        put.zero(ours.project_out.bias)
    else:
        put(ours.project_out.bias, theirs.project_out.bias)
    if getattr(ours, "pos_emb", None) is not None:
        put(ours.pos_emb.emb.weight, theirs.pos_emb.emb.weight * (theirs.pos_emb.scale / ours.pos_emb.emb_scale))
    copy_stack(put, ours.attn_layers, theirs.attn_layers)
    assert not put.unwritten(), put.unwritten()
    return ours.state_dict()


def test_seq_start_pos_counts_from_the_prepended_embeddings_as_xtransformers():
    ours, theirs = build_pair(dict(num_tokens=13, max_seq_len=16), "Decoder", dict(dim=16, depth=1, heads=2))
    copy_weights(ours, theirs)
    torch.manual_seed(1)
    x, prepend, starts = torch.randint(0, 13, (2, 6)), torch.randn(2, 3, 16), torch.tensor([0, 4])
    with torch.no_grad():
        a = ours(x, prepend_embeds=prepend, seq_start_pos=starts)
        b = theirs(x, prepend_embeds=prepend, seq_start_pos=starts)
        # Row 1's first four positions (three embeddings and one token) are masked: the same as a mask.
        # (Queries that see no key at all are compared nowhere.)
        mask = torch.arange(9)[None] >= starts[:, None]
        torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-4)
        same = ours(x, prepend_embeds=prepend, prepend_mask=mask[:, :3], mask=mask[:, 3:], seq_start_pos=starts)
        torch.testing.assert_close(a[:, 4:], same[:, 4:])
        assert (a[1] - ours(x, prepend_embeds=prepend)[1]).abs().max() > 1e-4


def test_continuous_wrapper_keeps_prepended_positions_and_takes_prepend_mask_and_sum_embeds():
    wrap = dict(max_seq_len=16, dim_in=5, dim_out=3)
    ours, theirs = build_pair(wrap, "Encoder", dict(dim=16, depth=1, heads=2), wrapper="ContinuousTransformerWrapper")
    ours.load_state_dict(_continuous_state(ours, theirs))
    torch.manual_seed(1)
    x, prepend, summed = torch.randn(2, 6, 5), torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    prepend_mask = torch.tensor([[True, True, True], [False, True, True]])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    kwargs = dict(prepend_embeds=prepend, prepend_mask=prepend_mask, sum_embeds=summed, mask=mask)
    with torch.no_grad():
        a, b = ours(x, **kwargs), theirs(x, **kwargs)
        assert a.shape == b.shape == (2, 9, 3)
        keep = torch.cat((prepend_mask, mask), dim=1)
        torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-4)
        # Each argument acts: the masked embedding, the summed embeddings.
        assert (a[1] - ours(x, prepend_embeds=prepend, sum_embeds=summed, mask=mask)[1])[keep[1]].abs().max() > 1e-4
        assert (a - ours(x, prepend_embeds=prepend, prepend_mask=prepend_mask, mask=mask))[keep].abs().max() > 1e-4
        # seq_start_pos only shifts the absolute positions there, as in x-transformers 2.31.10: no key is
        # masked (the token wrapper masks the keys before it).
        starts = torch.tensor([0, 2])
        c = ours(x, prepend_embeds=prepend, seq_start_pos=starts)
        torch.testing.assert_close(c, theirs(x, prepend_embeds=prepend, seq_start_pos=starts), atol=1e-5, rtol=1e-4)
        masked = ours(x, prepend_embeds=prepend, prepend_mask=torch.arange(3)[None] >= starts[:, None],
                      seq_start_pos=starts)
        assert (c[1, 2:] - masked[1, 2:]).abs().max() > 1e-4


def test_token_emb_and_to_logits_kwargs_reach_custom_modules():
    from torch import nn

    from labml_style_nn import Decoder, TransformerWrapper

    class TwoTables(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Embedding(11, 16), nn.Embedding(11, 16)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    class Pointer(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(16, 16)

        def forward(self, h, candidates):
            return self.proj(h) @ candidates.transpose(1, 2)  # (b, n, c)

    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=11, max_seq_len=8, token_emb=TwoTables(), to_logits=Pointer(),
                             attn_layers=Decoder(dim=16, depth=1, heads=2)).eval()
    x, y, candidates = torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 5)), torch.randn(2, 7, 16)
    with torch.no_grad():
        out = net(x, token_emb_kwargs=dict(y=y), to_logits_kwargs=dict(candidates=candidates))
        assert out.shape == (2, 5, 7)
        other = net(x, token_emb_kwargs=dict(y=(y + 1) % 11), to_logits_kwargs=dict(candidates=candidates))
        assert (out - other).abs().max() > 1e-4
    tied = TransformerWrapper(num_tokens=11, max_seq_len=8, tie_embedding=True,
                              attn_layers=Decoder(dim=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="to_logits_kwargs"):
        tied(x, to_logits_kwargs=dict(candidates=candidates))
