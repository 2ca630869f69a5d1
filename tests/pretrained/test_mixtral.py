"""Mixtral and Qwen2-MoE: the converted model equals Hugging Face's (random weights, small configs)."""

from __future__ import annotations

import pytest
import torch
from pretrained_parity import CausalLMChecks, assert_from_pretrained_matches, pair_fixture, random_hf

from labml_style_nn import from_hf
from labml_style_nn.moe import MixtureOfExperts
from labml_style_nn.pretrained import mixtral

transformers = pytest.importorskip("transformers")

V = 97
# Odd sizes, grouped key/value heads, tied and untied heads, renormalised and raw gates, a shared expert.
CONFIGS = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2, intermediate_size=36,
                     num_hidden_layers=2, num_local_experts=5, num_experts_per_tok=2)),
    "mixtral-top3-window-tied": ("MixtralConfig", "MixtralForCausalLM",
                                 dict(hidden_size=24, num_attention_heads=3, num_key_value_heads=1,
                                      intermediate_size=20, num_hidden_layers=2, num_local_experts=4,
                                      num_experts_per_tok=3, sliding_window=6, tie_word_embeddings=True)),
    "qwen2-moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                       num_hidden_layers=2, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=12,
                       shared_expert_intermediate_size=20, norm_topk_prob=False)),
    "qwen2-moe-norm": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                       dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=48,
                            num_hidden_layers=1, num_experts=4, num_experts_per_tok=3, moe_intermediate_size=16,
                            shared_expert_intermediate_size=8, norm_topk_prob=True)),
}


def random_biases_gains_and_routers(name: str, p: torch.Tensor) -> None:
    if name.endswith("bias") or "norm" in name:
        p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    elif "gate.weight" in name and "proj" not in name:
        # Routers with clear preferences, so that every expert is chosen by some token.
        p.normal_(0.0, 0.5)


def make_hf(name: str, seed: int = 0):
    config_cls, model_cls, kwargs = CONFIGS[name]
    config = dict(vocab_size=V, max_position_embeddings=128, initializer_range=0.1, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0, **kwargs)
    return random_hf(config_cls, model_cls, config, seed=seed, draw=random_biases_gains_and_routers)


pair = pair_fixture(make_hf, CONFIGS)


def test_every_feed_forward_layer_is_a_mixture(pair):
    hf, ours = pair
    ffs = [b.fn for b in ours.attn_layers.blocks if b.kind == "f"]
    assert len(ffs) == hf.config.num_hidden_layers and all(isinstance(f, MixtureOfExperts) for f in ffs)


class TestAgainstHuggingFace(CausalLMChecks):
    vocab, logits_shape, padded_lengths = V, (3, 24), (15, 9, 4)
    greedy_prompt, greedy_steps = (2, 6), 16
    left_padded_lengths, left_padded_steps = (7, 3, 5), 10


@pytest.mark.parametrize("name", ["mixtral", "qwen2-moe"])
def test_from_pretrained_reads_a_saved_folder(tmp_path, name):
    # Saved checkpoints hold one tensor per expert (Mixtral: `block_sparse_moe.experts.{j}.w1`).
    hf = make_hf(name, seed=1)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / name, torch.randint(0, V, (2, 10)))


def test_unsupported_configs_are_refused():
    config = make_hf("qwen2-moe").config.to_dict()
    with pytest.raises(ValueError, match="decoder_sparse_step"):
        mixtral.build(dict(config, decoder_sparse_step=2))
    with pytest.raises(ValueError, match="mlp_only_layers"):
        mixtral.build(dict(config, mlp_only_layers=[0]))
