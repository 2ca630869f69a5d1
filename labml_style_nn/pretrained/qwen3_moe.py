r"""
# Qwen3-MoE

*Paper:* [Qwen3 Technical Report](https://arxiv.org/abs/2505.09388) (Yang et al., 2025)

Qwen3-MoE is the [Qwen2-MoE](mixtral.md) decoder with three changes, each of them a keyword here:

1. **No shared expert.**  Every token goes through its $k$ routed experts only (128 experts, 8 per
   token in Qwen3-30B-A3B), so the layer is Mixtral's with more and narrower experts.
2. **Renormalised gates** (`norm_topk_prob=True` in the released configs): the softmax
   probabilities of the $k$ chosen experts divided by their sum ([Mixtral routing](../moe/mixtral.md)).
3. **RMSNorm on the queries and keys of every head** before the rotary embedding, in place of
   Qwen2's biases on $q, k, v$ ([qk RMSNorm](../attention/qk_rmsnorm.md)):

   $$\hat q_{hi} = \gamma^q \odot \frac{q_{hi}}{\operatorname{RMS}(q_{hi})}, \qquad
   \hat k_{gj} = \gamma^k \odot \frac{k_{gj}}{\operatorname{RMS}(k_{gj})}.$$

   It bounds the attention logits, as in ViT-22B; Qwen3 uses it in place of QKV biases.

```python
Decoder(..., attn_qk_rmsnorm=True, ff_num_experts=128, ff_top_k=8, ff_expert_inner_dim=768,
        ff_norm_gates=True, ff_glu=True, ff_swish=True, ff_no_bias=True)
```

## The weights

Besides those of the [LLaMA page](llama.md) and the experts of the [Mixtral page](mixtral.md)
(`mlp.gate.weight`, `mlp.experts.gate_up_proj`, `mlp.experts.down_proj`, or one tensor per expert in
saved checkpoints), layer $i$ has:

| Hugging Face | ours (`attn_layers.blocks.{2i}.fn.qk_transform`) |
|---|---|
| `layers.{i}.self_attn.q_norm.weight` `(d,)` | `q_norm.gain` `(h, 1, d)`, the same gain for every head |
| `layers.{i}.self_attn.k_norm.weight` `(d,)` | `k_norm.gain` `(g, 1, d)` |

## Differences from the original

* Qwen3 shares one gain vector across the heads; ours has one per head, each set to the same
  vector by the conversion (training may then let them differ).
* Qwen3 divides by $\sqrt{\operatorname{mean}(q^2) + \epsilon}$ with `rms_norm_eps`
  ($10^{-6}$); ours by $\lVert q \rVert / \sqrt d$ with no $\epsilon$ inside the root.  For a
  head vector of mean square $m$ the two differ by a factor $\sqrt{1 + \epsilon / m}$, about
  $1 + 5 \cdot 10^{-7}$ at $m = 1$: below the float32 tolerance of the parity tests
  (`tests/pretrained/test_qwen3_moe.py`, logits within $10^{-4}$).
* Checkpoints with dense layers between the sparse ones (`decoder_sparse_step > 1`,
  `mlp_only_layers`) and those with a sliding window are refused, as for Qwen2-MoE.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..models.wrappers import TransformerWrapper
from . import llama, mixtral
from .common import WeightMap, config_value, refuse
from .gpt2 import activation

MODEL_TYPES = ("qwen3_moe",)


#
# ## The model, from the config
def build(config: dict[str, Any]) -> TransformerWrapper:
    """Qwen3-MoE: LLaMA's decoder with qk RMSNorm and mixture-of-experts feed-forward layers."""
    refuse(config, "decoder_sparse_step", 1, "dense layers between the sparse ones")
    if config.get("mlp_only_layers"):
        raise ValueError(f"config: mlp_only_layers={config['mlp_only_layers']!r} is not supported (dense layers "
                         "between the sparse ones); expected []")
    if config.get("use_sliding_window"):
        raise ValueError("config: use_sliding_window=True is not supported for qwen3_moe; expected False")
    ff = dict(ff_glu=True, ff_activation=activation(config_value(config, "hidden_act", default="silu")),
              ff_no_bias=True, ff_balance_loss=float(config_value(config, "router_aux_loss_coef", default=0.0)),
              ff_num_experts=config_value(config, "num_experts", "num_local_experts"), ff_top_k=config["num_experts_per_tok"],
              ff_expert_inner_dim=config["moe_intermediate_size"],
              ff_norm_gates=bool(config.get("norm_topk_prob", False)))
    # No sliding window: `llama.build` reads one only for Mistral and Qwen2 configs that enable it.
    return llama.build({**config, "sliding_window": None}, attn_qk_rmsnorm=True, **ff)


#
# ## The weights
def convert(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face Qwen3-MoE weights under our names."""
    num_experts, heads = config_value(config, "num_experts", "num_local_experts"), config["num_attention_heads"]
    kv_heads = config_value(config, "num_key_value_heads", default=heads)

    def convert_layer(w: WeightMap, out: dict[str, Tensor], theirs: str, ours: str) -> None:
        out[f"{ours}.router.proj.weight"] = w[f"{theirs}.gate.weight"]
        out[f"{ours}.experts.w_in"], out[f"{ours}.experts.w_out"] = mixtral.expert_weights(w, theirs, num_experts)
        # The attention block of the same layer: `layers.{i}.mlp` -> `layers.{i}.self_attn`, block 2i+1 -> 2i
        layer, block = theirs.removesuffix(".mlp"), int(ours.split(".")[2]) - 1
        norms = f"attn_layers.blocks.{block}.fn.qk_transform"
        # One gain $\gamma$ `(d,)` shared by the heads: copied to each head, `(h, 1, d)`
        for name, count in (("q_norm", heads), ("k_norm", kv_heads)):
            gain = w[f"{layer}.self_attn.{name}.weight"]
            out[f"{norms}.{name}.gain"] = gain.expand(count, 1, -1).clone()

    return llama.convert(config, state, mlp=convert_layer)
