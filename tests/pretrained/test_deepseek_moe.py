"""DeepSeek-V3's feed-forward layers: each converted layer computes Hugging Face's `mlp` (random weights)."""

from __future__ import annotations

import pytest
import torch

from labml_style_nn import Decoder
from labml_style_nn.feedforward import FeedForward
from labml_style_nn.moe import MixtureOfExperts
from labml_style_nn.pretrained import deepseek_moe
from labml_style_nn.pretrained.common import WeightMap
from labml_style_nn.pretrained.loading import read_checkpoint

transformers = pytest.importorskip("transformers")

D, LAYERS = 24, 3


@pytest.fixture(scope="module")
def hf():
    # Widths of multiples of 4 floats: Hugging Face's grouped multiply on the CPU needs rows of 16-byte multiples.
    torch.manual_seed(0)
    config = transformers.DeepseekV3Config(
        vocab_size=50, hidden_size=D, intermediate_size=40, moe_intermediate_size=12, num_hidden_layers=LAYERS,
        num_attention_heads=2, num_key_value_heads=2, n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=2,
        n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True,
        q_lora_rank=None, kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
        max_position_embeddings=64, initializer_range=0.2)
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers[1:]:
            # A balancing bias large enough to change which experts are chosen.
            layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.3)
            layer.mlp.gate.weight.normal_(0.0, 0.5)
    return model


def convert_into(stack: Decoder, config: dict, state: dict) -> WeightMap:
    w = WeightMap(state, prefix="model.")
    for i in range(LAYERS):
        out: dict = {}
        block = stack.blocks[2 * i + 1]
        deepseek_moe.convert_mlp(config, w, out, i, "fn")
        block.fn.load_state_dict({k.removeprefix("fn."): v for k, v in out.items()}, strict=True)
    return w


def assert_layers_match(hf, stack: Decoder) -> None:
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        for i in range(LAYERS):
            torch.testing.assert_close(stack.blocks[2 * i + 1].fn(x), hf.model.layers[i].mlp(x), rtol=1e-4, atol=1e-5)


def test_each_layer_equals_hugging_faces(hf):
    config = hf.config.to_dict()
    stack = Decoder(dim=D, depth=LAYERS, heads=2, **deepseek_moe.moe_keywords(config)).eval()
    ffs = [b.fn for b in stack.blocks if b.kind == "f"]
    assert isinstance(ffs[0], FeedForward) and all(isinstance(f, MixtureOfExperts) for f in ffs[1:])
    w = convert_into(stack, config, dict(hf.state_dict()))
    assert [k for k in w.unused() if ".mlp." in k] == [], "feed-forward weights the conversion left out"
    assert_layers_match(hf, stack)
    # The bias was carried over and does change the choice.
    moe = stack.blocks[3].fn
    x = torch.randn(40, D)
    with torch.no_grad():
        biased = moe.router(x).experts.sort(-1).values
        moe.router.expert_bias.zero_()
        unbiased = moe.router(x).experts.sort(-1).values
    assert not torch.equal(biased, unbiased)


def test_saved_checkpoints_with_one_tensor_per_expert(hf, tmp_path):
    hf.save_pretrained(tmp_path)
    config, state = read_checkpoint(tmp_path)
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in state)
    stack = Decoder(dim=D, depth=LAYERS, heads=2, **deepseek_moe.moe_keywords(config)).eval()
    convert_into(stack, config, state)
    assert_layers_match(hf, stack)
