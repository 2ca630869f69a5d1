r"""
# Encoder/decoder: `XTransformer`

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

The original transformer translates: an encoder reads the source sequence bidirectionally, and a
causal decoder writes the target one token at a time, attending to its own past through
self-attention and to the encoded source through cross-attention:

$$p(y \mid x) = \prod_t p\big(y_t \mid y_{<t},\ \operatorname{Enc}(x)\big)$$

`XTransformer` builds both from x-transformers' keywords: everything prefixed `enc_` configures the
encoder (`enc_depth`, `enc_heads`, `enc_num_tokens`, `enc_max_seq_len`, `enc_rotary_pos_emb`, ...),
everything prefixed `dec_` the decoder.  `dim` is shared.  `tie_token_emb=True` shares one token
embedding between encoder and decoder (the paper shares it with the output projection too).

`model(src, tgt, src_mask=, tgt_mask=)` returns the decoder's next-token loss on `tgt`;
`model.generate(src, start_tokens, seq_len, src_mask=)` encodes the source once and decodes with the
key/value cache, the context's keys and values computed only at the first step.

Shapes: `b` batch, `n` source tokens, `t` target tokens.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .. import keyword_reference
from ..checks import check_mask, check_tensor
from ..generation.autoregressive import AutoregressiveWrapper
from ..options import unknown_keyword_error, valid_layer_keywords
from .layers import Decoder, Encoder
from .wrappers import TransformerWrapper

# Keywords of the token wrappers; every other prefixed keyword goes to the layer stacks.
_WRAPPER_KEYS = {"num_tokens", "max_seq_len", "emb_dim", "emb_dropout", "num_memory_tokens",
                 "use_abs_pos_emb", "sinusoidal_pos_emb", "tie_embedding", "tie_embedding_scale", "max_mem_len",
                 "shift_mem_down", "logits_bias"}


def _split(prefix: str, kwargs: dict) -> tuple[dict, dict]:
    wrapper, layers = {}, {}
    for key, value in kwargs.items():
        name = key[len(prefix):]
        (wrapper if name in _WRAPPER_KEYS else layers)[name] = value
    return wrapper, layers


class XTransformer(nn.Module):
    """An encoder and a cross-attending decoder configured with `enc_*` / `dec_*` keywords."""

    def __init__(self, *, dim: int, tie_token_emb: bool = False, ignore_index: int = -100,
                 pad_value: int = 0, **kwargs):
        super().__init__()
        layer_keys = [k for k in valid_layer_keywords() if k not in ("dim", "causal", "only_cross")]
        valid = [p + k for p in ("enc_", "dec_") for k in sorted(_WRAPPER_KEYS) + layer_keys]
        for key in kwargs:
            if not key.startswith(("enc_", "dec_")) or key not in valid:
                raise unknown_keyword_error("XTransformer", key, valid + ["dim", "tie_token_emb", "ignore_index", "pad_value"])
        enc_wrap, enc_layers = _split("enc_", {k: v for k, v in kwargs.items() if k.startswith("enc_")})
        dec_wrap, dec_layers = _split("dec_", {k: v for k, v in kwargs.items() if k.startswith("dec_")})
        for side, wrap in (("enc", enc_wrap), ("dec", dec_wrap)):
            for required in ("num_tokens", "max_seq_len"):
                if required not in wrap:
                    raise TypeError(f"XTransformer() missing required keyword argument '{side}_{required}'")
        dec_layers.setdefault("cross_attend", True)
        self.encoder = TransformerWrapper(**enc_wrap, attn_layers=Encoder(dim=dim, **enc_layers))
        decoder = TransformerWrapper(**dec_wrap, attn_layers=Decoder(dim=dim, **dec_layers))
        if tie_token_emb:
            if self.encoder.num_tokens != decoder.num_tokens:
                raise ValueError("tie_token_emb: enc_num_tokens and dec_num_tokens must be equal to share an embedding")
            decoder.token_emb = self.encoder.token_emb
        self.decoder = AutoregressiveWrapper(decoder, ignore_index=ignore_index, pad_value=pad_value)

    def encode(self, src: Tensor, src_mask: Optional[Tensor] = None) -> Tensor:
        """The encoded source `(b, n, dim)`."""
        check_tensor("src", src, "(batch, src_len) of token ids", ndim=2, kind="int")
        check_mask("src_mask", src_mask, tuple(src.shape), "(batch, src_len), true for real tokens")
        return self.encoder(src, mask=src_mask, return_embeddings=True)

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Optional[Tensor] = None,
                tgt_mask: Optional[Tensor] = None) -> Tensor:
        """The next-token loss of the decoder on `tgt`, conditioned on `src`."""
        check_tensor("tgt", tgt, "(batch, tgt_len) of token ids", ndim=2, kind="int")
        check_mask("tgt_mask", tgt_mask, tuple(tgt.shape), "(batch, tgt_len), true for real tokens")
        enc = self.encode(src, src_mask)
        return self.decoder(tgt, mask=tgt_mask, context=enc, context_mask=src_mask)

    def generate(self, src: Tensor, start_tokens: Union[Tensor, int], seq_len: int,
                 src_mask: Optional[Tensor] = None, **kwargs) -> Tensor:
        """Encode `src` once, then sample `seq_len` target tokens after `start_tokens`.

        `start_tokens` is a `(b, t)` tensor, or one token id that starts every row (T5's
        `decoder_start_token_id`).  Other keywords (`temperature=0.` for greedy decoding,
        `eos_token=`, ...) go to `AutoregressiveWrapper.generate`; only the new tokens are returned.
        """
        if isinstance(start_tokens, int) and not isinstance(start_tokens, bool):
            if not torch.is_tensor(src) or src.dim() != 2:
                raise ValueError(f"src: expected token ids (batch, n), got "
                                 f"{tuple(src.shape) if torch.is_tensor(src) else type(src).__name__}")
            start_tokens = src.new_full((src.shape[0], 1), start_tokens)  # (b, 1)
        elif not torch.is_tensor(start_tokens):
            raise ValueError(f"start_tokens: expected a (batch, t) tensor of token ids or one token id, "
                             f"got {type(start_tokens).__name__}")
        enc = self.encode(src, src_mask)
        return self.decoder.generate(start_tokens, seq_len, context=enc, context_mask=src_mask, **kwargs)


# `help(XTransformer)` lists its keywords and those its enc_/dec_ prefixes route (keyword_reference.py).
keyword_reference.attach_doc(XTransformer, keyword_reference.xtransformer_text)
