"""transform_block_inputs and block_hiddens (labml_style_nn/models/block_inputs.py) against x-transformers."""

import pytest
import torch
from xt_parity import build_pair, copy_weights

from labml_style_nn import Decoder, TransformerWrapper


def test_block_inputs_match_x_transformers():
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder", dict(dim=16, depth=3, heads=2))
    copy_weights(ours, theirs)
    x = torch.randint(0, 20, (2, 7))
    for transforms in ({1: lambda s: s * 0.5 + 1.0, 3: torch.tanh}, lambda depth, s: s * depth):
        a, inter_a = ours(x, transform_block_inputs=transforms, return_intermediates=True)
        b, inter_b = theirs(x, transform_block_inputs=transforms, return_intermediates=True)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert (a - ours(x)).abs().amax() > 1e-3  # the transforms act
        assert len(inter_a.block_hiddens) == 3
        for p, q in zip(inter_a.block_hiddens, inter_b.block_hiddens, strict=True):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours(x, transform_token_embeds=torch.tanh), theirs(x, transform_token_embeds=torch.tanh),
                               atol=1e-5, rtol=1e-4)


def test_block_inputs_refuse_bad_input():
    net = TransformerWrapper(num_tokens=20, max_seq_len=16, attn_layers=Decoder(dim=16, depth=2, heads=2))
    with pytest.raises(ValueError, match="transform_block_inputs"):
        net(torch.randint(0, 20, (1, 4)), transform_block_inputs={0: torch.tanh})
    rev = TransformerWrapper(num_tokens=20, max_seq_len=16, attn_layers=Decoder(dim=16, depth=2, heads=2, reversible=True))
    with pytest.raises(ValueError, match="transform_block_inputs"):
        rev(torch.randint(0, 20, (1, 4)), transform_block_inputs={2: torch.tanh})
