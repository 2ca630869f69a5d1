r"""
# DeepSeek-V3

*Papers:* [DeepSeek-V3 Technical Report](https://arxiv.org/abs/2412.19437) (DeepSeek-AI, 2024),
[DeepSeek-V2](https://arxiv.org/abs/2405.04434) (DeepSeek-AI, 2024)

DeepSeek-V3 is a LLaMA-style decoder (RMSNorm, SwiGLU, rotary positions, no biases) with two
changes: its attention is [multi-head latent attention](../attention/latent_attention.md), which
caches one compressed latent per token instead of every head's keys and values, and its
feed-forward layers after the first `first_k_dense_replace` are [DeepSeekMoE](../moe/deepseek.md)
mixtures of experts, whose keywords and weights are on [their own page](deepseek_moe.md).  This
page converts the Hugging Face `DeepseekV3ForCausalLM`; in the keyword API its attention is

```python
Decoder(
    dim=7168, depth=61, heads=128,
    attn_dim_head=128,              # qk_nope_head_dim: query/key features from the latents
    attn_use_latent_q=True,         # queries through a latent ...
    attn_dim_latent_q=1536,         # ... of q_lora_rank features
    attn_use_latent_kv=True,        # keys and values from one cached latent ...
    attn_dim_latent_kv=512,         # ... of kv_lora_rank features
    attn_latent_rope_dim=64,        # qk_rope_head_dim: the decoupled rotary key, shared by all heads
    attn_latent_norm=True,          # RMSNorm on both latents
    attn_latent_value_dim_head=128, # v_head_dim
    rotary_pos_emb=True,            # rotates the 64 decoupled features only
    use_rmsnorm=True, ff_glu=True, ff_activation="silu", ff_no_bias=True,
)
```

The cache of generation then holds $512 + 64 = 576$ numbers per token and layer, against
$2 \times 128 \times 128 = 32{,}768$ for the same heads in plain multi-head attention (57 times
fewer); the test `test_generation_caches_the_latent` checks the width on a small model.

## The weights

| Hugging Face `layers.{i}.self_attn.` | ours `attn_layers.blocks.{2i}.fn.` | |
|---|---|---|
| `q_a_proj`, `q_a_layernorm`, `q_b_proj` | `latent_qkv.to_latent_q`, `.norm_q.gamma`, `.to_q` | `q_proj` alone without a query latent |
| `kv_a_proj_with_mqa` | `latent_qkv.to_latent_kv` | rows: the latent $c^{KV}$, then $k^R$ |
| `kv_a_layernorm` | `latent_qkv.norm_kv.gamma` | |
| `kv_b_proj` | `latent_qkv.up_kv` | per head $[k^C; v]$ regrouped: every head's $k^C$, then every head's $v$ |
| `o_proj` | `to_out` | |

The norms and the dense feed-forward layers follow [LLaMA's table](llama.md), the expert layers
[DeepSeekMoE's](deepseek_moe.md).  With `rope_interleave=True` (the default) DeepSeek pairs
rotary features $(2p, 2p + 1)$; ours pairs $(p, p + d_R/2)$, so the rows of $q^R$ and $k^R$ are
permuted (scores are unchanged by permuting the features of both queries and keys alike).

## Differences from the original

* YaRN (`rope_type="yarn"`, what DeepSeek-V3's checkpoints use) is DeepSeek's variant, not the
  `rotary_yarn_*` keywords of this library: its ramp runs over the pair index between rounded
  bounds instead of over each pair's number of turns (see [RoPE scaling](../positional/rope_scaling.md)),
  and it scales every logit, not only the rotated part, by $m^2$.  `build` therefore writes
  DeepSeek's frequencies into the rotary module (`yarn_rotary`, below) and passes the logit scale
  as `attn_scale`; a model rebuilt from keywords alone would not have them.  Other scalings than
  `linear` and `yarn` are refused.
* Biases (`attention_bias=True`) and fewer key/value heads than query heads are refused.
* The multi-token-prediction module of the checkpoints (`num_nextn_predict_layers`) is not part of
  `DeepseekV3ForCausalLM` and is not converted.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..models.layers import Decoder
from ..models.wrappers import TransformerWrapper
from .common import WeightMap, config_value, refuse, tied_unscaled
from .deepseek_moe import convert_mlp, moe_keywords
from .gpt2 import activation
from .llama import rotary_keywords

MODEL_TYPES = ("deepseek_v3",)


#
# ## The model, from the config
def build(config: dict[str, Any]) -> TransformerWrapper:
    """DeepSeek-V3 as a `TransformerWrapper` with a latent-attention `Decoder`, from a Hugging Face config dict."""
    depth, heads = config["num_hidden_layers"], config["num_attention_heads"]
    # Dense SwiGLU layers first, mixtures of experts after them (none when every layer is dense).
    if config_value(config, "first_k_dense_replace", default=0) < depth:
        ff = moe_keywords(config)
    else:
        ff = dict(ff_glu=True, ff_activation=activation(config_value(config, "hidden_act", default="silu")),
                  ff_inner_dim=config["intermediate_size"], ff_no_bias=True)
    refuse(config, "attention_bias", False, "biases on the latent projections")
    refuse(config, "num_key_value_heads", heads, "the up-projection gives every query head its own key")
    q_rank = config.get("q_lora_rank")
    rope = dict(config.get("rope_scaling") or {})
    rope.update(config.get("rope_parameters") or {})
    yarn = config_value(rope, "rope_type", "type", default="default") == "yarn"
    rotary = dict(rotary_theta=float(config_value(rope, "rope_theta", default=10000.0))) if yarn \
        else rotary_keywords(config)
    scale = None
    if yarn:
        # $\frac{1}{\sqrt{d_h + d_R}}\, m^2$ with $m = 0.1\, \mu \ln s + 1$ for $\mu$ = `mscale_all_dim`
        scale = (config["qk_nope_head_dim"] + config["qk_rope_head_dim"]) ** -0.5 \
            * yarn_mscale(_yarn_factor(config, rope), rope.get("mscale_all_dim") or 0.0) ** 2
    model = TransformerWrapper(
        num_tokens=config["vocab_size"],
        max_seq_len=config_value(config, "max_position_embeddings", default=4096),
        attn_layers=Decoder(
            dim=config["hidden_size"], depth=depth, heads=heads,
            attn_dim_head=config["qk_nope_head_dim"],
            attn_use_latent_q=q_rank is not None, attn_dim_latent_q=q_rank,
            attn_use_latent_kv=True, attn_dim_latent_kv=config["kv_lora_rank"],
            attn_latent_rope_dim=config["qk_rope_head_dim"], attn_latent_norm=True,
            attn_latent_value_dim_head=config["v_head_dim"],
            attn_scale=scale,
            rotary_pos_emb=True, rotary_emb_dim=config["qk_rope_head_dim"], **rotary,
            use_rmsnorm=True, norm_eps=config_value(config, "rms_norm_eps", default=1e-6),
            norm_add_unit_offset=False,  # gains stored as the checkpoint stores them
            **ff,
        ),
        tie_embedding=bool(config.get("tie_word_embeddings", False)),
        **tied_unscaled(bool(config.get("tie_word_embeddings", False))),
        logits_bias=False,
    )
    embedding = model.attn_layers.rotary
    if yarn and embedding is not None:  # (rotary_pos_emb=True above: always a module)
        inv_freq, magnitude = yarn_rotary(config["qk_rope_head_dim"], rotary["rotary_theta"],
                                          _yarn_factor(config, rope), rope)
        embedding.inv_freq.copy_(inv_freq)
        embedding.magnitude = magnitude
    return model


#
# ## DeepSeek's YaRN
#
# YaRN ([RoPE scaling](../positional/rope_scaling.md)) interpolates the slow pairs by $s$ and leaves
# the fast ones alone.  DeepSeek chooses by pair index: pair $k$ makes $\rho$ turns within the
# training length $L$ when $k = \frac{r \ln(L / 2\pi\rho)}{2 \ln b}$, so the pairs below
# $\lfloor k(\beta) \rfloor$ ($\beta = 32$ turns or more) keep $\theta_k$, those above
# $\lceil k(\alpha) \rceil$ ($\alpha = 1$) get $\theta_k / s$, and a ramp over $k$ blends between.
# The cosines and sines are multiplied by $m(\mu)/m(\mu_{\text{all}})$ and every logit by
# $m(\mu_{\text{all}})^2$, with $m(\mu) = 0.1\,\mu \ln s + 1$.
def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    r"""$m = 0.1\, \mu \ln s + 1$ (1 for $s \le 1$).

    >>> round(yarn_mscale(40.0, 1.0), 4)
    1.3689
    """
    return 0.1 * mscale * math.log(factor) + 1.0 if factor > 1 else 1.0


def _yarn_factor(config: dict[str, Any], rope: dict[str, Any]) -> float:
    factor = rope.get("factor")
    if factor is None:
        factor = config["max_position_embeddings"] / rope["original_max_position_embeddings"]
    return float(factor)


def yarn_rotary(dim: int, base: float, factor: float, rope: dict[str, Any]) -> tuple[Tensor, float]:
    r"""DeepSeek's YaRN frequencies $\theta'_k$ `(r/2,)` and the magnitude of $\cos, \sin$."""
    original = rope.get("original_max_position_embeddings")
    if original is None:
        raise ValueError("config: rope_type='yarn' needs original_max_position_embeddings")
    fast, slow = rope.get("beta_fast") or 32.0, rope.get("beta_slow") or 1.0

    def pair_index(turns: float) -> float:  # the pair that turns `turns` times within the training length
        return dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_index(fast), pair_index(slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    # $\gamma_k$: 0 for the fast pairs, 1 for the slow, linear over the index between
    gamma = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 0.001)).clamp(0, 1)
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    inv_freq = theta / factor * gamma + theta * (1 - gamma)
    mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")
    if rope.get("attention_factor") is not None:
        magnitude = float(rope["attention_factor"])
    elif mscale and mscale_all:
        magnitude = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
    else:
        magnitude = yarn_mscale(factor)
    return inv_freq, magnitude


def interleaved_to_halves(r: int) -> Tensor:
    r"""Row order taking DeepSeek's interleaved rotary pairs $(2p, 2p + 1)$ to our halves $(p, p + r/2)$.

    >>> interleaved_to_halves(6).tolist()
    [0, 2, 4, 1, 3, 5]
    """
    return torch.cat((torch.arange(0, r, 2), torch.arange(1, r, 2)))


#
# ## The weights
def convert(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face DeepSeek-V3 weights under our names."""
    w = WeightMap(state, prefix="model.", skip=[r".*\.rotary_emb\.(original_)?inv_freq"])
    h, dn, dr, dv = (config["num_attention_heads"], config["qk_nope_head_dim"], config["qk_rope_head_dim"],
                     config["v_head_dim"])
    rank = config["kv_lora_rank"]
    # Per head, the query's features are $[q^C; q^R]$; only the $d_R$ rotary rows are reordered.
    order = interleaved_to_halves(dr) if config.get("rope_interleave", True) else torch.arange(dr)
    q_rows = torch.cat([torch.arange(dn), dn + order])
    q_rows = torch.cat([i * (dn + dr) + q_rows for i in range(h)])
    kv_rows = torch.cat([torch.arange(rank), rank + order])
    out = {"token_emb.weight": w["embed_tokens.weight"]}
    for i in range(config["num_hidden_layers"]):
        attn, ff, layer = f"attn_layers.blocks.{2 * i}", f"attn_layers.blocks.{2 * i + 1}", f"layers.{i}"
        a, mla = f"{layer}.self_attn", f"{attn}.fn.latent_qkv"
        out[f"{attn}.pre_norm.gamma"] = w[f"{layer}.input_layernorm.weight"]
        out[f"{ff}.pre_norm.gamma"] = w[f"{layer}.post_attention_layernorm.weight"]
        if config.get("q_lora_rank") is None:
            out[f"{mla}.to_q.weight"] = w[f"{a}.q_proj.weight"][q_rows]
        else:
            out[f"{mla}.to_latent_q.weight"] = w[f"{a}.q_a_proj.weight"]
            out[f"{mla}.norm_q.gamma"] = w[f"{a}.q_a_layernorm.weight"]
            out[f"{mla}.to_q.weight"] = w[f"{a}.q_b_proj.weight"][q_rows]
        # $[W^{DKV}; W^{KR}]$: the latent's rows, then the decoupled key's
        out[f"{mla}.to_latent_kv.weight"] = w[f"{a}.kv_a_proj_with_mqa.weight"][kv_rows]
        out[f"{mla}.norm_kv.gamma"] = w[f"{a}.kv_a_layernorm.weight"]
        # $[W^{UK}; W^{UV}]$: theirs is per head $[k^C_i; v_i]$, ours every $k^C$ then every $v$
        up = w[f"{a}.kv_b_proj.weight"].view(h, dn + dv, rank)
        out[f"{mla}.up_kv.weight"] = torch.cat([up[:, :dn].reshape(h * dn, rank), up[:, dn:].reshape(h * dv, rank)])
        out[f"{attn}.fn.to_out.weight"] = w[f"{a}.o_proj.weight"]
        # A dense SwiGLU layer, or the router, the routed and the shared experts
        convert_mlp(config, w, out, i, f"{ff}.fn")
    out["attn_layers.final_norm.gamma"] = w["norm.weight"]
    if config.get("tie_word_embeddings", False):
        w.skip("lm_head.weight", top=True)
    else:
        out["to_logits.weight"] = w.get("lm_head.weight", top=True)
    w.check_all_used(config["model_type"])
    return out
