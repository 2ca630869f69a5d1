"""The seed features as keyword sets, shared by the robustness tests.

Each entry turns one technique of the seed documents on in a small stack.  Sizes are tiny so that
a test over every feature, in several precisions, still runs in seconds.
"""

import torch

from labml_style_nn import Decoder, Encoder

DIM, HEADS, DIM_HEAD, DEPTH = 32, 4, 8, 2

SEED_FEATURES = {
    "default": {},
    # positions
    "rotary": dict(rotary_pos_emb=True),
    "t5_bias": dict(rel_pos_bias=True),
    "alibi": dict(alibi_pos_emb=True),
    "position_infused": dict(position_infused_attn=True),
    # attention
    "mem_kv": dict(attn_num_mem_kv=2),
    "sparse_topk": dict(attn_sparse_topk=3),
    "entmax15": dict(attn_use_entmax15=True),
    "talking_heads": dict(attn_talking_heads=True),
    "collab_heads": dict(attn_collab_heads=True, attn_collab_compression=0.5),
    "on_attn": dict(attn_on_attn=True),
    "gate_values": dict(attn_gate_values=True),
    "head_scale": dict(attn_head_scale=True),
    "qk_norm": dict(attn_qk_norm=True),
    "residual_attn": dict(residual_attn=True),
    # feed-forward
    "glu": dict(ff_glu=True),
    "relu_squared": dict(ff_relu_squared=True),
    "post_act_ln": dict(ff_post_act_ln=True),
    # norms and residuals
    "scalenorm": dict(use_scalenorm=True),
    "rmsnorm": dict(use_rmsnorm=True),
    "rezero": dict(use_rezero=True),
    "sandwich_norm": dict(sandwich_norm=True),
    "post_norm": dict(pre_norm=False),
    "gate_residual": dict(gate_residual=True),
    "scale_residual": dict(scale_residual=True),
    # layout
    "sandwich_coef": dict(sandwich_coef=1),
    "macaron": dict(macaron=True),
    "shift_tokens": dict(shift_tokens=1),
    # layers-a: norms, layouts, regularisation and positions of the stack
    "dynamic_tanh": dict(use_dynamic_tanh=True),
    "derf": dict(use_derf=True),
    "simple_rmsnorm": dict(use_simple_rmsnorm=True),
    "layerscale": dict(use_layerscale=True, layerscale_init_value=0.1),
    "pre_and_post_norm": dict(pre_and_post_norm=True),
    "dynamic_pos_bias": dict(dynamic_pos_bias=True, dynamic_pos_bias_log_distance=True),
    "weight_tied": dict(weight_tie_layers=True),
    "par_ratio": dict(par_ratio=2),
    "only_attn": dict(only_attn=True),
    "softclamp_output": dict(softclamp_output=True, softclamp_output_value=2.0),
    "polar": dict(polar_pos_emb=True),
}


def make_stack(kind: str, **kwargs):
    """A small `Encoder` or `Decoder` with the given keywords."""
    cls = Encoder if kind == "encoder" else Decoder
    return cls(dim=DIM, depth=DEPTH, heads=HEADS, attn_dim_head=DIM_HEAD, **kwargs)


def padded_batch(b: int = 2, n: int = 12, dtype=torch.float32):
    """Inputs `(b, n, DIM)` and a padding mask whose second row ends in four padded tokens."""
    x = torch.randn(b, n, DIM, dtype=dtype)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, -4:] = False
    return x, mask
