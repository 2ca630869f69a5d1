"""x-transformers' calling conventions of the wrappers: `condition=` reaches the adaptive norms through
`TransformerWrapper` and `ContinuousTransformerWrapper` (weight-copied parity), and `lens=` on the continuous one."""

import pytest
import torch
import x_transformers as xt

from labml_style_nn import ContinuousTransformerWrapper, Decoder, Encoder, TransformerWrapper

STACK = dict(dim=16, depth=1, heads=2, attn_dim_head=8, use_adaptive_layernorm=True, dim_condition=6)


def perturbed(model):
    """The condition's projections start at zero: give every parameter a nonzero part."""
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_condition_passes_through_the_token_wrapper_with_xtransformers_values():
    from xt_parity import assert_same_logits, build_pair

    ours, theirs = build_pair(dict(num_tokens=13, max_seq_len=16), "Decoder", STACK)
    perturbed(theirs)
    condition = torch.randn(2, 6)
    assert_same_logits(ours, theirs, 13, condition=condition)
    x = torch.randint(0, 13, (2, 5))
    with torch.no_grad():
        assert (ours(x, condition=condition) - ours(x, condition=-condition)).abs().max() > 1e-4


def test_condition_and_lens_on_the_continuous_wrapper():
    torch.manual_seed(0)
    ours = perturbed(ContinuousTransformerWrapper(max_seq_len=16, dim_in=3, dim_out=4,
                                                  attn_layers=Encoder(**STACK))).eval()
    torch.manual_seed(0)
    theirs = xt.ContinuousTransformerWrapper(max_seq_len=16, dim_in=3, dim_out=4,
                                             attn_layers=xt.Encoder(**STACK)).eval()
    x, condition, lens = torch.randn(2, 5, 3), torch.randn(2, 6), torch.tensor([5, 3])
    with torch.no_grad():
        a = ours(x, condition=condition, lens=lens)
        mask = torch.arange(5)[None] < lens[:, None]
        torch.testing.assert_close(a, ours(x, condition=condition, mask=mask))
        assert (a - ours(x, condition=-condition, lens=lens)).abs().max() > 1e-4
        # x-transformers takes the same call.
        assert theirs(x, condition=condition, lens=lens).shape == a.shape


def test_decoder_condition_through_transformer_wrapper_changes_with_the_condition():
    torch.manual_seed(0)
    net = perturbed(TransformerWrapper(num_tokens=13, max_seq_len=8, attn_layers=Decoder(**STACK))).eval()
    x = torch.randint(0, 13, (1, 4))
    with torch.no_grad():
        assert (net(x, condition=torch.ones(1, 6)) - net(x, condition=torch.zeros(1, 6))).abs().max() > 1e-4


def test_float_token_ids_are_cast_when_whole_and_refused_otherwise():
    # x-transformers' token embedding casts `x.long()`: `model(torch.zeros(2, 16))` runs there.
    model = TransformerWrapper(num_tokens=20, max_seq_len=16, attn_layers=Decoder(dim=16, depth=1, heads=2)).eval()
    ids = torch.randint(0, 20, (2, 8))
    torch.testing.assert_close(model(ids.float()), model(ids))
    with pytest.raises(ValueError, match="x: token ids given as torch.float32 must be whole numbers, got e.g. 2.5"):
        model(ids.float().index_put_((torch.tensor(0), torch.tensor(0)), torch.tensor(2.5)))
