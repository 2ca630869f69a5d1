"""Qwen3-MoE: the converted model equals Hugging Face's (random weights, small configs)."""

from __future__ import annotations

import pytest
import torch
from pretrained_parity import CausalLMChecks, assert_from_pretrained_matches, pair_fixture, random_hf

from labml_style_nn import from_hf
from labml_style_nn.attention.qk_rmsnorm import QKRMSNorm
from labml_style_nn.moe import MixtureOfExperts
from labml_style_nn.pretrained import qwen3_moe

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Qwen3MoeForCausalLM"):
    pytest.skip("this transformers has no Qwen3-MoE", allow_module_level=True)

V = 97
# Grouped key/value heads and a head width other than hidden / heads; renormalised and raw gates.
# (Widths a multiple of 4: `transformers` multiplies the experts with `grouped_mm`, which needs rows
# of a multiple of 16 bytes.)
CONFIGS = {
    "norm-gates": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                       intermediate_size=48, num_hidden_layers=2, num_experts=6, num_experts_per_tok=2,
                       moe_intermediate_size=12, norm_topk_prob=True),
    "raw-gates-tied": dict(hidden_size=24, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                           intermediate_size=16, num_hidden_layers=1, num_experts=4, num_experts_per_tok=3,
                           moe_intermediate_size=20, norm_topk_prob=False, tie_word_embeddings=True),
}


def random_gains_and_routers(name: str, p: torch.Tensor) -> None:
    if "norm" in name:
        # Gains away from one, so that a q/k gain copied to the wrong place would show.
        p.normal_(1.0, 0.3)
    elif name.endswith("mlp.gate.weight"):
        # Routers with clear preferences, so that every expert is chosen by some token.
        p.normal_(0.0, 0.5)


def make_hf(name: str, seed: int = 0):
    config = dict(vocab_size=V, max_position_embeddings=128, initializer_range=0.1, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0, **CONFIGS[name])
    return random_hf("Qwen3MoeConfig", "Qwen3MoeForCausalLM", config, seed=seed, draw=random_gains_and_routers)


pair = pair_fixture(make_hf, CONFIGS)


def test_layers_are_mixtures_with_qk_rmsnorm_and_no_shared_expert(pair):
    hf, ours = pair
    ffs = [b.fn for b in ours.attn_layers.blocks if b.kind == "f"]
    attns = [b.fn for b in ours.attn_layers.blocks if b.kind == "a"]
    assert len(ffs) == hf.config.num_hidden_layers
    assert all(isinstance(f, MixtureOfExperts) and f.shared is None for f in ffs)
    assert all(isinstance(a.qk_transform, QKRMSNorm) and a.qk_transform.q_norm is not None for a in attns)


class TestAgainstHuggingFace(CausalLMChecks):
    vocab, logits_shape, padded_lengths = V, (3, 24), (15, 9, 4)
    greedy_prompt, greedy_steps = (2, 6), 16
    left_padded_lengths, left_padded_steps = (7, 3, 5), 10


def test_from_pretrained_reads_a_saved_folder(tmp_path):
    # Saved checkpoints hold one tensor per expert (`mlp.experts.{j}.gate_proj`).
    hf = make_hf("norm-gates", seed=1)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / "qwen3", torch.randint(0, V, (2, 10)))


def test_unsupported_configs_are_refused():
    config = make_hf("norm-gates").config.to_dict()
    for name, value in (("decoder_sparse_step", 2), ("mlp_only_layers", [0]), ("use_sliding_window", True)):
        with pytest.raises(ValueError, match=name):
            qwen3_moe.build(dict(config, **{name: value}))
