r"""
# LLaMA, Qwen2 and Mistral

*Papers:* [LLaMA: Open and Efficient Foundation Language Models](https://arxiv.org/abs/2302.13971) (Touvron et al., 2023),
[Llama 2](https://arxiv.org/abs/2307.09288) (Touvron et al., 2023),
[Qwen2 Technical Report](https://arxiv.org/abs/2407.10671) (Yang et al., 2024),
[Mistral 7B](https://arxiv.org/abs/2310.06825) (Jiang et al., 2023)

LLaMA is GPT-2's decoder with four techniques swapped in, each one a keyword of this library, and
most open decoder-only models since are LLaMA with one or two more changes.  In the keyword API:

```python
TransformerWrapper(
    num_tokens=32000,
    max_seq_len=4096,               # only a default length: rotary positions have no table
    attn_layers=Decoder(
        dim=4096, depth=32, heads=32,  # LLaMA 2 7B
        attn_dim_head=128,
        attn_kv_heads=32,           # grouped-query attention when fewer (LLaMA 2 70B: 8)
        rotary_pos_emb=True,        # rotary positions ...
        rotary_emb_dim=128,         # ... over the whole head ...
        rotary_theta=10000.0,       # ... with this base (LLaMA 3: 500000)
        use_rmsnorm=True,           # RMSNorm instead of LayerNorm ...
        norm_eps=1e-5,              # ... with epsilon inside the square root
        norm_add_unit_offset=False, # gains stored as the checkpoint stores them
        ff_glu=True, ff_swish=True, # SwiGLU feed-forward ...
        ff_inner_dim=11008,         # ... about 8/3 * dim, rounded
        ff_no_bias=True,            # no biases anywhere
    ),
    logits_bias=False,              # an untied output projection without bias
)                                   # (tied checkpoints: tie_embedding=True, tie_embedding_scale=1.0)
```

Against GPT-2 ([its page](gpt2.md)):

* **positions** are [rotary](../positional/rotary.md), applied to queries and keys in every layer,
  instead of a learned table added to the input: no learned positions, no `max_seq_len` limit;
* **norms** are [RMSNorm](../norms/rms_norm.md): no mean subtraction, no bias;
* the **feed-forward** layer is [SwiGLU](../feedforward/glu.md),
  $(\operatorname{SiLU}(x W_g) \odot x W_u) W_d$;
* there are **no biases**, and the output projection is a separate matrix (in most sizes);
* larger sizes use [grouped-query attention](../attention/grouped_query.md).

**Qwen2** is LLaMA with biases on the query, key and value projections (`attn_qkv_bias=True`),
usually a large `rotary_theta`, and tied embeddings in its small sizes.  **Mistral** is LLaMA with
grouped-query attention and [sliding-window attention](../attention/sliding_window.md) in every
layer: its `sliding_window=S` lets a query see itself and the $S - 1$ tokens before it, which is
`attn_max_attend_past=S - 1`.  **Mixtral** and **Qwen2-MoE** are these decoders with
mixture-of-experts feed-forward layers ([their page](mixtral.md)), **Qwen3-MoE** too, with
RMSNorm on each head's queries and keys ([its page](qwen3_moe.md)).

## The weights

Hugging Face keeps $W_Q$, $W_K$, $W_V$ as three matrices and the two input matrices of the
feed-forward layer as two; we fuse each group into one matrix multiply, so `convert` concatenates
them.  Both use `nn.Linear`'s `(out, in)` layout, and both use the same rotary layout (feature $k$
paired with feature $k + d/2$), so no weight is permuted.  Layer $i$ is our blocks $2i$ (attention)
and $2i + 1$ (feed-forward):

| Hugging Face | ours | |
|---|---|---|
| `model.embed_tokens.weight` | `token_emb.weight` | |
| `layers.{i}.input_layernorm.weight` | `attn_layers.blocks.{2i}.pre_norm.gamma` | |
| `layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}` | `blocks.{2i}.fn.to_qkv.{weight,bias}` | concatenated: $h + 2g$ heads |
| `layers.{i}.self_attn.o_proj.{weight,bias}` | `blocks.{2i}.fn.to_out.{weight,bias}` | |
| `layers.{i}.post_attention_layernorm.weight` | `blocks.{2i+1}.pre_norm.gamma` | |
| `layers.{i}.mlp.{up,gate}_proj.{weight,bias}` | `blocks.{2i+1}.fn.proj_in.proj.{weight,bias}` | concatenated: value $W_u$, then gate $W_g$ |
| `layers.{i}.mlp.down_proj.{weight,bias}` | `blocks.{2i+1}.fn.proj_out.{weight,bias}` | |
| `model.norm.weight` | `attn_layers.final_norm.gamma` | |
| `lm_head.weight` | `to_logits.weight` | none when tied |

Biases exist only where the config asks for them (`attention_bias`, `mlp_bias`; always on
$q, k, v$ in Qwen2).

Shapes: `D` width, `h` query heads, `g` key/value heads, `d` head width, `H` hidden width.

## Differences from the original

* RoPE scaling other than `linear` (`dynamic`, `yarn`, `llama3`, ...) is refused with an error
  naming it; `linear` is `rotary_interpolation_factor`.
* Qwen2 checkpoints that use the sliding window in only some layers (`use_sliding_window` with
  `max_window_layers` below the depth) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

from ..models.layers import Decoder
from ..models.wrappers import TransformerWrapper
from .common import WeightMap, config_value, tied_unscaled
from .gpt2 import activation

MODEL_TYPES = ("llama", "qwen2", "mistral")


#
# ## Positions and the window, from the config
#
# Newer configs keep the rotary base in `rope_parameters`, older ones in `rope_theta` with any
# scaling in `rope_scaling`.
def rotary_keywords(config: dict[str, Any]) -> dict[str, Any]:
    """`rotary_theta` (and `rotary_interpolation_factor`) for a config's RoPE settings."""
    rope = dict(config.get("rope_scaling") or {})
    rope.update(config.get("rope_parameters") or {})
    theta = config_value(rope, "rope_theta", default=config_value(config, "rope_theta", default=10000.0))
    kind = config_value(rope, "rope_type", "type", default="default")
    keywords: dict[str, Any] = {"rotary_theta": float(theta)}
    if kind == "linear":
        keywords["rotary_interpolation_factor"] = float(rope["factor"])
    elif kind != "default":
        raise ValueError(f"config: rope_type={kind!r} is not supported; expected 'default' or 'linear'")
    return keywords


def window_keywords(config: dict[str, Any]) -> dict[str, Any]:
    """`attn_max_attend_past` for Mistral's (and Qwen2's) `sliding_window`, or nothing."""
    window = config.get("sliding_window")
    if not window or (config["model_type"].startswith("qwen2") and not config.get("use_sliding_window")):
        return {}
    layer_types = config.get("layer_types") or ["sliding_attention"] * config["num_hidden_layers"]
    if all(t == "full_attention" for t in layer_types):
        return {}
    if any(t != "sliding_attention" for t in layer_types):
        raise ValueError("config: a sliding window in only some layers (layer_types / max_window_layers) "
                         "is not supported")
    # Their window of $S$ keys includes the query itself: $i - j < S$, so $W = S - 1$.
    return {"attn_max_attend_past": int(window) - 1}


#
# ## The model, from the config
def build(config: dict[str, Any], **ff_keywords: Any) -> TransformerWrapper:
    """LLaMA, Qwen2 or Mistral as a `TransformerWrapper` with a `Decoder`, from a Hugging Face config dict.

    `ff_keywords` replace the dense feed-forward keywords (the mixtures of experts of
    [mixtral.py](mixtral.md) are these models with other feed-forward layers).
    """
    dim, heads = config["hidden_size"], config["num_attention_heads"]
    dim_head = config.get("head_dim") or dim // heads
    qwen2 = config["model_type"] in ("qwen2", "qwen2_moe") and config.get("qkv_bias", True)
    attention_bias = bool(config.get("attention_bias", False))
    ff = dict(ff_glu=True, ff_activation=activation(config_value(config, "hidden_act", default="silu")),
              ff_inner_dim=config["intermediate_size"], ff_no_bias=not config.get("mlp_bias", False))
    return TransformerWrapper(
        num_tokens=config["vocab_size"],
        max_seq_len=config_value(config, "max_position_embeddings", default=2048),
        attn_layers=Decoder(
            dim=dim, depth=config["num_hidden_layers"], heads=heads,
            attn_dim_head=dim_head,
            attn_kv_heads=config_value(config, "num_key_value_heads", default=heads),
            attn_qkv_bias=attention_bias or qwen2,
            attn_out_bias=attention_bias,
            rotary_pos_emb=True, rotary_emb_dim=dim_head, **rotary_keywords(config),
            use_rmsnorm=True, norm_eps=config_value(config, "rms_norm_eps", default=1e-6),
            norm_add_unit_offset=False,
            **{**ff, **ff_keywords},
            **window_keywords(config),
        ),
        tie_embedding=bool(config.get("tie_word_embeddings", False)),
        **tied_unscaled(bool(config.get("tie_word_embeddings", False))),
        logits_bias=False,
    )


#
# ## The weights
def convert(config: dict[str, Any], state: dict[str, Tensor], mlp: Optional[MlpConverter] = None) -> dict[str, Tensor]:
    """Hugging Face LLaMA / Qwen2 / Mistral weights under our names.

    `mlp(w, out, theirs, ours)` converts one layer's feed-forward weights (`theirs` is
    `layers.{i}.mlp`, `ours` the block's `fn`); by default the dense SwiGLU layer.
    """
    w = WeightMap(state, prefix="model.", skip=[r".*\.rotary_emb\.inv_freq"])
    out = {"token_emb.weight": w["embed_tokens.weight"]}
    for i in range(config["num_hidden_layers"]):
        attn, ff, layer = f"attn_layers.blocks.{2 * i}", f"attn_layers.blocks.{2 * i + 1}", f"layers.{i}"
        out[f"{attn}.pre_norm.gamma"] = w[f"{layer}.input_layernorm.weight"]
        out[f"{ff}.pre_norm.gamma"] = w[f"{layer}.post_attention_layernorm.weight"]
        # $[W_Q; W_K; W_V]$: $h$ query heads, then $g$ key heads, then $g$ value heads.
        qkv = [f"{layer}.self_attn.{p}_proj" for p in ("q", "k", "v")]
        out[f"{attn}.fn.to_qkv.weight"] = torch.cat([w[f"{p}.weight"] for p in qkv])
        if w.has(f"{qkv[0]}.bias"):
            out[f"{attn}.fn.to_qkv.bias"] = torch.cat([w[f"{p}.bias"] for p in qkv])
        _linear(w, out, f"{layer}.self_attn.o_proj", f"{attn}.fn.to_out")
        (mlp or dense_mlp)(w, out, f"{layer}.mlp", f"{ff}.fn")
    out["attn_layers.final_norm.gamma"] = w["norm.weight"]
    if config.get("tie_word_embeddings", False):
        w.skip("lm_head.weight", top=True)  # the same tensor as `embed_tokens`
    else:
        out["to_logits.weight"] = w.get("lm_head.weight", top=True)
    w.check_all_used(config["model_type"])
    return out


# A converter of one layer's feed-forward weights: `(w, out, theirs, ours) -> None`.
MlpConverter = Callable[[WeightMap, dict[str, Tensor], str, str], None]


def dense_mlp(w: WeightMap, out: dict[str, Tensor], theirs: str, ours: str) -> None:
    """A SwiGLU layer `theirs.{gate,up,down}_proj` into our `FeedForward` `ours`."""
    # $[W_u; W_g]$: the value half first, then the gate (see the GLU page).
    up_gate = [f"{theirs}.up_proj", f"{theirs}.gate_proj"]
    out[f"{ours}.proj_in.proj.weight"] = torch.cat([w[f"{p}.weight"] for p in up_gate])
    if w.has(f"{up_gate[0]}.bias"):
        out[f"{ours}.proj_in.proj.bias"] = torch.cat([w[f"{p}.bias"] for p in up_gate])
    _linear(w, out, f"{theirs}.down_proj", f"{ours}.proj_out")


def _linear(w: WeightMap, out: dict[str, Tensor], theirs: str, ours: str) -> None:
    """A linear layer whose layout is the same on both sides: weight, and bias if there is one."""
    out[f"{ours}.weight"] = w[f"{theirs}.weight"]
    if w.has(f"{theirs}.bias"):
        out[f"{ours}.bias"] = w[f"{theirs}.bias"]
