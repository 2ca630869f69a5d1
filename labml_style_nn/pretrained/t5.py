r"""
# T5

*Paper:* [Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer](https://arxiv.org/abs/1910.10683) (Raffel et al., 2020); [GLU Variants Improve Transformer](https://arxiv.org/abs/2002.05202) (Shazeer, 2020)

T5 casts every task as text to text ("translate English to German: ...", "summarize: ...") and
solves it with the original encoder-decoder transformer, changed in a few deliberate ways.  This
page builds it from the keyword API, as an `XTransformer`, and loads the weights of a Hugging Face
`transformers` `T5ForConditionalGeneration` or `MT5ForConditionalGeneration` (or a checkpoint
folder) into it, name by name.  The converted model computes the same encoder states and the same
logits (a test checks both within $10^{-4}$ in float32, on padded batches) and generates the same
tokens greedily.

```python
from labml_style_nn import from_pretrained
model = from_pretrained("google-t5/t5-small")     # or a folder with config.json and *.safetensors
out = model.generate(src, 0, 32, src_mask=src_mask, temperature=0., eos_token=1)   # (b, 32) token ids
```

## The architecture

* **Pre-norm blocks with T5's norm.**  Every sublayer is $x \leftarrow x + F(\operatorname{Norm}(x))$
  and each stack ends with a norm.  The norm is RMSNorm with no mean and no bias,
  $\gamma \odot x / \sqrt{\tfrac1D \sum_k x_k^2 + \epsilon}$, $\epsilon = 10^{-6}$
  ([RMSNorm](../norms/rms_norm.md)): `use_rmsnorm=True, norm_eps=layer_norm_epsilon`.
* **No absolute positions.**  Order enters only through a learned scalar per head and per bucket
  of relative distance, added to the attention logits ([T5 bias](../positional/t5_bias.md)):
  `rel_pos_bias=True` with the config's buckets and maximum distance.  Each stack has one table;
  the encoder's buckets are bidirectional, the decoder's causal, cross-attention has none.
* **Unscaled logits.**  $S = q k^\top + B$, with no $1/\sqrt d$: T5 folds it into the
  initialisation of $W_Q$.  `attn_scale=1.0`.  Heads have their own width $d$ (`d_kv`), not
  $D / h$: `attn_dim_head=d_kv`.  No biases anywhere.
* **The feed-forward layer.**  T5 (v1.0): $\operatorname{ReLU}(x W_i) W_o$, no biases
  (`ff_activation="relu", ff_no_bias=True, ff_inner_dim=d_ff`).  T5 v1.1 (and Flan-T5, mT5):
  a gated GELU, $\big(\operatorname{GELU}_{\tanh}(x W_{i,0}) \odot x W_{i,1}\big) W_o$
  ([GLU variants](../feedforward/glu.md)): `ff_glu=True, ff_activation="gelu_tanh"`.
* **One vocabulary.**  The encoder's and decoder's token embeddings are one matrix
  (`tie_token_emb=True`).  v1.0 also projects to logits with it, after scaling the decoder's
  final states by $D^{-1/2}$: `dec_tie_embedding=True, dec_tie_embedding_scale=D ** -0.5`.  v1.1
  has its own output matrix, with no bias and no scaling (`dec_logits_bias=False`).  The encoder
  and decoder may have different depths (`enc_depth`, `dec_depth`).
* **Generation** starts every target with `decoder_start_token_id` (the padding token, 0) and
  stops a row at `eos_token_id` (1): `model.generate(src, 0, n, src_mask=mask, temperature=0.,
  eos_token=1)`.

Shapes: `D` model width (`d_model`), `h` heads, `d` head width (`d_kv`), `H` feed-forward width
(`d_ff`), `V` vocabulary, `l` a layer index.

## Differences from Hugging Face `transformers`

* The converted model is for inference: it has no dropout (T5's `dropout_rate` is not carried
  over; the keyword API places dropout differently).
* `transformers` 5 writes `tie_word_embeddings=True` into every T5 config and reads an original
  `false` only as "do not scale by $D^{-1/2}$" (`scale_decoder_outputs`); it still loads a
  checkpoint's own `lm_head.weight` untied.  So a config cannot tell whether an unscaled head is
  tied: we build every unscaled head as a matrix of its own and load `lm_head.weight` into it, or
  the embedding when the checkpoint has no `lm_head.weight` (the same numbers; one more matrix).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.xtransformer import XTransformer

# mT5 is T5 v1.1 on a multilingual vocabulary: the same weights, never scaled before the head.
MODEL_TYPES = ("t5", "mt5")

# Names of `transformers` activations, as `ff_activation` spells them.
_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "silu": "silu", "swish": "silu"}


#
# ## Reading the config
def _feed_forward(config: dict[str, Any]) -> tuple[bool, str]:
    """`(gated, activation)` from `feed_forward_proj`: `"relu"` (v1.0) or `"gated-gelu"` (v1.1)."""
    proj = config.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    if len(parts) > 2 or (len(parts) == 2 and not gated):
        raise ValueError(f"feed_forward_proj: expected 'ACT' or 'gated-ACT', got {proj!r}")
    # "gated-gelu" means the tanh approximation, a historical quirk kept by every T5 checkpoint.
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if act not in _ACTIVATIONS:
        raise ValueError(f"feed_forward_proj: activation {act!r} is not one of {sorted(_ACTIVATIONS)}")
    return gated, _ACTIVATIONS[act]


def _head(config: dict[str, Any]) -> tuple[bool, bool]:
    """`(tied, scaled)`: whether logits use the embedding matrix, and whether $D^{-1/2}$ scales them first.

    An original config says `tie_word_embeddings: false` for v1.1 (untied, unscaled) and nothing
    for v1.0 (tied, scaled); `transformers` 5 writes `tie_word_embeddings: true` for both and
    `scale_decoder_outputs` explicitly.  mT5 never scales.  Only a scaled head (v1.0) is surely
    tied; an unscaled one is built untied and takes `lm_head.weight` (or the embedding).
    """
    tie_flag = config.get("tie_word_embeddings", True) is not False
    scaled = bool(config.get("scale_decoder_outputs", tie_flag)) and config.get("model_type") != "mt5"
    return tie_flag and scaled, scaled


#
# ## The model, as keyword options
def keywords(config: dict[str, Any]) -> dict[str, Any]:
    """The `XTransformer` keywords of a T5 config."""
    gated, activation = _feed_forward(config)
    tied, scaled = _head(config)
    d_model = config["d_model"]
    # What the encoder and the decoder stacks share.
    stack = dict(
        heads=config["num_heads"],
        attn_dim_head=config["d_kv"],             # $d$ = d_kv, not D / h
        attn_scale=1.0,                           # $S = q k^\top + B$: unscaled logits
        rel_pos_bias=True,                        # T5's bucketed relative bias, one table per stack
        rel_pos_num_buckets=config.get("relative_attention_num_buckets", 32),
        rel_pos_max_distance=config.get("relative_attention_max_distance", 128),
        use_rmsnorm=True,                         # no mean, no bias
        norm_eps=config.get("layer_norm_epsilon", 1e-6),
        norm_add_unit_offset=False,               # gains stored as the checkpoint stores them
        ff_inner_dim=config["d_ff"],
        ff_glu=gated,                             # v1.1: gated GELU
        ff_activation=activation,                 # v1.0: ReLU; v1.1: GELU (tanh)
        ff_no_bias=True,
    )
    vocab = config["vocab_size"]
    max_len = config.get("n_positions", 512)      # no absolute positions: only a nominal length
    kw: dict[str, Any] = dict(dim=d_model, tie_token_emb=True, pad_value=config.get("pad_token_id", 0) or 0,
                              enc_num_tokens=vocab, enc_max_seq_len=max_len, enc_depth=config["num_layers"],
                              dec_num_tokens=vocab, dec_max_seq_len=max_len,
                              dec_depth=config.get("num_decoder_layers") or config["num_layers"])
    kw.update({"enc_" + k: v for k, v in stack.items()})
    # The encoder's wrapper never projects to logits; tying gives it no matrix of its own to load.
    kw["enc_tie_embedding"] = True
    kw.update({"dec_" + k: v for k, v in stack.items()})
    if tied:
        kw["dec_tie_embedding"] = True
        if scaled:
            kw["dec_tie_embedding_scale"] = d_model ** -0.5  # $z = (D^{-1/2} h) E^\top$
    else:
        kw["dec_logits_bias"] = False                         # $z = h W^\top$, no bias
    return kw


def build(config: dict[str, Any]) -> XTransformer:
    """Our `XTransformer` for a Hugging Face T5 config dict (random weights)."""
    return XTransformer(**keywords(config))


#
# ## The weights, name by name
#
# Theirs: `encoder.block.{l}.layer.{0: self-attention, 1: feed-forward}` and
# `decoder.block.{l}.layer.{0: self-attention, 1: cross-attention, 2: feed-forward}`.  Ours: the
# stack's blocks in order, `afaf...` in the encoder and `acfacf...` in the decoder, each block a
# `pre_norm` and its sublayer `fn`.
def convert(config: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A `T5ForConditionalGeneration` state dict renamed to our `XTransformer`'s (for `strict=True`)."""
    gated, _ = _feed_forward(config)
    tied, scaled = _head(config)
    d_model = config["d_model"]
    theirs = dict(state)
    used: set[str] = set()

    def take(name: str) -> Tensor:
        if name not in theirs:
            raise KeyError(f"state: the T5 checkpoint has no weight {name!r}")
        used.add(name)
        return theirs[name]

    ours: dict[str, Tensor] = {}
    # The shared vocabulary $E$ `(V, D)`: one module in our model, reachable under both wrappers.
    emb_name = next((n for n in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
                     if n in theirs), "shared.weight")
    emb = take(emb_name)
    ours["encoder.token_emb.weight"] = emb
    ours["decoder.net.token_emb.weight"] = emb

    def attention(ours_prefix: str, theirs_prefix: str, cross: bool) -> None:
        q, k, v, o = (take(f"{theirs_prefix}.{p}.weight") for p in "qkvo")
        if cross:
            ours[f"{ours_prefix}.to_q.weight"] = q                               # $W_Q$ `(h d, D)`
            ours[f"{ours_prefix}.to_kv.weight"] = torch.cat((k, v))              # $[W_K; W_V]$ on the context
        else:
            ours[f"{ours_prefix}.to_qkv.weight"] = torch.cat((q, k, v))          # $[W_Q; W_K; W_V]$ fused
        ours[f"{ours_prefix}.to_out.weight"] = o                                 # $W_O$ `(D, h d)`

    def feed_forward(ours_prefix: str, theirs_prefix: str) -> None:
        if gated:
            # Our gated unit computes $[x V; x W]$ in one product and gates with the second half:
            # $V$ is their `wi_1` (linear), $W$ their `wi_0` (through GELU).
            ours[f"{ours_prefix}.proj_in.proj.weight"] = torch.cat(
                (take(f"{theirs_prefix}.wi_1.weight"), take(f"{theirs_prefix}.wi_0.weight")))
        else:
            ours[f"{ours_prefix}.proj_in.0.weight"] = take(f"{theirs_prefix}.wi.weight")  # $W_i$ `(H, D)`
        ours[f"{ours_prefix}.proj_out.weight"] = take(f"{theirs_prefix}.wo.weight")       # $W_o$ `(D, H)`

    for side, sublayers in (("encoder", "af"), ("decoder", "acf")):
        depth = config["num_layers"] if side == "encoder" else \
            (config.get("num_decoder_layers") or config["num_layers"])
        stack = "encoder.attn_layers" if side == "encoder" else "decoder.net.attn_layers"
        # The relative bias table `(B, h)` lives in their first layer and in our stack.
        ours[f"{stack}.rel_pos.bias.weight"] = take(
            f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        for layer in range(depth):
            for j, kind in enumerate(sublayers):
                block = f"{stack}.blocks.{layer * len(sublayers) + j}"
                sub = f"{side}.block.{layer}.layer.{j}"
                ours[f"{block}.pre_norm.gamma"] = take(f"{sub}.layer_norm.weight")  # $\gamma$ of the norm
                if kind == "a":
                    attention(f"{block}.fn", f"{sub}.SelfAttention", cross=False)
                elif kind == "c":
                    attention(f"{block}.fn", f"{sub}.EncDecAttention", cross=True)
                else:
                    feed_forward(f"{block}.fn", f"{sub}.DenseReluDense")
        ours[f"{stack}.final_norm.gamma"] = take(f"{side}.final_layer_norm.weight")

    # The output projection: tied (nothing to load), or their `lm_head` `(V, D)`.
    head = theirs.get("lm_head.weight")
    if tied:
        if head is not None and not torch.equal(head, emb):
            raise ValueError("config: tie_word_embeddings is true but lm_head.weight differs from the "
                             "embedding; set tie_word_embeddings=False in the config to load an untied head")
    else:
        w = take("lm_head.weight") if head is not None else emb
        # An untied head that is also scaled (no public checkpoint is) folds $D^{-1/2}$ into $W$.
        ours["decoder.net.to_logits.weight"] = w * d_model ** -0.5 if scaled else w
    # Copies of tied weights, and a table `transformers` itself ignores, carry nothing new.
    ignorable = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight", "shared.weight",
                 "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}
    left = sorted(set(theirs) - used - ignorable)
    if left:
        raise ValueError(f"state: weights this T5 converter does not know: {left[:8]}"
                         f"{' ...' if len(left) > 8 else ''}")
    return ours
