"""DeepSeek-V3: the converted model equals Hugging Face's (dense and expert layers), and generation caches the latent."""

from __future__ import annotations

import doctest

import pytest
import torch
from pretrained_parity import CausalLMChecks, assert_from_pretrained_matches, pair_fixture, random_hf

from labml_style_nn import AutoregressiveWrapper, from_hf
from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.pretrained import deepseek_v3

transformers = pytest.importorskip("transformers")

V = 61
# Head widths all differ, so that a width mapped to the wrong place shows.  The expert sizes only act in
# the layers from first_k_dense_replace on (widths of multiples of 4 floats: Hugging Face's grouped
# multiply of the experts on the CPU needs 16-byte rows).
BASE = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=10, qk_nope_head_dim=8,
            qk_rope_head_dim=4, v_head_dim=6, intermediate_size=48, n_routed_experts=8, n_group=4, topk_group=2,
            num_experts_per_tok=2, moe_intermediate_size=8, n_shared_experts=1, routed_scaling_factor=2.5)
CONFIGS = {
    "q-latent-interleaved": dict(q_lora_rank=12, num_hidden_layers=2, first_k_dense_replace=2),
    "no-q-latent-halves-tied-theta": dict(q_lora_rank=None, num_hidden_layers=1, first_k_dense_replace=1,
                                          rope_interleave=False, tie_word_embeddings=True,
                                          rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    # DeepSeek-V3's own scaling (its checkpoints: factor 40 over 4096 tokens, mscale = mscale_all_dim = 1),
    # here over a training length of 16 (64 / 4) so that the 20-token inputs reach past it
    # One dense layer, then two mixtures of experts: sigmoid gates, a balancing bias, 2 of 4 groups.
    "moe": dict(q_lora_rank=12, num_hidden_layers=3, first_k_dense_replace=1),
    "yarn": dict(q_lora_rank=12, num_hidden_layers=1, first_k_dense_replace=1,
                 rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                  "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1,
                                  "mscale": 1.0, "mscale_all_dim": 0.7}),
}


# Norm gains away from 1, so that a gain mapped to the wrong norm shows; router weights and a
# balancing bias large enough to change which experts are chosen.
def random_gains_and_routers(name: str, p: torch.Tensor) -> None:
    if "norm" in name:
        p.normal_(1.0, 0.2)
    elif name.endswith("mlp.gate.weight"):
        p.normal_(0.0, 0.5)


def random_balancing_bias(name: str, b: torch.Tensor) -> None:
    if name.endswith("e_score_correction_bias"):
        b.normal_(0.0, 0.3)


def make_hf(name: str, seed: int = 0):
    config = dict(vocab_size=V, max_position_embeddings=64, initializer_range=0.1, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0, **BASE, **CONFIGS[name])
    return random_hf("DeepseekV3Config", "DeepseekV3ForCausalLM", config, seed=seed, draw=random_gains_and_routers,
                     draw_buffer=random_balancing_bias)


pair = pair_fixture(make_hf, CONFIGS)


class TestAgainstHuggingFace(CausalLMChecks):
    vocab, logits_shape, padded_lengths = V, (2, 20), (13, 9, 4)
    greedy_prompt, greedy_steps = (2, 6), 12
    left_padded_lengths, left_padded_steps = (7, 3), 8


def test_expert_layers_follow_first_k_dense_replace():
    ours = deepseek_v3.build(make_hf("moe").config.to_dict())
    ffs = [b.fn for b in ours.attn_layers.blocks if b.kind == "f"]
    assert [type(f).__name__ for f in ffs] == ["FeedForward", "MixtureOfExperts", "MixtureOfExperts"]


@torch.no_grad()
def test_generation_caches_the_latent():
    # Per token and layer the cache holds kv_lora_rank + qk_rope_head_dim = 10 + 4 = 14 numbers, not
    # the 2 h d = 2 * 4 * 8 = 64 (keys of d_nope + d_R = 12 and values of 6: 72) of the expanded heads.
    hf = make_hf("q-latent-interleaved")
    ours = from_hf(hf)
    seen = []

    def make_cache(layers, batch):  # the growing cache `generate` makes by default, kept for a look
        seen.append(LayersCache(layers, batch, 5 + 4))
        return seen[-1]

    prompt, wrapper = torch.randint(0, V, (2, 5)), AutoregressiveWrapper(ours)
    tokens = wrapper.generate(prompt, 4, temperature=0.0, cache_kv=make_cache)
    assert torch.equal(tokens, wrapper.generate(prompt, 4, temperature=0.0)) and seen
    for block in seen[0].blocks:
        if block.attn is not None:
            c, k_rope = block.attn.k, block.attn.v
            assert c.shape[:2] == (2, 1) and k_rope.shape[:2] == (2, 1)
            assert c.shape[-1] + k_rope.shape[-1] == 10 + 4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_pretrained_reads_a_saved_folder(tmp_path, name):
    hf = make_hf(name, seed=1)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / name, torch.randint(0, V, (2, 9)))


def test_unsupported_configs_are_refused():
    config = make_hf("q-latent-interleaved").config.to_dict()
    with pytest.raises(ValueError, match="rope_type"):
        deepseek_v3.build(dict(config, rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e4}))
    with pytest.raises(ValueError, match="attention_bias"):
        deepseek_v3.build(dict(config, attention_bias=True))
    with pytest.raises(ValueError, match="num_key_value_heads"):
        deepseek_v3.build(dict(config, num_key_value_heads=2))


def test_unknown_weights_are_refused():
    hf = make_hf("q-latent-interleaved")
    state = dict(hf.state_dict(), **{"model.layers.0.self_attn.q_norm.weight": torch.ones(8)})
    with pytest.raises(ValueError, match="q_norm"):
        deepseek_v3.convert(hf.config.to_dict(), state)


def test_docstring_examples():
    assert doctest.testmod(deepseek_v3).failed == 0
