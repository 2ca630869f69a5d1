r"""
# GPT-2

*Paper:* [Language Models are Unsupervised Multitask Learners](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf) (Radford et al., 2019)

GPT-2 is a decoder-only transformer trained to predict the next token of web text.  Its
architecture is GPT-1's with the normalisation moved to the input of each sublayer, which is what
made its deeper versions trainable.  In the keyword API the whole model is:

```python
TransformerWrapper(
    num_tokens=50257,               # byte-level BPE vocabulary
    max_seq_len=1024,               # learned absolute positions, one vector per position
    attn_layers=Decoder(            # causal self-attention
        dim=768, depth=12, heads=12,  # GPT-2 small; medium 1024/24/16, large 1280/36/20, XL 1600/48/25
        attn_dim_head=64,           # dim / heads
        attn_qkv_bias=True,         # biases on the query/key/value projection ...
        attn_out_bias=True,         # ... and on the output projection
        ff_inner_dim=3072,          # 4 * dim
        ff_activation="gelu_tanh",  # GELU's tanh approximation ("gelu_new")
        norm_eps=1e-5,              # LayerNorm epsilon
        norm_bias=True,             # LayerNorm with its bias
        norm_add_unit_offset=False, # gains stored as the checkpoint stores them
    ),                              # pre-norm by default, with a final LayerNorm
    tie_embedding=True,             # logits = h E^T with the token embedding E
    tie_embedding_scale=1.0,        # unscaled (x-transformers' default multiplies h by D^-1/2)
)
```

Read top to bottom, one forward pass of GPT-2 is:

1. $h^{(0)}_t = E[x_t] + P[t]$: token embedding plus a learned position embedding, both of width
   $D$, the positions added without any scale;
2. $N$ blocks, each two pre-norm residual sublayers,
   $h \leftarrow h + \operatorname{Attn}(\operatorname{LN}(h))$, then
   $h \leftarrow h + \operatorname{FFN}(\operatorname{LN}(h))$, where attention is causal
   multi-head attention with $H$ heads of width $D / H$ and biases everywhere, and the FFN is
   $\operatorname{GELU}_{\tanh}(h W_1 + b_1) W_2 + b_2$ with hidden width $4D$;
3. a final LayerNorm, then logits $z_t = h_t E^\top$ through the *same* matrix $E$ that embedded
   the tokens.

Every norm is a LayerNorm with $\epsilon = 10^{-5}$; the attention logits are scaled by
$1/\sqrt{D/H}$.

## The weights

OpenAI's code stored every projection as a `Conv1D`, a linear layer whose weight is `(in, out)`,
the transpose of PyTorch's `nn.Linear`; `convert` transposes them.  The mapping, layer $i$ of the
stack being our blocks $2i$ (attention) and $2i + 1$ (feed-forward):

| Hugging Face | ours | |
|---|---|---|
| `transformer.wte.weight` | `token_emb.weight` | $E$, also the output projection |
| `transformer.wpe.weight` | `pos_emb.emb.weight` | $P$ |
| `transformer.h.{i}.ln_1.{weight,bias}` | `attn_layers.blocks.{2i}.pre_norm.{weight,bias}` | |
| `transformer.h.{i}.attn.c_attn.{weight,bias}` | `attn_layers.blocks.{2i}.fn.to_qkv.{weight,bias}` | transposed; $[W_Q, W_K, W_V]$ in both |
| `transformer.h.{i}.attn.c_proj.{weight,bias}` | `attn_layers.blocks.{2i}.fn.to_out.{weight,bias}` | transposed |
| `transformer.h.{i}.ln_2.{weight,bias}` | `attn_layers.blocks.{2i+1}.pre_norm.{weight,bias}` | |
| `transformer.h.{i}.mlp.c_fc.{weight,bias}` | `attn_layers.blocks.{2i+1}.fn.proj_in.0.{weight,bias}` | transposed |
| `transformer.h.{i}.mlp.c_proj.{weight,bias}` | `attn_layers.blocks.{2i+1}.fn.proj_out.{weight,bias}` | transposed |
| `transformer.ln_f.{weight,bias}` | `attn_layers.final_norm.{weight,bias}` | |
| `lm_head.weight` | (tied: none) | the same tensor as `wte` |

Shapes: `V` vocabulary, `P` positions, `D` width, `N` layers, `H` heads.

## Differences from the original

* Dropout (on embeddings, attention weights and each residual branch in GPT-2) is not rebuilt:
  the converted model is for inference and for fine-tuning with your own regularisation.
* `scale_attn_by_inverse_layer_idx` (a later option of the Hugging Face class) is refused.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..models.layers import Decoder
from ..models.wrappers import TransformerWrapper
from .common import WeightMap, config_value, refuse, tied_unscaled

MODEL_TYPES = ("gpt2",)

# Hugging Face's names of the activation to `ff_activation`.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}


def activation(name: str) -> str:
    """`ff_activation` for a Hugging Face `hidden_act`/`activation_function` name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"config: activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


#
# ## The model, from the config
def build(config: dict[str, Any]) -> TransformerWrapper:
    """GPT-2 as a `TransformerWrapper` with a `Decoder`, sized by a Hugging Face `GPT2Config` dict."""
    refuse(config, "scale_attn_by_inverse_layer_idx", False, "attention logits scaled per layer")
    refuse(config, "add_cross_attention", False, "GPT-2 as the decoder of an encoder-decoder")
    refuse(config, "scale_attn_weights", True, "unscaled attention logits in GPT-2")
    dim, heads = config["n_embd"], config["n_head"]
    return TransformerWrapper(
        num_tokens=config["vocab_size"],
        max_seq_len=config["n_positions"],
        attn_layers=Decoder(
            dim=dim, depth=config["n_layer"], heads=heads,
            attn_dim_head=dim // heads,
            attn_qkv_bias=True, attn_out_bias=True,
            ff_inner_dim=config.get("n_inner") or 4 * dim,
            ff_activation=activation(config_value(config, "activation_function", default="gelu_new")),
            norm_eps=config_value(config, "layer_norm_epsilon", default=1e-5),
            norm_bias=True,
            norm_add_unit_offset=False,
        ),
        use_abs_pos_emb=True,
        pos_emb_init_std=0.02,  # GPT-2's table, added unscaled (the checkpoint's rows are the positions)
        tie_embedding=config_value(config, "tie_word_embeddings", default=True),
        **tied_unscaled(config_value(config, "tie_word_embeddings", default=True)),
        logits_bias=False,
    )


#
# ## The weights
def convert(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face GPT-2 weights (from `GPT2LMHeadModel` or `GPT2Model`) under our names."""
    # Older checkpoints also hold each layer's causal mask as a buffer, which we do not need.
    w = WeightMap(state, prefix="transformer.", skip=[r".*\.attn\.(bias|masked_bias)"])
    out = {"token_emb.weight": w["wte.weight"], "pos_emb.emb.weight": w["wpe.weight"]}
    for i in range(config["n_layer"]):
        attn, ff = f"attn_layers.blocks.{2 * i}", f"attn_layers.blocks.{2 * i + 1}"
        for ours, theirs in ((f"{attn}.pre_norm", f"h.{i}.ln_1"), (f"{ff}.pre_norm", f"h.{i}.ln_2")):
            out[f"{ours}.weight"], out[f"{ours}.bias"] = w[f"{theirs}.weight"], w[f"{theirs}.bias"]
        # `Conv1D` weights are `(in, out)`; `nn.Linear` wants `(out, in)`.
        for ours, theirs in ((f"{attn}.fn.to_qkv", f"h.{i}.attn.c_attn"), (f"{attn}.fn.to_out", f"h.{i}.attn.c_proj"),
                             (f"{ff}.fn.proj_in.0", f"h.{i}.mlp.c_fc"), (f"{ff}.fn.proj_out", f"h.{i}.mlp.c_proj")):
            out[f"{ours}.weight"] = w[f"{theirs}.weight"].t().contiguous()
            out[f"{ours}.bias"] = w[f"{theirs}.bias"]
    out["attn_layers.final_norm.weight"], out["attn_layers.final_norm.bias"] = w["ln_f.weight"], w["ln_f.bias"]
    if config_value(config, "tie_word_embeddings", default=True):
        w.skip("lm_head.weight", top=True)  # the same tensor as `wte`
    else:
        out["to_logits.weight"] = w.get("lm_head.weight", top=True)
    w.check_all_used("gpt2")
    return out
