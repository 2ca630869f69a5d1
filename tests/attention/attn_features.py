"""The attention features of the seeds, as keyword sets, shared by the tests of `tests/attention/`.

Each entry: the keywords that turn the feature on in a layer stack, and the name fragments of the
parameters that the feature adds (empty when it adds none), which must receive gradients.
"""

import torch

from labml_style_nn.models.layers import CrossAttender, Decoder, Encoder

FEATURES = {
    "mem_kv": (dict(attn_num_mem_kv=3), ["memory_kv.keys", "memory_kv.values"]),
    "sparse_topk": (dict(attn_sparse_topk=3), []),
    "entmax15": (dict(attn_use_entmax15=True), []),
    "talking_heads": (dict(attn_talking_heads=True), ["score_transform.pre", "score_transform.post"]),
    "collab_heads": (dict(attn_collab_heads=True, attn_collab_compression=0.5),
                     ["qk_proj.to_q", "qk_proj.to_k", "qk_proj.mixing"]),
    "on_attn": (dict(attn_on_attn=True), ["to_out.proj"]),
    "gate_values": (dict(attn_gate_values=True), ["output_gate.to_gate"]),
    "gate_values_old_keyword": (dict(gate_values=True), ["output_gate.to_gate"]),
    "head_scale": (dict(attn_head_scale=True), ["output_gate.scale"]),
    "qk_norm": (dict(use_qk_norm_attn=True, qk_norm_attn_seq_len=16), ["qk_transform.temperature"]),
    "residual_attn": (dict(residual_attn=True), []),
    "residual_attn_post_norm": (dict(residual_attn=True, pre_norm=False), []),
    "cross_residual_attn": (dict(cross_residual_attn=True), []),
    "dropout": (dict(attn_dropout=0.2, ff_dropout=0.2), []),
    # Value residual learning (residual/value_residual.py): the learned mix of every layer after the first of its kind.
    "value_residual": (dict(add_value_residual=True, attn_learned_value_residual_mix=True), ["value_mix.proj"]),
    "all_compatible": (dict(attn_num_mem_kv=2, attn_sparse_topk=4, attn_talking_heads=True,
                            attn_collab_heads=True, attn_on_attn=True, attn_gate_values=True,
                            attn_head_scale=True, use_qk_norm_attn=True, residual_attn=True,
                            attn_dropout=0.1), ["memory_kv.keys", "score_transform.transforms.0.pre", "qk_proj.mixing",
                                                "to_out.proj", "output_gate.gates.0", "output_gate.gates.1",
                                                "qk_transform.temperature"]),
}

# Keywords that only make sense on a stack with cross-attention layers.
NEEDS_CROSS = {"cross_residual_attn"}
# Features whose randomness is part of the forward: tests run them in training mode, reseeded.
STOCHASTIC = {"dropout", "all_compatible"}

DIM, HEADS, DIM_HEAD, DEPTH = 32, 4, 8, 2


def make_stack(kind: str, feature: str):
    """A small `Encoder`, `Decoder`, cross-attending `Decoder` or `CrossAttender` with the feature on."""
    kwargs, _ = FEATURES[feature]
    common = dict(dim=DIM, depth=DEPTH, heads=HEADS, attn_dim_head=DIM_HEAD, **kwargs)
    if kind == "encoder":
        return Encoder(**common)
    if kind == "decoder":
        return Decoder(**common)
    if kind == "cross_decoder":
        return Decoder(cross_attend=True, **common)
    if kind == "cross_attender":
        return CrossAttender(**common)
    raise ValueError(kind)


def run(model, feature: str, *args, **kwargs):
    """One forward, reseeded so that two calls draw the same dropout masks."""
    model.train(feature in STOCHASTIC)
    torch.manual_seed(1234)
    return model(*args, **kwargs)


def feature_params(model, feature: str):
    """The parameters that the feature adds, by name."""
    fragments = FEATURES[feature][1]
    found = {name: p for name, p in model.named_parameters() if any(f in name for f in fragments)}
    missing = [f for f in fragments if not any(f in name for name in found)]
    assert not missing, f"{feature}: no parameter named like {missing}"
    return found
