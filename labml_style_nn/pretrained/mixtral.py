r"""
# Mixtral and Qwen2-MoE

*Papers:* [Mixtral of Experts](https://arxiv.org/abs/2401.04088) (Jiang et al., 2024),
[Qwen2 Technical Report](https://arxiv.org/abs/2407.10671) (Yang et al., 2024)

Both are the decoders of the [LLaMA page](llama.md) with every feed-forward layer replaced by a
[mixture of experts](../moe/mixture.md); attention, norms, positions and the head are unchanged,
and so is their conversion.

**Mixtral** routes each token to 2 of 8 SwiGLU experts with softmax gates renormalised over the
two ([Mixtral routing](../moe/mixtral.md)):

```python
Decoder(..., ff_num_experts=8, ff_top_k=2, ff_expert_inner_dim=14336,
        ff_glu=True, ff_swish=True, ff_no_bias=True)
```

**Qwen2-MoE** routes each token to 4 of 60 narrower experts with the *unnormalised* softmax
probabilities as gates (`norm_topk_prob=False`), and adds one shared expert of its own width
whose output is scaled by $\sigma(x w_s)$ ([shared experts](../moe/deepseek.md)); its attention
is Qwen2's, with biases on $q, k, v$:

```python
Decoder(..., ff_num_experts=60, ff_top_k=4, ff_expert_inner_dim=1408, ff_norm_gates=False,
        ff_shared_inner_dim=5632, ff_shared_expert_gate=True, ff_glu=True, ff_swish=True, ff_no_bias=True)
```

## The weights

Per layer $i$, besides the LLaMA weights (our feed-forward block is `attn_layers.blocks.{2i+1}.fn`):

| Hugging Face (`transformers` 5, in memory) | saved checkpoints | ours |
|---|---|---|
| `layers.{i}.mlp.gate.weight` | Mixtral: `block_sparse_moe.gate.weight` | `router.proj.weight` |
| `mlp.experts.gate_up_proj` `(E, 2H, D)`, gate half first | `experts.{j}.{gate,up}_proj` (Mixtral: `w1`, `w3`) | `experts.w_in` `(E, D, 2H)` (transposed), value (up) half first |
| `mlp.experts.down_proj` `(E, D, H)` | `experts.{j}.down_proj` (Mixtral: `w2`) | `experts.w_out` `(E, H, D)` (transposed) |
| Qwen2-MoE `mlp.shared_expert.{gate,up,down}_proj` | the same | `shared`, a SwiGLU `FeedForward` |
| Qwen2-MoE `mlp.shared_expert_gate.weight` | the same | `shared_gate.weight` |

`transformers` 5 fuses each layer's experts into three-dimensional tensors when it loads a
checkpoint and splits them back when it saves one, so `convert` reads either layout.

## Differences from the original

* Mixtral's `router_jitter_noise` (multiplicative noise on the inputs in training) is not rebuilt;
  training uses this library's losses instead (`ff_balance_loss`, set from `router_aux_loss_coef`).
* Qwen2-MoE checkpoints with dense layers between the sparse ones (`decoder_sparse_step > 1`,
  `mlp_only_layers`) are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.wrappers import TransformerWrapper
from . import llama
from .common import WeightMap, config_value, refuse
from .gpt2 import activation

MODEL_TYPES = ("mixtral", "qwen2_moe")


#
# ## The model, from the config
def moe_keywords(config: dict[str, Any]) -> dict[str, Any]:
    """The `ff_*` keywords of a Mixtral or Qwen2-MoE config."""
    swiglu = dict(ff_glu=True, ff_activation=activation(config_value(config, "hidden_act", default="silu")),
                  ff_no_bias=True, ff_balance_loss=float(config_value(config, "router_aux_loss_coef", default=0.0)))
    if config["model_type"] == "mixtral":
        return dict(swiglu, ff_num_experts=config["num_local_experts"], ff_top_k=config["num_experts_per_tok"],
                    ff_expert_inner_dim=config["intermediate_size"], ff_norm_gates=True)
    refuse(config, "decoder_sparse_step", 1, "dense layers between the sparse ones")
    if config.get("mlp_only_layers"):
        raise ValueError(f"config: mlp_only_layers={config['mlp_only_layers']!r} is not supported (dense layers "
                         "between the sparse ones); expected []")
    return dict(swiglu, ff_num_experts=config["num_experts"], ff_top_k=config["num_experts_per_tok"],
                ff_expert_inner_dim=config["moe_intermediate_size"],
                ff_norm_gates=bool(config.get("norm_topk_prob", False)),
                ff_shared_inner_dim=config["shared_expert_intermediate_size"], ff_shared_expert_gate=True)


def build(config: dict[str, Any]) -> TransformerWrapper:
    """Mixtral or Qwen2-MoE: LLaMA's decoder with mixture-of-experts feed-forward layers."""
    return llama.build(config, **moe_keywords(config))


#
# ## The weights
def expert_weights(w: WeightMap, theirs: str, num_experts: int,
                   names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")) -> tuple[Tensor, Tensor]:
    r"""`(w_in, w_out)` of our `Experts` from `theirs.experts`, fused or one expert at a time.

    `names` are the per-expert names of the gate, up and down projections.  Theirs are `(out, in)`
    like `nn.Linear`; ours are input first, `(E, D, 2H)` and `(E, H, D)`: transposed once here.
    """
    if w.has(f"{theirs}.experts.gate_up_proj"):
        # $[W_g; W_u]$ fused per expert: swap the halves to our $[W_u; W_g]$
        gate, up = w[f"{theirs}.experts.gate_up_proj"].chunk(2, dim=1)  # (E, H, D) each
        w_in, w_out = torch.cat([up, gate], dim=1), w[f"{theirs}.experts.down_proj"]
    else:
        gate, up, down = names
        one = [f"{theirs}.experts.{j}" for j in range(num_experts)]
        w_in = torch.stack([torch.cat([w[f"{e}.{up}.weight"], w[f"{e}.{gate}.weight"]]) for e in one])  # (E, 2H, D)
        w_out = torch.stack([w[f"{e}.{down}.weight"] for e in one])  # (E, D, H)
    return w_in.transpose(1, 2).contiguous(), w_out.transpose(1, 2).contiguous()  # (E, D, 2H), (E, H, D)


def moe_mlp(config: dict[str, Any]) -> llama.MlpConverter:
    """The converter of one layer's mixture of experts, for `llama.convert`."""
    mixtral = config["model_type"] == "mixtral"
    num_experts = config["num_local_experts" if mixtral else "num_experts"]

    def convert_layer(w: WeightMap, out: dict[str, Tensor], theirs: str, ours: str) -> None:
        names = ("gate_proj", "up_proj", "down_proj")
        if mixtral and not w.has(f"{theirs}.gate.weight"):
            # Saved Mixtral checkpoints keep the original names
            theirs, names = theirs.replace(".mlp", ".block_sparse_moe"), ("w1", "w3", "w2")
        out[f"{ours}.router.proj.weight"] = w[f"{theirs}.gate.weight"]
        out[f"{ours}.experts.w_in"], out[f"{ours}.experts.w_out"] = expert_weights(w, theirs, num_experts, names)
        if not mixtral:
            llama.dense_mlp(w, out, f"{theirs}.shared_expert", f"{ours}.shared")
            out[f"{ours}.shared_gate.weight"] = w[f"{theirs}.shared_expert_gate.weight"]
    return convert_layer


def convert(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face Mixtral / Qwen2-MoE weights under our names."""
    return llama.convert(config, state, mlp=moe_mlp(config))
