r"""
# ViT

*Paper:* [An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale](https://arxiv.org/abs/2010.11929) (Dosovitskiy et al., 2020)

The Vision Transformer classifies an image by reading it as a sentence of patches.  This page
builds it from the keyword API, as a `ViTransformerWrapper` around an `Encoder`, and loads the
weights of a Hugging Face `transformers` `ViTForImageClassification` (or a checkpoint folder) into
it, name by name.  The converted model computes the same logits (a test checks them within
$10^{-4}$ in float32).

```python
from labml_style_nn import from_pretrained
model = from_pretrained("google/vit-base-patch16-224")   # or a folder with config.json and *.safetensors
logits = model(pixel_values)                             # (b, 1000), images normalised as for transformers
```

## The architecture

* **Patches.**  A convolution with kernel and stride $P$ embeds each $P \times P$ patch of the
  $c$-channel image; that is a linear layer on the flattened patch (the
  [Vision Transformer page](../models/vit.md) shows why), with no norm around it:
  `patch_norm=False`.
* **The class token.**  A learned vector is put in front of the $N = (H / P)^2$ patches; the
  classifier reads its final state: `use_cls_token=True`.
* **Learned positions**, one per token, the class token included: $N + 1$ vectors added to the
  embeddings.
* **A pre-norm encoder**: $x \leftarrow x + \operatorname{MHA}(\operatorname{LN}(x))$,
  $x \leftarrow x + \operatorname{MLP}(\operatorname{LN}(x))$, with LayerNorm's $\epsilon =
  10^{-12}$ (`norm_eps=1e-12`), biases on the query, key and value projections
  (`attn_qkv_bias=True`) and on the output projection (`attn_out_bias=True`), and an MLP of width
  `intermediate_size` with the exact GELU (`ff_inner_dim=...`, the default activation).  A final
  LayerNorm ends the stack.
* **The head**: a linear layer from the class token's final state to `num_labels` logits.

Shapes: `D` model width (`hidden_size`), `c` channels, `P` patch size, `N` patches, `l` a layer index.

## Differences from Hugging Face `transformers`

* Only square images and patches (`image_size` and `patch_size` as one number, or two equal
  ones), at the size the model was trained for (no interpolation of positions).
* Only `ViTForImageClassification` weights (a pooler's weights, if present, are not used), in
  both the names of `transformers` 5 (`vit.layers.{l}.attention.q_proj`) and those of earlier
  checkpoints on the hub (`vit.encoder.layer.{l}.attention.attention.query`), which are renamed
  first.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ..models.layers import Encoder
from ..models.vit import ViTransformerWrapper

MODEL_TYPES = ("vit",)

# Names of `transformers` activations, as `ff_activation` spells them.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def _square(config: dict[str, Any], name: str) -> int:
    value = config[name]
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name}: only square sizes are supported, got {value!r}")
        value = value[0]
    return int(value)


def _num_labels(config: dict[str, Any]) -> int:
    n = config.get("num_labels") or len(config.get("id2label") or {}) or 2
    if n < 1:
        raise ValueError(f"num_labels: expected a classifier with at least one label, got {n}")
    return n


#
# ## The model, as keyword options
def build(config: dict[str, Any]) -> ViTransformerWrapper:
    """Our `ViTransformerWrapper` for a Hugging Face ViT config dict (random weights)."""
    dim, heads = config["hidden_size"], config["num_attention_heads"]
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act: expected one of {sorted(_ACTIVATIONS)}, got {act!r}")
    encoder = Encoder(
        dim=dim,
        depth=config["num_hidden_layers"],
        heads=heads,
        attn_dim_head=config.get("head_dim") or dim // heads,
        attn_qkv_bias=bool(config.get("qkv_bias", True)),  # biases on $W_Q, W_K, W_V$
        attn_out_bias=True,                                # and on $W_O$
        ff_inner_dim=config["intermediate_size"],
        ff_activation=_ACTIVATIONS[act],                   # the exact GELU
        norm_eps=config.get("layer_norm_eps", 1e-12),      # LayerNorm's $\epsilon$
        norm_bias=True,                                    # LayerNorm with its bias $\beta$
        norm_add_unit_offset=False,                        # gains stored as the checkpoint stores them
    )
    return ViTransformerWrapper(
        image_size=_square(config, "image_size"),
        patch_size=_square(config, "patch_size"),
        channels=config.get("num_channels", 3),
        num_classes=_num_labels(config),
        attn_layers=encoder,
        use_cls_token=True,     # classify from a [class] token
        patch_norm=False,       # the plain (convolutional) patch embedding
    )


#
# ## The weights, name by name
#
# Older checkpoints name a layer's parts after BERT's modules; `transformers` 5 renames them when it
# loads one.  We do the same renaming first, then map one set of names.
_OLD_NAMES = [
    (r"^vit\.encoder\.layer\.", "vit.layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]


def _rename_old(name: str) -> str:
    for pattern, new in _OLD_NAMES:
        name = re.sub(pattern, new, name)
    return name


def convert(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A `ViTForImageClassification` state dict renamed to our `ViTransformerWrapper`'s (for `strict=True`)."""
    theirs = {_rename_old(k): v for k, v in state.items()}
    used: set[str] = set()
    bias = bool(config.get("qkv_bias", True))

    def take(name: str) -> Tensor:
        if name not in theirs:
            raise KeyError(f"state: the ViT checkpoint has no weight {name!r}"
                           + (" (a ViTModel has no classifier; convert a ViTForImageClassification)"
                              if name.startswith("classifier") else ""))
        used.add(name)
        return theirs[name]

    ours: dict[str, Tensor] = {}
    emb = "vit.embeddings"
    ours["cls_token"] = take(f"{emb}.cls_token")                                  # $x_{class}$ `(1, 1, D)`
    ours["pos_embedding"] = take(f"{emb}.position_embeddings")                    # $E_{pos}$ `(1, N + 1, D)`
    # The convolution's weight `(D, c, P, P)`, its input axes put in our flattening order `(p1 p2 c)`.
    conv = take(f"{emb}.patch_embeddings.projection.weight")
    ours["patch_to_embedding.weight"] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)  # $E$ `(D, P P c)`
    ours["patch_to_embedding.bias"] = take(f"{emb}.patch_embeddings.projection.bias")

    for layer in range(config["num_hidden_layers"]):
        src = f"vit.layers.{layer}"
        attn, ff = f"attn_layers.blocks.{2 * layer}", f"attn_layers.blocks.{2 * layer + 1}"
        for p in ("weight", "bias"):
            ours[f"{attn}.pre_norm.{p}"] = take(f"{src}.layernorm_before.{p}")     # LN before attention
            ours[f"{ff}.pre_norm.{p}"] = take(f"{src}.layernorm_after.{p}")        # LN before the MLP
        # $[W_Q; W_K; W_V]$ fused into one projection, and their biases likewise
        ours[f"{attn}.fn.to_qkv.weight"] = torch.cat([take(f"{src}.attention.{p}_proj.weight") for p in "qkv"])
        if bias:
            ours[f"{attn}.fn.to_qkv.bias"] = torch.cat([take(f"{src}.attention.{p}_proj.bias") for p in "qkv"])
        for p in ("weight", "bias"):
            ours[f"{attn}.fn.to_out.{p}"] = take(f"{src}.attention.o_proj.{p}")    # $W_O, b_O$
            ours[f"{ff}.fn.proj_in.0.{p}"] = take(f"{src}.mlp.fc1.{p}")            # $W_1, b_1$ `(H, D)`
            ours[f"{ff}.fn.proj_out.{p}"] = take(f"{src}.mlp.fc2.{p}")             # $W_2, b_2$ `(D, H)`
    for p in ("weight", "bias"):
        ours[f"attn_layers.final_norm.{p}"] = take(f"vit.layernorm.{p}")          # the final LayerNorm
        ours[f"mlp_head.{p}"] = take(f"classifier.{p}")                            # the head on $x_{class}$
    # The pooler (dense + tanh on the class token) of a `ViTModel` is not on the classification path;
    # `transformers` ignores it too when a classifier is loaded.
    left = sorted(k for k in set(theirs) - used if not k.startswith("vit.pooler."))
    if left:
        raise ValueError(f"state: weights this ViT converter does not know: {left[:8]}"
                         f"{' ...' if len(left) > 8 else ''}")
    return ours
