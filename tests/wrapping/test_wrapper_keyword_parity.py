"""x-transformers 2.31.10's TransformerWrapper keywords: weight-copied parity where parameters map (xt_parity.py)."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair

V = 24
STACK = dict(dim=16, depth=1, heads=2, attn_dim_head=8)

# Each case turns keywords on; the harness copies every parameter, and the logits must agree.
CASES = {
    "post_emb_norm": dict(post_emb_norm=True),
    "embed_num_tokens": dict(embed_num_tokens={"type": 3}),
    "scaled_sinu_pos_emb": dict(scaled_sinu_pos_emb=True),
    "l2norm_embed": dict(l2norm_embed=True),
    "emb_frac_gradient": dict(emb_frac_gradient=0.1),
    "sigsoftmax_logits": dict(sigsoftmax_logits=True),
    "mixture_of_softmax": dict(mixture_of_softmax=True, mixture_of_softmax_k=3),
    "ff_deep_embed": dict(ff_deep_embed=True),
    "emb_dim": dict(emb_dim=8, post_emb_norm=True),
    "num_memory_tokens": dict(num_memory_tokens=2),
    "memory_tokens_interspersed_every": dict(num_memory_tokens=2, memory_tokens_interspersed_every=5),
    "tie_embedding": dict(tie_embedding=True),  # x-transformers' default scale D^-1/2 on the tied logits
    "tie_embedding_scale": dict(tie_embedding=True, tie_embedding_scale=1.0),
}


@pytest.mark.parametrize("name", CASES)
def test_logits_equal_with_xtransformers_weights(name):
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, **CASES[name]), "Decoder", STACK)
    kwargs = {}
    if name == "embed_num_tokens":
        kwargs["embed_ids"] = {"type": torch.randint(0, 3, (2, 12), generator=torch.Generator().manual_seed(0))}
    # emb_frac_gradient only shows in the gradient: compare gradients there (and once more for the pages).
    assert_same_logits(ours, theirs, num_tokens=V, grads=name in ("emb_frac_gradient", "post_emb_norm"),
                       pad=not name.startswith(("num_memory", "memory_tokens")), **kwargs)


def test_emb_frac_gradient_shrinks_the_embedding_gradient_only():
    a, _ = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", STACK)
    b, _ = build_pair(dict(num_tokens=V, max_seq_len=16, emb_frac_gradient=0.1), "Decoder", STACK)
    x = torch.randint(0, V, (2, 8))
    la, lb = a(x), b(x)
    torch.testing.assert_close(la, lb)
    ga = torch.autograd.grad(la.square().sum(), a.token_emb.weight)[0]
    gb = torch.autograd.grad(lb.square().sum(), b.token_emb.weight)[0]
    torch.testing.assert_close(gb, ga * 0.1, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("pool", [dict(use_cls_token=True), dict(average_pool_embed=True),
                                  dict(attn_pool=True, num_pooled_tokens=2)])
def test_pools_equal_xtransformers(pool):
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, **pool), "Encoder", STACK)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, -4:] = False  # a padded row: the pools must ignore its padding as x-transformers does
    assert_same_logits(ours, theirs, num_tokens=V, pad=False, mask=mask)
    x = torch.randint(0, V, (2, 12))
    out = ours(x)
    if "attn_pool" in pool:
        assert out.shape == (2, 2, 16)  # an encoder returns the pooled tokens
        _, inter = ours(x, return_intermediates=True)
        assert inter.logits.shape == (2, 12, V) and inter.attn_pooled_tokens.shape == (2, 2, 16)
    else:
        assert out.shape == (2, V)


def test_several_heads_and_squeezed_logits_equal_xtransformers():
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, num_output_heads=2), "Decoder", STACK)
    x = torch.randint(0, V, (2, 8))
    from xt_parity import copy_weights
    copy_weights(ours, theirs)
    for a, b in zip(ours(x), theirs(x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, logits_dim=1, squeeze_out_last_dim=True),
                              "Encoder", STACK)
    assert_same_logits(ours, theirs, num_tokens=V, pad=False)
    assert ours(x).shape == (2, 8)


def test_z_loss_equals_xtransformers():
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", dict(STACK, depth=2))
    from xt_parity import copy_weights
    copy_weights(ours, theirs)
    x = torch.randint(0, V, (2, 8))
    _, a = ours(x, return_attn_z_loss=True)
    _, b = theirs(x, return_attn_z_loss=True, return_intermediates=True)
    torch.testing.assert_close(a.attn_z_loss, b.attn_z_loss, atol=1e-7, rtol=1e-4)
    assert a.aux_losses["attn_z_loss"] is a.attn_z_loss
    # The constructor's weight is the default here (x-transformers accepts it but reads only the forward's).
    c, _ = build_pair(dict(num_tokens=V, max_seq_len=16, attn_z_loss_weight=1.0), "Decoder", dict(STACK, depth=2))
    copy_weights(c, theirs)
    _, big = c(x, return_attn_z_loss=True)
    torch.testing.assert_close(big.attn_z_loss, a.attn_z_loss * 1e4, rtol=1e-4, atol=1e-6)


def test_continuous_pred_head_and_recycling_equal_xtransformers():
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, add_continuous_pred_head=True), "Decoder", STACK)
    from xt_parity import copy_weights
    copy_weights(ours, theirs)
    x = torch.randint(0, V, (2, 8))
    (la, (pa, ea)), (lb, (pb, eb)) = ours(x, return_next_embed_pred=True), theirs(x, return_next_embed_pred=True)
    for a, b in ((la, lb), (pa, pb), (ea, eb)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, recycling=True), "Decoder", STACK)
    copy_weights(ours, theirs)
    torch.testing.assert_close(ours(x, recycle_steps=3), theirs(x, recycle_steps=3), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours(x, recycle_steps=1), ours(x, recycle_steps=3))


def test_interspersed_memory_tokens_read_earlier_blocks_only():
    ours, _ = build_pair(dict(num_tokens=V, max_seq_len=16, num_memory_tokens=2, memory_tokens_interspersed_every=3),
                         "Decoder", STACK)
    x = torch.randint(0, V, (1, 9))
    emb = ours.token_emb.weight
    out = ours(x)
    changed = x.clone()
    changed[0, 4] = (x[0, 4] + 1) % V  # a token of the second block
    diff = (ours(changed) - out).abs().amax(-1)[0]
    assert (diff[:4] == 0).all() and (diff[4:] > 0).all()  # causal through the copies
    padded = ours(x, mask=torch.tensor([[True] * 7 + [False] * 2]))
    assert padded.shape == (1, 9, V) and emb.shape == (V, 16)
