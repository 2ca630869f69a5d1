"""LLaMA, Qwen2 and Mistral: the converted model equals Hugging Face's (random weights, small configs)."""

from __future__ import annotations

import pytest
import torch
from pretrained_parity import CausalLMChecks, assert_from_pretrained_matches, pair_fixture, random_hf

from labml_style_nn import Decoder, TransformerWrapper, from_hf
from labml_style_nn.pretrained import llama

transformers = pytest.importorskip("transformers")

V = 103
# (config class, model class, config): several sizes, odd head counts, grouped and single key/value
# heads, tied and untied heads, any rope base, biases, a head width that is not dim / heads.
CONFIGS = {
    "llama-mha-untied": ("LlamaConfig", "LlamaForCausalLM",
                         dict(hidden_size=40, num_attention_heads=5, num_key_value_heads=5, intermediate_size=70,
                              num_hidden_layers=2)),
    "llama-gqa-tied-theta": ("LlamaConfig", "LlamaForCausalLM",
                             dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=100,
                                  num_hidden_layers=3, tie_word_embeddings=True, rope_theta=500.0)),
    "llama-mqa-biases-head-dim": ("LlamaConfig", "LlamaForCausalLM",
                                  dict(hidden_size=36, num_attention_heads=3, num_key_value_heads=1, head_dim=20,
                                       intermediate_size=50, num_hidden_layers=2, attention_bias=True, mlp_bias=True,
                                       rms_norm_eps=1e-5)),
    "llama-linear-rope": ("LlamaConfig", "LlamaForCausalLM",
                          dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                               num_hidden_layers=1,
                               rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})),
    "qwen2-gqa-tied": ("Qwen2Config", "Qwen2ForCausalLM",
                       dict(hidden_size=56, num_attention_heads=7, num_key_value_heads=1, intermediate_size=90,
                            num_hidden_layers=2, tie_word_embeddings=True, rope_theta=1e6)),
    "mistral-window": ("MistralConfig", "MistralForCausalLM",
                       dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                            intermediate_size=72, num_hidden_layers=2, sliding_window=6)),
}


def random_biases_and_gains(name: str, p: torch.Tensor) -> None:
    # Random biases and norm gains, so that one mapped to the wrong place shows.
    if name.endswith("bias") or "norm" in name:
        p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)


def make_hf(name: str, seed: int = 0):
    config_cls, model_cls, kwargs = CONFIGS[name]
    config = dict(vocab_size=V, max_position_embeddings=128, initializer_range=0.1, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0, **kwargs)
    return random_hf(config_cls, model_cls, config, seed=seed, draw=random_biases_and_gains)


pair = pair_fixture(make_hf, CONFIGS)


def test_returns_a_transformer_wrapper_with_a_decoder_in_eval_mode(pair):
    hf, ours = pair
    assert isinstance(ours, TransformerWrapper) and isinstance(ours.attn_layers, Decoder)
    assert not ours.training
    # The cache holds only the key/value heads.
    attn = ours.attn_layers.blocks[0].fn
    assert attn.kv_heads == hf.config.num_key_value_heads


class TestAgainstHuggingFace(CausalLMChecks):
    # 40 tokens: well past Mistral's window of 6.
    vocab, logits_shape, padded_lengths = V, (3, 40), (21, 13, 5)
    greedy_prompt, greedy_steps = (2, 8), 24
    left_padded_lengths, left_padded_steps = (10, 3, 7), 12


@pytest.mark.parametrize("name", ["llama-gqa-tied-theta", "qwen2-gqa-tied", "mistral-window"])
def test_from_pretrained_reads_a_saved_folder(tmp_path, name):
    hf = make_hf(name, seed=1)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / name, torch.randint(0, V, (2, 12)))


def test_from_pretrained_reads_sharded_checkpoints(tmp_path):
    hf = make_hf("llama-mha-untied", seed=2)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / "sharded", torch.randint(0, V, (2, 12)),
                                   max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()


def test_mistral_window_is_w_equals_s_minus_one():
    # Hugging Face's window of S keys counts the query itself.
    config = make_hf("mistral-window").config.to_dict()
    assert llama.window_keywords(config) == {"attn_max_attend_past": 5}
    ours = llama.build(config)
    assert ours.attn_layers.blocks[0].fn.max_attend_past == 5


def test_unsupported_configs_are_refused():
    config = make_hf("llama-mha-untied").config.to_dict()
    with pytest.raises(ValueError, match="rope_type"):
        llama.build(dict(config, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}))
    qwen = make_hf("qwen2-gqa-tied").config.to_dict()
    mixed = dict(qwen, use_sliding_window=True, sliding_window=4,
                 layer_types=["full_attention", "sliding_attention"])
    with pytest.raises(ValueError, match="sliding window"):
        llama.build(mixed)


def test_unknown_weights_are_refused():
    hf = make_hf("llama-mha-untied")
    state = dict(hf.state_dict(), **{"model.layers.0.self_attn.q_norm.weight": torch.ones(8)})
    with pytest.raises(ValueError, match="q_norm"):
        llama.convert(hf.config.to_dict(), state)
