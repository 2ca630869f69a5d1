"""The seeds' usage examples for positional techniques, at the seeds' sizes (dim 512, depth 6,
max_seq_len 1024).  Each model is built as written and run once on 64 tokens (a full 1024-token
pass takes about 4 s on the 2-core test machine), then the output shape is checked."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper

EXAMPLES = {
    "rel_pos_bias": dict(rel_pos_bias=True),
    "position_infused_attn": dict(position_infused_attn=True),
    "rotary_pos_emb": dict(rotary_pos_emb=True),
    "alibi_pos_emb": dict(alibi_pos_emb=True, alibi_num_heads=4),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_seed_example_runs(name):
    torch.manual_seed(0)
    model = TransformerWrapper(
        num_tokens=20000,
        max_seq_len=1024,
        attn_layers=Decoder(dim=512, depth=6, heads=8, **EXAMPLES[name]),
    ).eval()
    x = torch.randint(0, 20000, (1, 64))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 64, 20000) and torch.isfinite(logits).all()
