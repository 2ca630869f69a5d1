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

`model(src, tgt, mask=src_mask)` (or `src_mask=`, and `tgt_mask=`) returns the decoder's next-token
loss on `tgt`; `model.generate(src, start_tokens, seq_len, mask=src_mask)` encodes the source once
and decodes with the key/value cache, the context's keys and values computed only at the first step.
`cross_attn_tokens_dropout=p` drops a random fraction $p$ of the encoded tokens from the decoder's
view in training (a regulariser from [Perceiver AR](https://arxiv.org/abs/2202.07765)).

Shapes: `b` batch, `n` source tokens, `t` target tokens.
"""

from __future__ import annotations

import inspect
import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .. import keyword_reference
from ..checks import check_mask, check_probability, check_tensor
from ..generation.autoregressive import AutoregressiveWrapper
from ..options import unknown_keyword_error, valid_layer_keywords
from .layers import Decoder, Encoder
from .wrappers import TransformerWrapper

# Keywords of the token wrappers; every other prefixed keyword goes to the layer stacks.
_WRAPPER_KEYS = set(inspect.signature(TransformerWrapper.__init__).parameters) - {"self", "attn_layers"}


def _split(prefix: str, kwargs: dict) -> tuple[dict, dict]:
    wrapper, layers = {}, {}
    for key, value in kwargs.items():
        name = key[len(prefix):]
        (wrapper if name in _WRAPPER_KEYS else layers)[name] = value
    return wrapper, layers


def _one_mask(mask: Optional[Tensor], src_mask: Optional[Tensor]) -> Optional[Tensor]:
    """The source mask, given as x-transformers' `mask=` or as `src_mask=`."""
    if mask is not None and src_mask is not None:
        raise ValueError("mask and src_mask: both name the source mask; give one of them")
    return src_mask if mask is None else mask


def dropout_seq(seq: Tensor, mask: Optional[Tensor], prob: float) -> tuple[Tensor, Optional[Tensor]]:
    r"""Keep a random $\lceil (1 - p)\, n \rceil$ of the tokens of `seq` `(b, n, D)` (at least one), in order."""
    b, n = seq.shape[:2]
    keep = max(1, math.ceil(n * (1 - prob)))
    scores = torch.rand(b, n, device=seq.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, -1.0)  # real tokens first
    idx = scores.topk(keep, dim=-1).indices.sort(dim=-1).values  # (b, keep)
    seq = seq.gather(1, idx[..., None].expand(-1, -1, seq.shape[-1]))
    return seq, (mask.gather(1, idx) if mask is not None else None)


class XTransformer(nn.Module):
    """An encoder and a cross-attending decoder configured with `enc_*` / `dec_*` keywords."""

    def __init__(self, *, dim: int, tie_token_emb: bool = False, ignore_index: int = -100,
                 pad_value: int = 0, cross_attn_tokens_dropout: float = 0.0, **kwargs):
        super().__init__()
        check_probability("cross_attn_tokens_dropout", cross_attn_tokens_dropout)
        # Perceiver AR's regulariser: in training the decoder sees a random part of the encoding.
        self.cross_attn_tokens_dropout = cross_attn_tokens_dropout
        layer_keys = [k for k in valid_layer_keywords() if k not in ("dim", "causal", "only_cross")]
        valid = [p + k for p in ("enc_", "dec_") for k in sorted(_WRAPPER_KEYS) + layer_keys]
        for key in kwargs:
            if not key.startswith(("enc_", "dec_")) or key not in valid:
                raise unknown_keyword_error("XTransformer", key, valid + ["dim", "tie_token_emb", "ignore_index", "pad_value",
                                                                    "cross_attn_tokens_dropout"])
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

    def forward(self, src: Tensor, tgt: Tensor, mask: Optional[Tensor] = None, src_mask: Optional[Tensor] = None,
                tgt_mask: Optional[Tensor] = None, src_prepend_embeds: Optional[Tensor] = None) -> Tensor:
        """The next-token loss of the decoder on `tgt`, conditioned on `src`.

        `mask` is x-transformers' name for the source mask `src_mask` (give one of them);
        `src_prepend_embeds` `(b, p, dim)` go before the source tokens."""
        src_mask = _one_mask(mask, src_mask)
        check_tensor("tgt", tgt, "(batch, tgt_len) of token ids", ndim=2, kind="int")
        check_mask("tgt_mask", tgt_mask, tuple(tgt.shape), "(batch, tgt_len), true for real tokens")
        if src_prepend_embeds is None:
            enc = self.encode(src, src_mask)
        else:
            check_tensor("src", src, "(batch, src_len) of token ids", ndim=2, kind="int")
            enc = self.encoder(src, mask=src_mask, prepend_embeds=src_prepend_embeds, return_embeddings=True)
            if src_mask is not None:
                src_mask = torch.cat((src_mask.new_ones(src.shape[0], src_prepend_embeds.shape[1]), src_mask), dim=1)
        if self.training and self.cross_attn_tokens_dropout > 0:
            enc, src_mask = dropout_seq(enc, src_mask, self.cross_attn_tokens_dropout)
        return self.decoder(tgt, mask=tgt_mask, context=enc, context_mask=src_mask)

    def generate(self, src: Tensor, start_tokens: Union[Tensor, int], seq_len: int,
                 mask: Optional[Tensor] = None, src_mask: Optional[Tensor] = None, **kwargs) -> Tensor:
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
        src_mask = _one_mask(mask, src_mask)
        enc = self.encode(src, src_mask)
        return self.decoder.generate(start_tokens, seq_len, context=enc, context_mask=src_mask, **kwargs)  # type: ignore[return-value]


# `help(XTransformer)` lists its keywords and those its enc_/dec_ prefixes route (keyword_reference.py).
keyword_reference.attach_doc(XTransformer, keyword_reference.xtransformer_text)
