"""The seeds' usage examples for feed-forward, norm, residual and layout techniques, at the seeds'
sizes (dim 512, depth 6, max_seq_len 1024).  Each model is built as written and run once on 64
tokens (a full 1024-token pass takes about 4 s on the 2-core test machine), then the output shape
is checked."""

import pytest
import torch

from labml_style_nn import Decoder, Encoder, TransformerWrapper

# (stack class, its keywords, extra wrapper keywords)
EXAMPLES = {
    "use_scalenorm": (Decoder, dict(use_scalenorm=True), {}),
    "ff_glu": (Decoder, dict(ff_glu=True), {}),
    "ff_relu_squared": (Decoder, dict(ff_relu_squared=True), {}),
    "use_rezero": (Decoder, dict(use_rezero=True), {}),
    "sandwich_coef": (Encoder, dict(sandwich_coef=6), {}),
    "macaron": (Encoder, dict(macaron=True), {}),
    "post_norm_residual_attn": (Encoder, dict(pre_norm=False, residual_attn=True), {}),
    "gate_residual": (Decoder, dict(gate_residual=True, heads=16), dict(max_mem_len=2048)),
    "shift_tokens": (Decoder, dict(shift_tokens=1), {}),
    "shift_tokens_tuple": (Decoder, dict(shift_tokens=(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0)), {}),
    "sandwich_norm": (Decoder, dict(sandwich_norm=True), {}),
    "ff_post_act_ln": (Decoder, dict(ff_post_act_ln=True), {}),
    "scale_residual": (Decoder, dict(scale_residual=True), {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_seed_example_runs(name):
    cls, layer_kw, wrapper_kw = EXAMPLES[name]
    layer_kw = dict(dict(dim=512, depth=6, heads=8), **layer_kw)
    torch.manual_seed(0)
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024, attn_layers=cls(**layer_kw), **wrapper_kw).eval()
    x = torch.randint(0, 20000, (1, 64))
    with torch.no_grad():
        if wrapper_kw.get("max_mem_len"):
            logits, mems = model(x, return_mems=True)
            assert len(mems) == 6 and mems[0].shape == (1, 64, 512)
        else:
            logits = model(x)
    assert logits.shape == (1, 64, 20000) and torch.isfinite(logits).all()
