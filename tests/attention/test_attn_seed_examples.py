"""The seeds' usage examples of the attention features, at the seeds' sizes.

Each model is built exactly as in the seed (dim 512, depth 6, heads 8, max_seq_len 1024) and runs
one forward on a short input (batch 1, 64 tokens), checking the output shape and finiteness; the
full 1024-token forward is several seconds per model on two cores.  The dropout example also checks
that its three dropouts are active in training mode.
"""

import pytest
import torch

from labml_style_nn.models.layers import Decoder, Encoder
from labml_style_nn.models.wrappers import TransformerWrapper
from labml_style_nn.models.xtransformer import XTransformer

N = 64
DECODER_EXAMPLES = {
    "sparse_topk": dict(attn_sparse_topk=8),
    "entmax15": dict(attn_use_entmax15=True),
    "talking_heads": dict(attn_talking_heads=True),
    "collab_heads": dict(attn_collab_heads=True, attn_collab_compression=.3),
    "head_scale": dict(attn_head_scale=True),
    "qk_norm": dict(use_qk_norm_attn=True, qk_norm_attn_seq_len=1024),
    "dropouts": dict(attn_dropout=0.1, ff_dropout=0.1),
}
ENCODER_EXAMPLES = {
    "on_attn": dict(attn_on_attn=True),
    "gate_values": dict(gate_values=True),
    "attn_gate_values": dict(attn_gate_values=True),
    "residual_attn_post_norm": dict(pre_norm=False, residual_attn=True),
    "residual_attn": dict(residual_attn=True),
}


@pytest.mark.parametrize("name", sorted(DECODER_EXAMPLES) + sorted(ENCODER_EXAMPLES))
@torch.no_grad()
def test_seed_example_runs(name):
    stack = Decoder if name in DECODER_EXAMPLES else Encoder
    kwargs = {**DECODER_EXAMPLES, **ENCODER_EXAMPLES}[name]
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024,
                               emb_dropout=0.1 if name == "dropouts" else 0.0,
                               attn_layers=stack(dim=512, depth=6, heads=8, **kwargs)).eval()
    x = torch.randint(0, 20000, (1, N))
    out = model(x)
    assert out.shape == (1, N, 20000) and torch.isfinite(out).all()
    if name == "dropouts":
        model.train()
        assert not torch.equal(model(x), out)


@torch.no_grad()
def test_seed_example_memory_key_values():
    enc = Encoder(dim=512, depth=6, heads=8, attn_num_mem_kv=16).eval()
    x = torch.randn(1, N, 512)
    out = enc(x)
    assert out.shape == (1, N, 512) and torch.isfinite(out).all()
    assert enc.blocks[0].fn.memory_kv.keys.shape == (8, 16, 64)


@torch.no_grad()
def test_seed_example_memory_tokens():
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024, num_memory_tokens=20,
                               attn_layers=Encoder(dim=512, depth=6, heads=8)).eval()
    out = model(torch.randint(0, 20000, (1, N)))
    assert out.shape == (1, N, 20000) and torch.isfinite(out).all()
    assert model.memory_tokens.tokens.shape == (20, 512)


def test_seed_example_cross_residual_xtransformer():
    model = XTransformer(dim=512, enc_num_tokens=256, enc_depth=6, enc_heads=8, enc_max_seq_len=1024,
                         dec_num_tokens=256, dec_depth=6, dec_heads=8, dec_max_seq_len=1024,
                         dec_cross_residual_attn=True)
    src, tgt = torch.randint(0, 256, (1, N)), torch.randint(0, 256, (1, N))
    src_mask = torch.ones(1, N, dtype=torch.bool)
    loss = model(src, tgt, src_mask=src_mask)
    assert loss.shape == () and torch.isfinite(loss)
    # An untrained model is near the uniform guess, $\log 256$.
    assert abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 1.0
