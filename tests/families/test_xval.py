"""xVal (families/xval.py): parity with x-transformers' wrapper, and the number head learns a rule."""

import pytest
import torch

from labml_style_nn import Decoder
from labml_style_nn.families.xval import XValAutoregressiveWrapper, XValTransformerWrapper


def test_logits_and_numbers_equal_xtransformers():
    xt = pytest.importorskip("x_transformers")
    from x_transformers.xval import XValTransformerWrapper as Theirs
    from xt_parity import copy_weights

    torch.manual_seed(0)
    theirs = Theirs(num_tokens=6, numerical_token_id=5, max_seq_len=16,
                    attn_layers=xt.Decoder(dim=16, depth=1, heads=2)).eval()
    ours = XValTransformerWrapper(num_tokens=6, numerical_token_id=5, max_seq_len=16,
                                  attn_layers=Decoder(dim=16, depth=1, heads=2)).eval()
    copy_weights(ours.net, theirs)  # embedding, positions, stack
    with torch.no_grad():
        ours.to_logits.weight.copy_(theirs.to_logits.weight)
        ours.to_logits.bias.copy_(theirs.to_logits.bias)
        ours.to_numerical_output.weight.copy_(theirs.to_numerical_output[0].weight)
        ours.to_numerical_output.bias.copy_(theirs.to_numerical_output[0].bias)
    x, nums = torch.randint(0, 6, (2, 8)), torch.randn(2, 8)
    x[:, 2] = 5  # a number token
    for a, b in zip(ours(x, nums), theirs(x, nums), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # The value scales the number token's embedding: the output depends on it.
    other = nums.clone()
    other[:, 2] += 1
    assert not torch.allclose(ours(x, other)[0][:, 2:], ours(x, nums)[0][:, 2:])
    torch.testing.assert_close(ours(x, other)[0][:, :2], ours(x, nums)[0][:, :2])


def test_the_number_head_learns_to_double():
    torch.manual_seed(0)
    model = XValTransformerWrapper(num_tokens=3, numerical_token_id=2, max_seq_len=8,
                                   attn_layers=Decoder(dim=16, depth=1, heads=2))
    wrapper = XValAutoregressiveWrapper(model)
    opt = torch.optim.Adam(wrapper.parameters(), lr=1e-2)
    ids = torch.tensor([[0, 2, 2]]).repeat(32, 1)  # "<bos> [NUM]=v [NUM]=2v"
    for step in range(80):
        v = torch.rand(32) * 2 - 1
        nums = torch.stack((torch.zeros(32), v, 2 * v), -1)
        loss, parts = wrapper(ids, nums, return_loss_breakdown=True)
        if step == 0:
            first = parts.numerical_mse_loss[:, 1].mean().item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts.numerical_mse_loss[:, 1].mean().item() < first / 5
    out = wrapper.generate(ids[:2, :2], torch.tensor([[0.0, 0.5], [0.0, -0.25]]), 1, temperature=0)
    assert out.is_number_mask.all()
    torch.testing.assert_close(out.sampled_numbers[:, 0], torch.tensor([1.0, -0.5]), atol=0.25, rtol=0)
