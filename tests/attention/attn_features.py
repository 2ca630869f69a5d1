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
    # x-transformers 2.31's Attention keywords (attention/talking_heads.py, gate_values.py, head_gate.py,
    # qk_norm.py, qk_rmsnorm.py, attention.py, residual/branch_output.py).
    "xt_talking_heads": (dict(attn_pre_talking_heads=True, attn_post_talking_heads=True,
                              attn_pre_scale_post_talking_heads=True),
                         ["score_transform.pre", "score_transform.post", "score_transform.scale"]),
    "gated_attention": (dict(attn_gate_values=True, attn_gate_values_rank=4, attn_output_gate=True,
                             attn_output_gate_headwise=True, attn_gate_value_heads=True),
                        ["gates.0.to_gate", "gates.1.to_gate.proj", "gates.1.to_output_gate.proj"]),
    "qk_norm_xt": (dict(attn_qk_norm=True, attn_qk_norm_groups=2, attn_qk_norm_dim_scale=True),
                   ["qk_transform.q_scale", "qk_transform.k_scale"]),
    "qk_rmsnorm": (dict(attn_qk_rmsnorm=True, attn_value_rmsnorm=True),
                   ["qk_transform.q_norm.gain", "qk_transform.k_norm.gain", "value_norm.gain"]),
    "value_dim_head": (dict(attn_value_dim_head=12), []),
    "custom_attn_fn": (dict(attn_custom_attn_fn=torch.sigmoid), []),
    "sublayer_dropout": (dict(attn_sublayer_dropout=0.2, ff_sublayer_dropout=0.2), []),
    # x-transformers 2.31's FeedForward keywords (feedforward/glu.py, solu.py, softclamp.py): per token, so
    # causality and padding must hold through them too.
    "ff_xt": (dict(ff_glu=True, ff_glu_mult_bias=True, ff_solu=True), ["proj_in.mult_bias", "proj_in.act.norm"]),
    "ff_xt_softclamp": (dict(ff_glu=True, ff_swish=True, ff_glu_softclamp=True, ff_glu_gate_softclamp_value=0.5),
                        []),
    "residual_attn_post_norm": (dict(residual_attn=True, pre_norm=False), []),
    "cross_residual_attn": (dict(cross_residual_attn=True), []),
    "dropout": (dict(attn_dropout=0.2, ff_dropout=0.2), []),
    # x-transformers' other scoring functions (their pages: attention/sigmoid_attention.py, ...).
    "sigmoid": (dict(attn_sigmoid=True), []),
    "hard": (dict(attn_hard=True), []),
    "cog_softclamp": (dict(attn_cog_signed=True, attn_softclamp_logits=True, attn_logit_softclamp_value=2.0), []),
    "l2_laser_zero_kv": (dict(attn_l2_distance=True, attn_laser=True, attn_add_zero_kv=True), []),
    "topk_straight_through_sink": (dict(attn_sparse_topk=2, attn_sparse_topk_straight_through=True,
                                        attn_head_learned_sink=True), ["normaliser.sink"]),
    "latent_qkv": (dict(attn_use_latent_q=True, attn_dim_latent_q=12, attn_use_latent_kv=True, attn_dim_latent_kv=12,
                        attn_latent_rope_subheads=1),
                   ["latent_qkv.to_latent_q", "latent_qkv.to_q", "latent_qkv.to_latent_kv", "latent_qkv.up_kv"]),
    "latent_deepseek": (dict(attn_use_latent_q=True, attn_dim_latent_q=12, attn_use_latent_kv=True,
                             attn_dim_latent_kv=10, attn_latent_rope_dim=4, attn_latent_norm=True,
                             attn_latent_value_dim_head=6),
                        ["latent_qkv.norm_q", "latent_qkv.norm_kv", "latent_qkv.up_kv"]),
    # Value residual learning (residual/value_residual.py): the learned mix of every layer after the first of its kind.
    "value_residual": (dict(add_value_residual=True, attn_learned_value_residual_mix=True), ["value_mix.proj"]),
    "all_compatible": (dict(attn_num_mem_kv=2, attn_sparse_topk=4, attn_talking_heads=True,
                            attn_collab_heads=True, attn_on_attn=True, attn_gate_values=True,
                            attn_head_scale=True, use_qk_norm_attn=True, qk_norm_attn_seq_len=16, residual_attn=True,
                            attn_dropout=0.1), ["memory_kv.keys", "score_transform.transforms.0.pre", "qk_proj.mixing",
                                                "to_out.proj", "output_gate.gates.0", "output_gate.gates.1",
                                                "qk_transform.temperature"]),
}

# Keywords that only make sense on a stack with cross-attention layers.
NEEDS_CROSS = {"cross_residual_attn"}
# Features whose randomness is part of the forward: tests run them in training mode, reseeded.
STOCHASTIC = {"dropout", "all_compatible", "sublayer_dropout"}

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
