r"""
# GPT-VAE: a language model steered by a latent

*Papers:* the conditional VAE with a transformer encoder and a latent token of ACT,
[Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware](https://arxiv.org/abs/2304.13705)
(Zhao et al., 2023), applied to a GPT; the KL floor of [Improved Variational Inference with Inverse
Autoregressive Flow](https://arxiv.org/abs/1606.04934) (Kingma et al., 2016), as used in
[The Free Transformer](https://arxiv.org/abs/2510.17558) (Fleuret, 2025).

A language model samples one token at a time, so its choices about the sequence as a whole (style,
plan, topic) are made implicitly, token by token.  GPT-VAE makes them explicit: a bidirectional
encoder reads the whole sequence and produces a Gaussian $q(z \mid x) = \mathcal{N}(\mu, \sigma^2)$
over a latent; a sample $z$ becomes a token in front of the decoder, which models
$p_\theta(x_t \mid z, x_{<t})$.  Training minimises the negative ELBO,

$$\mathcal{L} = -\sum_t \log p_\theta(x_t \mid z, x_{<t})
+ \beta \sum_k \max\Big(0,\ \tfrac{1}{2}\big(\sigma_k^2 + \mu_k^2 - \log\sigma_k^2 - 1\big) - \lambda\Big),
\qquad z = \mu + \sigma\epsilon,$$

(the token loss averaged, $\beta$ = `vae_kl_loss_weight`, $\lambda$ = `vae_kl_div_floor`, "free
bits").  For a random `latents_dropout_prob` of the sequences the decoder does not attend to the
latent, so it remains a plain language model.  At generation the latent is a knob: draw it from the
prior $\mathcal{N}(0, I)$ for diversity, encode a reference sequence to imitate it, or leave it out.

```python
model = GPTVAE(num_tokens=256, dim=512, depth=6, enc_depth=2, max_seq_len=1024, dim_latent=32)
loss = model(seq)                                              # seq (b, n)
out = model.generate(seq[:, :1], 64, latents=torch.randn(32))  # (b, 64)
out = model.generate(seq[:, :1], 64, seq_for_latents=ref)       # in the style of ref
```

**Differences from x-transformers.**  x-transformers 2.31.10 drops the latent with `seq_start_pos=1`,
which also shifts the tokens' absolute positions by one (the first two tokens share position 0);
here `prepend_mask` hides the latent's key and the positions stay.  Padding (`pad_id`) is replaced by
token 0 before the encoder's embedding (it is masked there), so the default `pad_id=-1` works.
Generation with a latent runs without the key/value cache (this library's cached decoding does not
yet carry prepended embeddings); asking for `cache_kv` then is refused.  With
the latent kept (evaluation, or `latents_dropout_prob=0`) the loss, its gradients and the latents
equal x-transformers' with copied weights (a test checks it).

Shapes: `b` batch, `n` tokens, `D` width, `z` latent width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..generation.autoregressive import AutoregressiveWrapper
from ..models import Decoder, Encoder, TransformerWrapper
from .continuous_autoencoder import gaussian_kl


class GPTVAE(nn.Module):
    """A causal language model conditioned on a latent that a bidirectional encoder infers from the sequence."""

    def __init__(self, *, num_tokens: int, dim: int, depth: int, enc_depth: int, max_seq_len: int,
                 dim_latent: Optional[int] = None, attn_dim_head: int = 64, heads: int = 8,
                 enc_kwargs: Optional[dict] = None, dec_kwargs: Optional[dict] = None,
                 vae_kl_loss_weight: float = 1.0, vae_kl_div_floor: float = 0.0, latents_dropout_prob: float = 0.5,
                 pad_id: int = -1, encoder: Optional[nn.Module] = None, **kwargs):
        super().__init__()
        if not 0 <= latents_dropout_prob <= 1:
            raise ValueError(f"latents_dropout_prob: expected a probability in [0, 1], got {latents_dropout_prob!r}")
        if vae_kl_div_floor < 0:
            raise ValueError(f"vae_kl_div_floor: expected a floor >= 0, got {vae_kl_div_floor!r}")
        dim_latent = dim_latent or dim
        self.dim_latent = dim_latent
        # $q(z \mid x)$ reads the whole sequence; its mean over the tokens feeds $\mu, \log\sigma^2$
        self.encoder = encoder if encoder is not None else TransformerWrapper(
            num_tokens=num_tokens, max_seq_len=max_seq_len + 1, return_only_embed=True, average_pool_embed=True,
            attn_layers=Encoder(dim=dim, depth=enc_depth, attn_dim_head=attn_dim_head, heads=heads,
                                **kwargs, **(enc_kwargs or {})))
        self.to_latent_mean_log_variance = nn.Linear(dim, dim_latent * 2)
        # $z \mapsto$ the token in front of the decoder's input
        self.from_latent_to_prepend_token = nn.Linear(dim_latent, dim)
        self.decoder = TransformerWrapper(
            num_tokens=num_tokens, max_seq_len=max_seq_len,
            attn_layers=Decoder(dim=dim, depth=depth, attn_dim_head=attn_dim_head, heads=heads,
                                **kwargs, **(dec_kwargs or {})))
        self.ar_wrapped_decoder = AutoregressiveWrapper(self.decoder, ignore_index=pad_id)
        self.pad_id = pad_id
        self.vae_kl_div_floor, self.vae_kl_loss_weight = vae_kl_div_floor, vae_kl_loss_weight
        self.latents_dropout = nn.Dropout(latents_dropout_prob)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _posterior(self, seq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""A sample $z = \mu + \sigma\epsilon$ `(b, z)`, $\mu$ and $\log\sigma^2$ for token ids `seq` `(b, n)`."""
        if not torch.is_tensor(seq) or seq.dim() != 2 or seq.is_floating_point():
            raise ValueError("seq: expected token ids of shape (batch, seq_len)")
        mask = seq != self.pad_id
        pooled = self.encoder(seq.masked_fill(~mask, 0), mask=mask)  # (b, D)
        mean, log_var = self.to_latent_mean_log_variance(pooled).chunk(2, dim=-1)  # (b, z) each
        return mean + (0.5 * log_var).exp() * torch.randn_like(mean), mean, log_var

    def encode_to_latents(self, seq: Tensor, return_mean_log_var: bool = False):
        r"""A sample $z = \mu + \sigma\epsilon$ `(b, z)` for token ids `seq` `(b, n)` (and `(mean, log_var)`)."""
        latents, mean, log_var = self._posterior(seq)
        return (latents, (mean, log_var)) if return_mean_log_var else latents

    @torch.no_grad()
    def generate(self, prompts: Tensor, seq_len: int, latents: Union[Tensor, Sequence[float], None] = None,
                 seq_for_latents: Optional[Tensor] = None, **generate_kwargs) -> Tensor:
        """`seq_len` tokens after `prompts` `(b, t)` or `(t,)`, given `latents` `(b, z)` / `(z,)`, or
        those of `seq_for_latents`, or none (the unconditioned model)."""
        if not torch.is_tensor(prompts) or prompts.dim() not in (1, 2):
            raise ValueError("prompts: expected token ids of shape (batch, t) or (t,)")
        if seq_for_latents is not None:
            if latents is not None:
                raise ValueError("latents and seq_for_latents: give one, the latents or the sequence to encode")
            latents = self._posterior(seq_for_latents)[0]
        prepend = None
        if latents is not None:
            z = torch.as_tensor(latents, device=self.device, dtype=torch.float)
            batch = prompts.shape[0] if prompts.dim() == 2 else 1
            if z.shape[-1] != self.dim_latent or z.dim() not in (1, 2):
                raise ValueError(f"latents: expected shape (batch, {self.dim_latent}) or ({self.dim_latent},)")
            z = z.expand(batch, -1) if z.dim() == 1 else z
            prepend = self.from_latent_to_prepend_token(z)[:, None]  # (b, 1, D)
        if prepend is not None:
            # This library's cached decoding does not carry prepended embeddings: decode without the cache.
            if generate_kwargs.get("cache_kv", False) is not False:
                raise ValueError("cache_kv: not supported with a latent; generation runs uncached")
            generate_kwargs["cache_kv"] = False
        out = self.ar_wrapped_decoder.generate(prompts[None] if prompts.dim() == 1 else prompts, seq_len,
                                               prepend_embeds=prepend, **generate_kwargs)
        assert torch.is_tensor(out)
        return out[0] if prompts.dim() == 1 else out

    def forward(self, seq: Tensor, seq_for_latents: Optional[Tensor] = None, return_all_losses: bool = False):
        """The negative ELBO of token ids `seq` `(b, n)`: the token loss plus the weighted, floored KL."""
        seq_for_latents = seq if seq_for_latents is None else seq_for_latents
        latents, mean, log_var = self._posterior(seq_for_latents)
        # the sequences that see their latent this step
        keep = self.latents_dropout(torch.ones(seq.shape[0], device=seq.device)).bool()
        prepend = self.from_latent_to_prepend_token(latents)[:, None]  # (b, 1, D)
        ar_loss = self.ar_wrapped_decoder(seq, prepend_embeds=prepend, prepend_mask=keep[:, None])
        # $\sum_k \max(0, \mathrm{KL}_k - \lambda)$, averaged over the batch
        kl = gaussian_kl(mean, log_var, self.vae_kl_div_floor).sum(dim=-1).mean()
        total = ar_loss + kl * self.vae_kl_loss_weight
        return (total, (ar_loss, kl)) if return_all_losses else total
