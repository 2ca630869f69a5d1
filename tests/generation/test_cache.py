"""Cached generation equals uncached generation, and a cached step equals a full pass, per feature."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper, XTransformer
from labml_style_nn.generation import AutoregressiveWrapper, LayersCache

V = 37

# Each case: (wrapper keywords, decoder keywords).
FEATURES = {
    "learned_abs": ({}, {}),
    "sinusoidal_abs": ({"sinusoidal_pos_emb": True}, {}),
    "rotary": ({}, {"rotary_pos_emb": True}),
    "rotary_partial": ({}, {"rotary_pos_emb": True, "rotary_emb_dim": 4}),
    "alibi": ({}, {"alibi_pos_emb": True}),
    "alibi_some_heads": ({}, {"alibi_pos_emb": True, "alibi_num_heads": 1}),
    "t5": ({}, {"rel_pos_bias": True}),
    "position_infused": ({}, {"position_infused_attn": True}),
    "persistent_memory": ({}, {"attn_num_mem_kv": 3}),
    "memory_tokens": ({"num_memory_tokens": 2}, {"rotary_pos_emb": True}),
    "talking_heads": ({}, {"attn_talking_heads": True}),
    "residual_attn": ({}, {"residual_attn": True, "rel_pos_bias": True}),
    "qk_norm": ({}, {"attn_qk_norm": True}),
    "macaron": ({}, {"macaron": True}),
    "gated_residual": ({}, {"gate_residual": True}),
    "token_shift": ({}, {"shift_tokens": 1}),
    "token_shift_2": ({}, {"shift_tokens": 2, "rotary_pos_emb": True}),
    "sandwich_rezero": ({}, {"sandwich_norm": True, "scale_residual": True}),
    "gates_aoa": ({}, {"attn_gate_values": True, "attn_head_scale": True, "attn_on_attn": True}),
    "collab_heads": ({}, {"attn_collab_heads": True}),
    "sparse_topk_entmax": ({}, {"attn_sparse_topk": 3, "alibi_pos_emb": True}),
    "entmax": ({}, {"attn_use_entmax15": True}),
    # Running states in the cache (selective attention's sums, the forget gates' sums) and per-query positions.
    "selective_forget_cope": ({}, {"attn_selective": True, "attn_data_dependent_alibi": True, "attn_use_cope": True,
                                   "attn_use_rel_proj_pos_bias": True, "attn_add_zero_kv": True, "attn_laser": True}),
    "rotary_qk_norm": ({}, {"rotary_pos_emb": True, "attn_qk_norm": True}),
    "t5_value_gates": ({}, {"rel_pos_bias": True, "attn_gate_values": True}),
    "xt_attention": ({}, {"rotary_pos_emb": True, "attn_pre_talking_heads": True, "attn_post_talking_heads": True,
                          "attn_pre_scale_post_talking_heads": True, "attn_gate_values": True,
                          "attn_gate_values_rank": 4, "attn_output_gate": True, "attn_gate_value_heads": True,
                          "attn_qk_rmsnorm": True, "attn_value_rmsnorm": True, "attn_value_dim_head": 12}),
    "xt_qk_norm_fused": ({}, {"rotary_pos_emb": True, "attn_qk_norm": True, "attn_qk_norm_groups": 2,
                              "attn_qk_norm_dim_scale": True, "attn_onnxable": True, "attn_flash": True}),
    "latent_kv_rotary": ({}, {"rotary_pos_emb": True, "attn_use_latent_kv": True, "attn_dim_latent_kv": 6}),
    "latent_rope_subheads": ({}, {"rotary_pos_emb": True, "attn_use_latent_q": True, "attn_dim_latent_q": 6,
                                  "attn_use_latent_kv": True, "attn_dim_latent_kv": 6,
                                  "attn_latent_rope_subheads": 1}),
    "latent_deepseek": ({}, {"rotary_pos_emb": True, "attn_use_latent_kv": True, "attn_dim_latent_kv": 6,
                             "attn_latent_rope_dim": 4, "attn_latent_norm": True, "attn_qk_norm": True}),
    # layers-a: the stack's norms, layouts and positions
    "xpos": ({}, {"rotary_xpos": True, "rotary_xpos_scale_base": 16, "verbose": False}),
    "dynamic_pos_bias": ({}, {"dynamic_pos_bias": True, "dynamic_pos_bias_log_distance": True,
                              "dynamic_pos_bias_norm": True}),
    "dyt_layerscale_softclamp": ({}, {"use_dynamic_tanh": True, "use_layerscale": True, "layerscale_init_value": 0.5,
                                      "softclamp_output": True, "softclamp_output_value": 5.0}),
    "tied_pre_and_post_derf": ({}, {"weight_tie_layers": True, "pre_and_post_norm": True, "use_derf": True}),
    "par_alibi_slopes_simple_rms": ({}, {"par_ratio": 2, "alibi_pos_emb": True, "use_simple_rmsnorm": True,
                                         "rel_pos_kwargs": {"slopes": [0.2, 0.6]}}),
    "polar": ({}, {"polar_pos_emb": True, "polar_bias_uniform_init": True}),
    "everything": ({"num_memory_tokens": 2}, {"rotary_pos_emb": True, "attn_num_mem_kv": 2, "macaron": True,
                                             "attn_qk_norm": True, "shift_tokens": 1, "residual_attn": True,
                                             "gate_residual": True, "attn_talking_heads": True}),
}


def make(wrap, layers, max_seq_len=64):
    net = TransformerWrapper(num_tokens=V, max_seq_len=max_seq_len,
                             attn_layers=Decoder(dim=16, depth=2, heads=2, attn_dim_head=8, **layers), **wrap)
    # Nonzero values for parameters initialised at zero (ReZero, gates), so that they matter.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return AutoregressiveWrapper(net).eval()


@pytest.mark.parametrize("name", FEATURES)
def test_cached_greedy_equals_uncached(name):
    model = make(*FEATURES[name])
    prompts = torch.randint(0, V, (2, 5))
    cached = model.generate(prompts, 12, temperature=0.0)
    uncached = model.generate(prompts, 12, temperature=0.0, cache_kv=False)
    assert cached.shape == (2, 12)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("name", FEATURES)
def test_cached_step_logits_equal_full_pass(name):
    wrap, layers = FEATURES[name]
    net = make(wrap, layers).net
    seq = torch.randint(0, V, (2, 11))
    cache = LayersCache(net.attn_layers, 2, 11 + wrap.get("num_memory_tokens", 0))
    with torch.no_grad():
        first = net(seq[:, :4], cache=cache)
        torch.testing.assert_close(first, net(seq[:, :4]), atol=1e-4, rtol=0)
        for t in range(4, 11):
            step = net(seq[:, t:t + 1], cache=cache)[:, -1]
            full = net(seq[:, :t + 1])[:, -1]
            torch.testing.assert_close(step, full, atol=1e-4, rtol=0)


def test_cache_is_preallocated_once():
    net = make({}, {"rotary_pos_emb": True}).net
    cache = LayersCache(net.attn_layers, 1, 8)
    seq = torch.randint(0, V, (1, 8))
    with torch.no_grad():
        net(seq[:, :3], cache=cache)
        buffers = [b.attn.k.data_ptr() for b in cache.blocks if b.attn is not None]
        for t in range(3, 8):
            net(seq[:, t:t + 1], cache=cache)
    assert buffers == [b.attn.k.data_ptr() for b in cache.blocks if b.attn is not None]
    assert cache.offset == 8
    with pytest.raises(ValueError, match="max_len"):
        net(seq[:, :1], cache=cache)


@pytest.mark.parametrize("dec", [{}, {"rotary_pos_emb": True, "attn_num_mem_kv": 2}, {"shift_tokens": 1}])
def test_xtransformer_generate_cached_equals_uncached(dec):
    model = XTransformer(dim=16, enc_num_tokens=V, enc_depth=1, enc_heads=2, enc_max_seq_len=32,
                         dec_num_tokens=V, dec_depth=2, dec_heads=2, dec_max_seq_len=32,
                         **{f"dec_{k}": v for k, v in dec.items()}).eval()
    src = torch.randint(0, V, (2, 7))
    src_mask = torch.ones(2, 7, dtype=torch.bool)
    src_mask[1, 5:] = False
    start = torch.randint(0, V, (2, 1))
    cached = model.generate(src, start, 10, src_mask=src_mask, temperature=0.0)
    uncached = model.generate(src, start, 10, src_mask=src_mask, temperature=0.0, cache_kv=False)
    assert torch.equal(cached, uncached)
    # The step logits equal a full pass with the same context.
    enc = model.encode(src, src_mask)
    net = model.decoder.net
    seq = torch.cat((start, cached), dim=1)
    cache = LayersCache(net.attn_layers, 2, seq.shape[1])
    with torch.no_grad():
        net(seq[:, :1], cache=cache, context=enc, context_mask=src_mask)
        for t in range(1, seq.shape[1]):
            step = net(seq[:, t:t + 1], cache=cache, context=enc, context_mask=src_mask)[:, -1]
            full = net(seq[:, :t + 1], context=enc, context_mask=src_mask)[:, -1]
            torch.testing.assert_close(step, full, atol=1e-4, rtol=0)


def test_one_token_steps_take_the_fast_attention_path(monkeypatch):
    from labml_style_nn.attention.attention import Attention
    calls = []
    original = Attention._cached_step
    monkeypatch.setattr(Attention, "_cached_step", lambda self, *a: calls.append(1) or original(self, *a))
    model = make({}, {"rotary_pos_emb": True})
    model.generate(torch.randint(0, V, (1, 3)), 5, temperature=0.0)
    assert len(calls) == 4 * 2  # 4 one-token steps after the prompt, 2 self-attention layers
