r"""
# DeepSeek-V3's feed-forward layers

*Paper:* [DeepSeek-V3 Technical Report](https://arxiv.org/abs/2412.19437) (DeepSeek-AI, 2024)

DeepSeek-V3 is a decoder with multi-head latent attention and, in every layer after the first
three, a [DeepSeekMoE](../moe/deepseek.md) feed-forward layer: one shared expert and 256
fine-grained routed experts, 8 chosen per token by sigmoid scores plus a balancing bias, within
the best 4 of 8 groups.  This page is the feed-forward half of the conversion: the keywords a
config gives, and the mapping of each layer's weights.  The attention half is on the page of the
whole model, which builds its `Decoder` with `moe_keywords(config)` and converts each layer's
feed-forward block with `convert_mlp`.

| config | keyword |
|---|---|
| `n_routed_experts`, `num_experts_per_tok` | `ff_num_experts`, `ff_top_k` |
| `moe_intermediate_size` | `ff_expert_inner_dim` |
| `n_shared_experts` | `ff_num_shared_experts` (one network of width `n_shared_experts * moe_intermediate_size`) |
| `routed_scaling_factor`, `norm_topk_prob` | `ff_routed_scale`, `ff_norm_gates` |
| `n_group`, `topk_group` | `ff_expert_groups`, `ff_expert_groups_top_k` |
| `first_k_dense_replace`, `intermediate_size` | `ff_first_dense`, `ff_inner_dim` (the dense layers' width) |
| `hidden_act` | `ff_activation` (with `ff_glu=True`: SwiGLU) |

| Hugging Face, layer $i$ | ours, the block's `fn` |
|---|---|
| `layers.{i}.mlp.{gate,up,down}_proj` ($i$ < `first_k_dense_replace`) | a SwiGLU `FeedForward` |
| `layers.{i}.mlp.gate.weight` | `router.proj.weight` |
| `layers.{i}.mlp.gate.e_score_correction_bias` | `router.expert_bias` (the balancing bias $b$) |
| `layers.{i}.mlp.experts.gate_up_proj`, `down_proj` (or `experts.{j}.{gate,up,down}_proj`) | `experts.w_in`, `experts.w_out` |
| `layers.{i}.mlp.shared_experts.{gate,up,down}_proj` | `shared` |

The released weights are in FP8 with block scales (`weight_scale_inv`); they must be dequantised
to bfloat16 or float32 before conversion (the parity test uses random float32 weights).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import llama
from .common import WeightMap, config_value
from .gpt2 import activation
from .mixtral import expert_weights


def moe_keywords(config: dict[str, Any]) -> dict[str, Any]:
    """The `ff_*` keywords of a DeepSeek-V3 config."""
    return dict(
        ff_num_experts=config["n_routed_experts"], ff_top_k=config["num_experts_per_tok"],
        ff_expert_inner_dim=config["moe_intermediate_size"], ff_num_shared_experts=config["n_shared_experts"],
        ff_router="sigmoid", ff_routed_scale=float(config["routed_scaling_factor"]),
        ff_norm_gates=bool(config["norm_topk_prob"]),
        ff_expert_groups=config["n_group"], ff_expert_groups_top_k=config["topk_group"],
        ff_first_dense=config["first_k_dense_replace"], ff_inner_dim=config["intermediate_size"],
        ff_glu=True, ff_activation=activation(config_value(config, "hidden_act", default="silu")), ff_no_bias=True,
        # V3 balances with the bias alone; its step (1e-3 in the paper) is a training choice, not in the config.
        ff_balance_loss=0.0)


def convert_mlp(config: dict[str, Any], w: WeightMap, out: dict[str, Tensor], layer: int, ours: str) -> None:
    """Layer `layer`'s feed-forward weights (`layers.{layer}.mlp`) into our block `ours` (its `fn`)."""
    theirs = f"layers.{layer}.mlp"
    if layer < config["first_k_dense_replace"]:
        llama.dense_mlp(w, out, theirs, ours)
        return
    out[f"{ours}.router.proj.weight"] = w[f"{theirs}.gate.weight"]
    out[f"{ours}.router.expert_bias"] = w[f"{theirs}.gate.e_score_correction_bias"]
    out[f"{ours}.experts.w_in"], out[f"{ours}.experts.w_out"] = expert_weights(w, theirs, config["n_routed_experts"])
    llama.dense_mlp(w, out, f"{theirs}.shared_experts", f"{ours}.shared")
