r"""
# The Free Transformer

*Paper:* [The Free Transformer](https://arxiv.org/abs/2510.17558) (Fleuret, 2025)

A decoder-only model makes every decision token by token: whether a review will be positive is
"decided" only implicitly, spread over the sampled words.  The Free Transformer gives the decoder
latent random variables $Z$ to condition on, and learns them without supervision as a conditional
variational autoencoder.  The decoder is cut in two halves.  The first half (the *head*) runs as
usual; a one-block, non-causal *encoder* reads the head's output of the whole sequence and, at
every position $t$, picks one of $2^H$ codes $Z_t$; a linear map of the one-hot $Z_t$ is added to the
keys' and values' input of the first self-attention layer of the second half (the *tail*)
([kv input residuals](../models/kv_input_residuals.md)).  At generation there is no encoder: $Z$
is drawn from the uniform prior (here: given, or left out).

The encoder's queries are one learned vector $\zeta$ at every position, rotated by the position,
with the head's outputs as keys and values ([cross rotary](../positional/cross_rotary.md)).  It
outputs $H$ bit logits $l_{t,1..H}$; the bits are sampled independently, $B_{t,k} \sim
\operatorname{Bernoulli}(\sigma(l_{t,k}))$, and the code is $Z_t = \sum_k 2^{k} B_{t,k}$.  The
gradient passes through the code's probability
$G_t(z) = \prod_k \sigma(l_{t,k})^{z_k} (1 - \sigma(l_{t,k}))^{1 - z_k}$ by the straight-through
trick, $\operatorname{onehot}(Z_t) + G_t - \operatorname{sg}(G_t)$.  The loss is the next-token
cross-entropy plus the KL divergence of the encoder's distribution from the uniform prior, of
which $\kappa$ nats per token are free (so that $Z$ carries some information, but not the answer):

$$\mathcal{L} = \operatorname{CE} + \lambda\,\frac{1}{n}\sum_t \max\Big(0,\ \underbrace{H \log 2 - \sum_k h\big(\sigma(l_{t,k})\big)}_{D_{KL}(Q(Z_t) \,\|\, U)} - \kappa\Big)$$

with $h(p) = -p \log p - (1 - p)\log(1 - p)$ the binary entropy.

```python
model = FreeTransformer(num_tokens=256, dim=512, dec_head_depth=4, dec_tail_depth=4, max_seq_len=1024,
                        enc_depth=1, latent_bits=16)
loss, (ar_loss, kl_loss) = model(seq, return_all_losses=True)   # seq (b, n)
out = model.generate(seq[:, :1], 64, latents=3)                  # (b, 64): one code for every step
```

**Differences from the paper.**  As in x-transformers: the encoder's queries are $\zeta$ rotated by
position (the paper adds $\zeta$ to a copy of the head's output and runs a full non-causal block);
the KL's free bits are applied per token before the mean.  Generation without `latents` runs the
tail unconditioned instead of drawing $Z$ from the prior.

**Differences from x-transformers.**  `dim_latent` is ignored there; here it must be left out (or
equal `dim`), and `binary_mapper_kwargs` must be empty (the mapper has no options beyond
`latent_bits` and `kl_loss_threshold`).  Per-token `latents` given to `generate` are refused,
since the cached tail sees one token per step.  The stacks and their keywords are this library's
`Encoder` and `Decoder`.

Shapes: `b` batch, `n` tokens, `D` width, `H` latent bits, `C` $= 2^H$ codes, `V` vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation.beam_search import gumbel_noise
from ..generation.sampling import resolve_filter, top_p
from ..models.layers import Decoder, Encoder

# One bit in nats, the default of the free KL per token.
NAT = math.log(2)


def binary_entropy(logits: Tensor) -> Tensor:
    r"""$\sum_k h(\sigma(l_k))$ over the last dimension, in nats.

    >>> round(binary_entropy(torch.zeros(3)).item() / math.log(2), 4)   # three fair coins: three bits
    3.0
    """
    p = logits.sigmoid()
    # $h(p) = -p \log p - (1 - p) \log (1 - p)$, with $\log \sigma(l)$ and $\log \sigma(-l)$ computed stably
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).sum(dim=-1)


class BinaryMapper(nn.Module):
    """Samples a one-hot code `(..., C)` from `H` bit logits, with a straight-through gradient and the free-bits KL."""

    power_two: Tensor
    codes: Tensor

    def __init__(self, bits: int = 1, kl_loss_threshold: float = NAT):
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 24:
            raise ValueError(f"latent_bits: expected an integer in 1..24 (2**bits codes), got {bits!r}")
        self.bits, self.num_codes, self.kl_loss_threshold = bits, 2 ** bits, kl_loss_threshold
        # $2^k$ and the bits of every code, $z_k$ of code $z$ (bit $k$ is worth $2^k$)
        power_two = 2 ** torch.arange(bits)
        self.register_buffer("power_two", power_two, persistent=False)
        self.register_buffer("codes", (torch.arange(self.num_codes)[:, None] & power_two) != 0, persistent=False)

    def forward(self, logits: Tensor, temperature: float = 1.0, straight_through: Optional[bool] = None,
                calc_aux_loss: Optional[bool] = None) -> tuple[Tensor, Tensor]:
        """`(one_hot (..., C), kl_loss)` for bit logits `(..., H)`; both options default to training."""
        straight_through = self.training if straight_through is None else straight_through
        calc_aux_loss = self.training if calc_aux_loss is None else calc_aux_loss
        if logits.shape[-1] != self.bits:
            raise ValueError(f"logits: expected a last dimension of {self.bits} bits, got {tuple(logits.shape)}")
        # $B_k \sim \operatorname{Bernoulli}(\sigma(l_k / T))$, $Z = \sum_k 2^k B_k$
        bits = (torch.rand_like(logits) <= (logits / temperature).sigmoid()).long()
        one_hot = F.one_hot((bits * self.power_two).sum(dim=-1), self.num_codes).to(logits.dtype)  # (..., C)
        kl_loss = logits.new_zeros(())
        if calc_aux_loss:
            # $\max(0, H \log 2 - \sum_k h(\sigma(l_k)) - \kappa)$, averaged over the positions
            kl = self.bits * NAT - binary_entropy(logits)
            kl_loss = F.relu(kl - self.kl_loss_threshold).mean()
        if straight_through:
            # $\log G(z) = \sum_k z_k \log \sigma(l_k) + (1 - z_k) \log \sigma(-l_k)$
            codes = self.codes.to(logits.dtype)
            log_g = F.logsigmoid(logits) @ codes.t() + F.logsigmoid(-logits) @ (1 - codes).t()  # (..., C)
            g = log_g.exp()
            # $\operatorname{onehot}(Z) + G - \operatorname{sg}(G)$
            one_hot = one_hot + g - g.detach()
        return one_hot, kl_loss


class FreeTransformer(nn.Module):
    """A decoder whose second half is conditioned on per-token latent codes, trained as a conditional VAE."""

    def __init__(self, *, num_tokens: int, dim: int, dec_head_depth: int, dec_tail_depth: int, max_seq_len: int,
                 enc_depth: int = 1, dim_latent: Optional[int] = None, attn_dim_head: int = 64, heads: int = 8,
                 latent_bits: int = 16, per_token_latents: bool = True, kl_loss_threshold: float = NAT,
                 binary_mapper_kwargs: Optional[dict] = None, enc_kwargs: Optional[dict] = None,
                 dec_kwargs: Optional[dict] = None, kl_loss_weight: float = 1.0, latent_dropout_prob: float = 0.0,
                 pad_id: int = -1, **kwargs: Any):
        super().__init__()
        if dim_latent is not None and dim_latent != dim:
            raise ValueError(f"dim_latent: x-transformers ignores it; expected None or dim ({dim}), got {dim_latent!r}")
        if binary_mapper_kwargs:
            raise ValueError("binary_mapper_kwargs: expected an empty dict; the mapper's options are latent_bits "
                             "and kl_loss_threshold")
        if isinstance(dec_tail_depth, bool) or not isinstance(dec_tail_depth, int) or dec_tail_depth < 1:
            raise ValueError(f"dec_tail_depth: expected a positive integer, got {dec_tail_depth!r}")
        if isinstance(dec_head_depth, bool) or not isinstance(dec_head_depth, int) or dec_head_depth < 0:
            raise ValueError(f"dec_head_depth: expected an integer >= 0, got {dec_head_depth!r}")
        self.max_seq_len, self.pad_id, self.kl_loss_weight = max_seq_len, pad_id, kl_loss_weight
        self.per_token_latents = per_token_latents
        self.token_emb = nn.Embedding(num_tokens, dim)
        self.token_unembed = nn.Linear(dim, num_tokens, bias=False)
        # $\zeta$, the encoder's one query
        self.query_token_for_latents = nn.Parameter(torch.randn(dim) * 1e-2)
        common = dict(dim=dim, attn_dim_head=attn_dim_head, heads=heads, rotary_pos_emb=True, use_rmsnorm=True)
        self.encoder = Encoder(**common, depth=enc_depth, only_cross=True, cross_attend=True,
                               pre_norm_has_final_norm=True, **kwargs, **(enc_kwargs or {}))
        self.binary_mapper = BinaryMapper(latent_bits, kl_loss_threshold)
        self.to_latent_bit_logits = nn.Linear(dim, latent_bits, bias=False)
        # The code's embedding, added to the tail's first keys and values
        self.from_latent_to_condition = nn.Linear(self.binary_mapper.num_codes, dim, bias=False)
        self.latent_dropout = nn.Dropout(latent_dropout_prob)
        dec = {**kwargs, **(dec_kwargs or {})}
        # The head ends without a norm: its output is the tail's input and the encoder's context.
        self.decoder_head = Decoder(**common, depth=dec_head_depth, pre_norm_has_final_norm=False, **dec) \
            if dec_head_depth > 0 else None
        self.decoder_tail = Decoder(**common, depth=dec_tail_depth, pre_norm_has_final_norm=True, **dec)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_to_latents(self, decoder_head_embeds: Tensor, mask: Optional[Tensor] = None,
                          return_kl_loss: bool = False, per_token_latents: Optional[bool] = None):
        """One-hot codes `(b, n, C)` (or `(b, 1, C)`, one per sequence) from the head's output `(b, n, D)`."""
        per_token = self.per_token_latents if per_token_latents is None else per_token_latents
        b, n = decoder_head_embeds.shape[:2]
        queries = self.query_token_for_latents.expand(b, n if per_token else 1, -1)  # (b, n|1, D)
        positions: dict[str, Tensor] = {}
        if per_token:
            # Query $t$ at position $t$, the head's outputs at theirs: $\zeta$ rotated by position
            pos = torch.arange(n, device=decoder_head_embeds.device)
            positions = dict(pos=pos, context_pos=pos)
        pooled = self.encoder(queries, context=decoder_head_embeds, context_mask=mask, **positions)
        # $l_{t,1..H}$
        bit_logits = self.to_latent_bit_logits(pooled)
        one_hot, kl_loss = self.binary_mapper(bit_logits, calc_aux_loss=return_kl_loss)
        return (one_hot, kl_loss) if return_kl_loss else one_hot

    def _head(self, tokens: Tensor) -> Tensor:
        return self.decoder_head(tokens) if self.decoder_head is not None else tokens

    def forward(self, seq: Tensor, seq_for_latents: Optional[Tensor] = None, return_all_losses: bool = False):
        """The loss on token ids `seq` `(b, n)`; with `return_all_losses`, `(loss, (ar_loss, kl_loss))`.

        `seq_for_latents` `(b, m)`: encode one latent for the whole sequence from these tokens instead."""
        if not torch.is_tensor(seq) or seq.dim() != 2 or seq.is_floating_point() or seq.shape[1] < 2:
            raise ValueError("seq: expected token ids of shape (batch, n) with n >= 2")
        inp, labels = seq[:, :-1], seq[:, 1:]
        tokens = self._head(self.token_emb(inp))  # (b, n - 1, D)
        if seq_for_latents is not None:
            if not torch.is_tensor(seq_for_latents) or seq_for_latents.dim() != 2 \
                    or seq_for_latents.shape[0] != seq.shape[0] or seq_for_latents.is_floating_point():
                raise ValueError(f"seq_for_latents: expected token ids of shape ({seq.shape[0]}, m)")
            for_latents, mask, per_token = self._head(self.token_emb(seq_for_latents)), \
                seq_for_latents != self.pad_id, False
        else:
            for_latents, mask, per_token = tokens, inp != self.pad_id, None
        latents, kl_loss = self.encode_to_latents(for_latents, mask=mask, per_token_latents=per_token,
                                                  return_kl_loss=True)
        # $W_z\,\operatorname{onehot}(Z_t)$, added to the tail's first keys' and values' input
        condition = self.from_latent_to_condition(self.latent_dropout(latents))
        logits = self.token_unembed(self.decoder_tail(tokens, self_attn_kv_residuals=condition))  # (b, n - 1, V)
        ar_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=self.pad_id)
        # $\operatorname{CE} + \lambda \cdot \mathrm{KL}$
        total = ar_loss + kl_loss * self.kl_loss_weight
        return (total, (ar_loss, kl_loss)) if return_all_losses else total

    def _condition(self, latents: Union[Tensor, int, list, None], batch: int) -> Optional[Tensor]:
        """The tail's condition `(b, 1, D)` from codes (ids, or one-hot / soft vectors over the `C` codes)."""
        if latents is None:
            return None
        latents = latents if torch.is_tensor(latents) else torch.tensor(latents, device=self.device)
        if not latents.is_floating_point():
            latents = F.one_hot(latents.long(), self.binary_mapper.num_codes).float()
        if latents.dim() == 1:
            latents = latents.expand(batch, -1)
        if latents.dim() == 2:
            latents = latents[:, None]
        if latents.dim() != 3 or latents.shape[0] != batch or latents.shape[1] != 1 \
                or latents.shape[-1] != self.binary_mapper.num_codes:
            raise ValueError(f"latents: expected a code id, ({batch},) code ids or ({batch}, "
                             f"{self.binary_mapper.num_codes}) code vectors, got {tuple(latents.shape)}")
        return self.from_latent_to_condition(latents)

    @torch.no_grad()
    def generate(self, prompts: Tensor, seq_len: int, latents: Union[Tensor, int, list, None] = None,
                 filter_logits_fn: Union[Callable, str] = top_p, logit_filter_kwargs: Optional[dict] = None,
                 use_kv_cache: bool = True) -> Tensor:
        """The prompts `(..., t)` continued to `seq_len` tokens in all, each step conditioned on `latents`."""
        if not torch.is_tensor(prompts) or prompts.dim() < 1 or prompts.is_floating_point():
            raise ValueError("prompts: expected token ids of shape (..., t)")
        lead = prompts.shape[:-1]
        generated = prompts.reshape(-1, prompts.shape[-1])  # (b, t)
        condition = self._condition(latents, generated.shape[0])
        filter_fn = resolve_filter(filter_logits_fn)
        filter_kwargs = dict(thres=0.9) if logit_filter_kwargs is None else logit_filter_kwargs
        head_cache = tail_cache = None
        tokens = self.token_emb(generated)
        for _ in range(max(0, seq_len - generated.shape[-1])):
            if self.decoder_head is not None:
                h, next_head_cache = self.decoder_head(tokens, cache=head_cache, return_hiddens=True)
            else:
                h, next_head_cache = (tokens if tail_cache is None else tokens[:, -1:]), None
            # With a cache the head returns only the new token, which the tail continues from its own cache.
            out, next_tail_cache = self.decoder_tail(h, cache=tail_cache, return_hiddens=True,
                                                     input_not_include_cache=True, self_attn_kv_residuals=condition)
            logits = filter_fn(self.token_unembed(out[:, -1]), **filter_kwargs)  # (b, V)
            # Gumbel-max: $\arg\max_v (z_v + g_v)$ samples from the softmax
            sampled = (logits + gumbel_noise(logits)).argmax(dim=-1, keepdim=True)
            generated = torch.cat((generated, sampled), dim=-1)
            tokens = torch.cat((tokens, self.token_emb(sampled)), dim=1)
            if use_kv_cache:
                head_cache, tail_cache = next_head_cache, next_tail_cache
        return generated.reshape(*lead, -1)
