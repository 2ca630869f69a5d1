"""GPT-2: the converted model equals Hugging Face's `GPT2LMHeadModel` (random weights, small configs)."""

from __future__ import annotations

import pytest
import torch
from pretrained_parity import CausalLMChecks, assert_from_pretrained_matches, pair_fixture, random_hf

from labml_style_nn import Decoder, TransformerWrapper, from_hf, from_pretrained
from labml_style_nn.pretrained import gpt2

transformers = pytest.importorskip("transformers")

V = 101
CONFIGS = {
    "small": dict(n_embd=32, n_layer=2, n_head=4),
    "odd-heads": dict(n_embd=45, n_layer=3, n_head=5),
    "untied-relu-inner": dict(n_embd=24, n_layer=1, n_head=3, n_inner=40, activation_function="relu",
                              tie_word_embeddings=False),
}


def random_biases_and_gains(name: str, p: torch.Tensor) -> None:
    # Random biases and norm gains, so that a bias or gain mapped to the wrong place shows.
    if name.endswith("bias") or ".ln_" in name:
        p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)


def make_hf(name: str, seed: int = 0):
    config = dict(vocab_size=V, n_positions=64, bos_token_id=1, eos_token_id=1, initializer_range=0.1, **CONFIGS[name])
    return random_hf("GPT2Config", "GPT2LMHeadModel", config, seed=seed, draw=random_biases_and_gains)


pair = pair_fixture(make_hf, CONFIGS)


def test_returns_a_transformer_wrapper_with_a_decoder_in_eval_mode(pair):
    _, ours = pair
    assert isinstance(ours, TransformerWrapper) and isinstance(ours.attn_layers, Decoder)
    assert not ours.training


class TestAgainstHuggingFace(CausalLMChecks):
    vocab, logits_shape, padded_lengths = V, (3, 40), (17, 9, 4)
    greedy_prompt, greedy_steps = (2, 7), 20
    left_padded_lengths, left_padded_steps = (9, 3, 6), 10


def test_from_pretrained_reads_a_saved_folder(tmp_path):
    hf = make_hf("small", seed=1)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / "gpt2", torch.randint(0, V, (2, 12)))


def test_from_pretrained_reads_sharded_checkpoints(tmp_path):
    hf = make_hf("odd-heads", seed=2)
    assert_from_pretrained_matches(hf, from_hf(hf), tmp_path / "sharded", torch.randint(0, V, (2, 12)),
                                   max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()


def test_the_gelu_approximation_matters():
    # GPT-2's "gelu_new" is GELU's tanh form; the exact GELU moves the logits well past the tolerance.
    hf = make_hf("small")
    exact = from_hf(hf)
    for block in exact.attn_layers.blocks[1::2]:
        block.fn.proj_in[1] = torch.nn.GELU()
    x = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        assert (exact(x) - hf(x).logits).abs().max() > 1e-4


def test_unknown_weights_are_refused():
    hf = make_hf("small")
    config, state = hf.config.to_dict(), dict(hf.state_dict())
    state["transformer.h.0.attn.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match="extra"):
        gpt2.convert(config, state)


def test_unsupported_config_is_refused():
    config = make_hf("small").config.to_dict()
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        gpt2.build(dict(config, scale_attn_by_inverse_layer_idx=True))


def test_from_pretrained_offline_names_what_it_tried_and_how_to_pass_a_folder(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(OSError, match="not a local folder.*Hugging Face hub.*path of a folder"):
        from_pretrained("someone/no-such-model")
    with pytest.raises(FileNotFoundError, match="name_or_path"):
        from_pretrained(tmp_path / "missing")
