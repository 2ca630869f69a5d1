"""The looped language model (`wrapping/looped.py`): parity with x-transformers 2.31.10, weights copied (every
loop's logits, the exit gate, the training loss), the early exit, generation and the refusals."""

import pytest
import torch
import x_transformers as xt
from xt_parity import assert_same_logits, build_pair, copy_weights

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.generation import LayersCache
from labml_style_nn.wrapping.looped import exit_probabilities

V = 23
STACK = dict(dim=16, depth=1, heads=2, attn_dim_head=8, pre_and_post_norm=True)


def _gate(ours, theirs, put):
    put(ours.exit_gate.weight, theirs.exit_gate.weight)


def pair():
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16, looped=True, max_looped_steps=3), "Decoder",
                              STACK)
    with torch.no_grad():
        theirs.exit_gate.weight.normal_()
    copy_weights(ours, theirs, [_gate])
    return ours, theirs


def test_parity_with_xtransformers_every_loop_and_the_loss():
    ours, theirs = pair()
    assert_same_logits(ours, theirs, V, extra=[_gate], grads=True, looped_steps=2)
    x = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        a, inter_a = ours(x, return_intermediates=True, looped_pred_all_logits=True)
        b, inter_b = theirs(x, return_intermediates=True, looped_pred_all_logits=True)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert len(inter_a.exit_logits) == len(inter_a.all_pred_logits) == 3
        for mine, their in zip(inter_a.exit_logits + inter_a.all_pred_logits,
                               inter_b.exit_logits + inter_b.all_pred_logits, strict=True):
            torch.testing.assert_close(mine, their, atol=1e-5, rtol=1e-4)
        # A different number of loops gives a different output.
        assert (ours(x, looped_steps=1) - a).abs().max() > 1e-3
    # The training loss: every loop weighted by the exit distribution, plus the exit gate's loss.
    seq = torch.randint(0, V, (2, 10))
    ours_loss = AutoregressiveWrapper(ours, looped_loss_slope=20.0)(seq)
    theirs_loss = xt.AutoregressiveWrapper(theirs, looped_loss_slope=20.0)(seq)
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-5, rtol=1e-4)


def test_exit_probabilities_sum_to_one():
    p = exit_probabilities(torch.randn(2, 4, 5, 1))
    torch.testing.assert_close(p.sum(1), torch.ones(2, 5, 1))


def test_early_exit_on_the_last_token_and_generation():
    ours, _ = pair()
    x = torch.randint(0, V, (1, 6))
    with torch.no_grad():
        for sign, last in ((1.0, 0), (-1.0, 2)):
            ours.exit_gate.weight.fill_(sign * 10)
            h = ours(x, return_embeddings=True)
            ours.exit_gate.weight.copy_(sign * 10 * h[0, -1] / h[0, -1].abs().clamp(min=1e-6))  # sure exit / stay
            _, inter = ours(x, return_intermediates=True, looped_inference=True)
            assert inter.exit_indices.tolist() == [[last]]
        out = AutoregressiveWrapper(ours).generate(x, 2, temperature=0.0)
        expected = ours(torch.cat((x, out[:, :1]), 1), looped_inference=True).argmax(-1)[:, -1]
        assert out[0, 1] == expected[0]
        with pytest.raises(ValueError, match="looped_inference"):
            ours(torch.randint(0, V, (2, 6)), looped_inference=True)


@pytest.mark.parametrize(("build", "names"), [
    (lambda: TransformerWrapper(num_tokens=V, max_seq_len=8, looped=True, attn_layers=Decoder(dim=16, depth=1)),
     ("looped", "pre_and_post_norm")),
    (lambda: TransformerWrapper(num_tokens=V, max_seq_len=8, looped=True, recycling=True,
                                attn_layers=Decoder(**STACK)), ("looped", "recycling")),
    (lambda: TransformerWrapper(num_tokens=V, max_seq_len=8, looped=True, max_looped_steps=0,
                                attn_layers=Decoder(**STACK)), ("max_looped_steps",)),
    (lambda: TransformerWrapper(num_tokens=V, max_seq_len=8, attn_layers=Decoder(**STACK))(
        torch.zeros(1, 3, dtype=torch.long), looped_steps=2), ("looped_steps", "looped=True")),
    (lambda: pair()[0](torch.zeros(1, 3, dtype=torch.long), cache=LayersCache(pair()[0].attn_layers, 1, 8)),
     ("cache", "looped")),
])
def test_refusals_name_the_keywords(build, names):
    with pytest.raises(ValueError) as err:
        build()
    assert all(n in str(err.value) for n in names), str(err.value)
