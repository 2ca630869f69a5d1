r"""
# A continuous transformer autoencoder: a sequence into one latent token

*Papers:* [Auto-Encoding Variational Bayes](https://arxiv.org/abs/1312.6114) (Kingma and Welling, 2013) for the
variational bottleneck, with the free-bits floor of [Improved Variational Inference with Inverse Autoregressive
Flow](https://arxiv.org/abs/1606.04934) (Kingma et al., 2016); the use follows Physical Intelligence's
[RL token](https://www.pi.website/research/rlt) (2025).

An encoder reads a sequence of real-valued vectors $x_{1..n}$ (robot states, frames, another model's
embeddings), averages its outputs over the real positions and squeezes the mean through a
bottleneck into one latent $z$.  A causal decoder gets $z$ as a token in front of the sequence and
reconstructs the sequence from it by teacher forcing, $\hat x_t = g(z, x_{<t})$.  The latent must
carry what the decoder cannot guess from the past, so it becomes a compact summary of the whole
sequence (the "RL token" a small policy can then read).

The *deterministic* bottleneck is a linear map $z = W h + c$; the *variational* one predicts a
Gaussian $q(z \mid x) = \mathcal{N}(\mu, \sigma^2)$, samples $z = \mu + \sigma \epsilon$ and adds its
KL divergence from $\mathcal{N}(0, I)$, each dimension's term floored at $\lambda$ ("free bits"):

$$\mathcal{L} = \frac{1}{|T|\,d}\sum_{t \in T} \lVert \hat x_t - x_t \rVert^2
+ \sum_k \max\Big(0,\ \tfrac{1}{2}\big(\sigma_k^2 + \mu_k^2 - \log \sigma_k^2 - 1\big) - \lambda\Big)$$

($|\hat x_t - x_t|$ with `loss_type='l1'`).  During training the latent is replaced by a null token
for a random `latents_dropout_prob` of the sequences, so the decoder also models sequences alone.

```python
model = ContinuousTransformerAutoencoder(dim=256, enc_depth=2, dec_depth=2, max_seq_len=64, dim_input=7,
                                         dim_latent=32, bottleneck_type="variational")
loss = model(seq, lens=lens)          # seq (b, n, 7), lens (b,)
z = model.encode(seq, lens=lens)      # (b, 32)
recon = model.decode(z, seq)          # (b, n, 7), teacher-forced
```

**Differences from x-transformers.**  x-transformers 2.31.10 feeds the decoder the sequence itself and
reads the reconstruction of $x_t$ at the position of $x_t$, so a causal decoder sees the value it
reconstructs and can copy it without using the latent; here the decoder reads a zero frame and then
$x_{<t}$ (a test shows the leak in x-transformers).  A dropped latent becomes a zero token here
(x-transformers masks it as a key through `seq_start_pos`, which also shifts the tokens'
positions).  x-transformers' variational bottleneck accepts `kl_div_floor` and ignores it; here the
floor acts.  The encoder, the bottlenecks and `encode` equal x-transformers' with copied weights
(a test checks it).

Shapes: `b` batch, `n` steps, `d` input features, `D` width, `z` latent width.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import ContinuousTransformerWrapper, Decoder, Encoder


def lens_to_mask(lens: Tensor, n: int) -> Tensor:
    """`(b, n)`: `True` at the first `lens[i]` positions of row `i`."""
    return torch.arange(n, device=lens.device) < lens[:, None]


def gaussian_kl(mean: Tensor, log_var: Tensor, floor: float = 0.0) -> Tensor:
    r"""$\max(0, \mathrm{KL}(\mathcal{N}(\mu, \sigma^2) \,\|\, \mathcal{N}(0, 1)) - \lambda)$ per dimension.

    `gaussian_kl(torch.zeros(1), torch.zeros(1))` is `0`: the prior itself costs nothing."""
    # $\frac{1}{2}(\sigma^2 + \mu^2 - \log\sigma^2 - 1)$
    kl = 0.5 * (log_var.exp() + mean.square() - log_var - 1.0)
    return F.relu(kl - floor)


class DeterministicLatentBottleneck(nn.Module):
    r"""$z = \phi(W h + c)$; no auxiliary loss."""

    def __init__(self, dim: int, dim_latent: int, activation: Optional[nn.Module] = None):
        super().__init__()
        self.proj = nn.Linear(dim, dim_latent)
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor, return_unreduced_loss: bool = False) -> tuple[Tensor, None]:
        """`(latents (b, z), None)` from pooled features `(b, D)`."""
        return self.activation(self.proj(x)), None


class VariationalLatentBottleneck(nn.Module):
    r"""$z = \mu + \sigma \epsilon$ with its (floored) KL divergence from $\mathcal{N}(0, I)$."""

    def __init__(self, dim: int, dim_latent: int, kl_div_floor: float = 0.0):
        super().__init__()
        self.kl_div_floor = kl_div_floor
        self.to_mean_log_var = nn.Linear(dim, dim_latent * 2)

    def forward(self, x: Tensor, return_unreduced_loss: bool = False) -> tuple[Tensor, Tensor]:
        """`(latents (b, z), kl)`: the KL summed over the latent, averaged over the batch (or `(b,)`)."""
        mean, log_var = self.to_mean_log_var(x).chunk(2, dim=-1)  # (b, z) each
        # $z = \mu + \sigma \epsilon$, $\epsilon \sim \mathcal{N}(0, I)$
        latents = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        kl = gaussian_kl(mean, log_var, self.kl_div_floor).sum(dim=-1)  # (b,)
        return latents, kl if return_unreduced_loss else kl.mean()


class ContinuousTransformerAutoencoder(nn.Module):
    """An encoder that pools a vector sequence into one latent, and a causal decoder that rebuilds it."""

    def __init__(self, *, dim: int, enc_depth: int, dec_depth: int, max_seq_len: int,
                 dim_input: Optional[int] = None, dim_latent: Optional[int] = None,
                 bottleneck: Optional[nn.Module] = None,
                 bottleneck_type: Literal["deterministic", "variational"] = "deterministic",
                 deterministic_bottleneck_kwargs: Optional[dict] = None,
                 variational_bottleneck_kwargs: Optional[dict] = None, loss_type: Literal["l1", "l2"] = "l2",
                 attn_dim_head: int = 64, heads: int = 8, enc_kwargs: Optional[dict] = None,
                 dec_kwargs: Optional[dict] = None, latents_dropout_prob: float = 0.5, **kwargs):
        super().__init__()
        if loss_type not in ("l1", "l2"):
            raise ValueError(f"loss_type: expected 'l1' or 'l2', got {loss_type!r}")
        if bottleneck is None and bottleneck_type not in ("deterministic", "variational"):
            raise ValueError(f"bottleneck_type: expected 'deterministic' or 'variational', got {bottleneck_type!r}")
        if not 0 <= latents_dropout_prob <= 1:
            raise ValueError(f"latents_dropout_prob: expected a probability in [0, 1], got {latents_dropout_prob!r}")
        dim_input, dim_latent = dim_input or dim, dim_latent or dim
        self.dim_input = dim_input
        self.encoder = ContinuousTransformerWrapper(
            dim_in=dim_input, max_seq_len=max_seq_len, use_identity_if_same_dim=True,
            attn_layers=Encoder(dim=dim, depth=enc_depth, attn_dim_head=attn_dim_head, heads=heads,
                                **kwargs, **(enc_kwargs or {})))
        if bottleneck is not None:
            self.bottleneck = bottleneck
        elif bottleneck_type == "deterministic":
            self.bottleneck = DeterministicLatentBottleneck(dim, dim_latent, **(deterministic_bottleneck_kwargs or {}))
        else:
            self.bottleneck = VariationalLatentBottleneck(dim, dim_latent, **(variational_bottleneck_kwargs or {}))
        # $z \mapsto$ the token in front of the decoder's input
        self.from_latent_to_prepend_token = nn.Linear(dim_latent, dim)
        self.decoder = ContinuousTransformerWrapper(
            dim_in=dim_input, dim_out=dim_input, max_seq_len=max_seq_len, use_identity_if_same_dim=True,
            attn_layers=Decoder(dim=dim, depth=dec_depth, attn_dim_head=attn_dim_head, heads=heads,
                                **kwargs, **(dec_kwargs or {})))
        self.latents_dropout = nn.Dropout(latents_dropout_prob)
        self.loss_type = loss_type

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, seq: Tensor, lens: Optional[Tensor]) -> Optional[Tensor]:
        if not torch.is_tensor(seq) or seq.dim() != 3 or seq.shape[-1] != self.dim_input:
            got = tuple(seq.shape) if torch.is_tensor(seq) else type(seq).__name__
            raise ValueError(f"seq: expected shape (batch, seq_len, {self.dim_input}), got {got}")
        if lens is None:
            return None
        if lens.shape != seq.shape[:1] or lens.min() < 1 or lens.max() > seq.shape[1]:
            raise ValueError(f"lens: expected one length in [1, {seq.shape[1]}] per row, shape ({seq.shape[0]},)")
        return lens_to_mask(lens, seq.shape[1])

    def encode(self, seq: Tensor, lens: Optional[Tensor] = None, return_aux_loss: bool = False,
               return_unreduced_loss: bool = False):
        """Latents `(b, z)` of `seq` `(b, n, d)` (and the bottleneck's loss with `return_aux_loss`)."""
        mask = self._check(seq, lens)
        h = self.encoder(seq, mask=mask, return_embeddings=True)  # (b, n, D)
        # the mean over the real positions
        pooled = h.mean(dim=1) if mask is None else \
            (h * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1e-5)
        latents, aux_loss = self.bottleneck(pooled, return_unreduced_loss=return_unreduced_loss)
        return (latents, aux_loss) if return_aux_loss else latents

    def decode(self, latents: Optional[Tensor], seq: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        r"""$\hat x_t = g(z, x_{<t})$ `(b, n, d)`: the teacher-forced reconstruction of `seq` from `latents`.

        `keep` `(b,)` is `False` where the latent is dropped (a zero token instead); `latents=None` drops all."""
        b, n, _ = seq.shape
        token = torch.zeros(b, 1, self.decoder.dim, device=seq.device, dtype=seq.dtype) if latents is None \
            else self.from_latent_to_prepend_token(latents)[:, None]  # (b, 1, D)
        if keep is not None:
            token = token * keep[:, None, None]
        # a zero frame, then $x_1 \dots x_{n-1}$: the output at $t$ has read $z, x_{<t}$
        shifted = torch.cat((seq.new_zeros(b, 1, seq.shape[-1]), seq[:, :-1]), dim=1)
        return self.decoder(shifted, prepend_embeds=token)[:, 1:]  # the latent token's output is left out

    def forward(self, seq: Tensor, lens: Optional[Tensor] = None, return_all_losses: bool = False,
                return_unreduced_loss: bool = False):
        """The reconstruction loss plus the bottleneck's (`(b,)` per sequence with `return_unreduced_loss`)."""
        mask = self._check(seq, lens)
        latents, aux_loss = self.encode(seq, lens=lens, return_aux_loss=True,
                                        return_unreduced_loss=return_unreduced_loss)
        # the sequences that keep their latent this step
        keep = self.latents_dropout(torch.ones(seq.shape[0], device=seq.device)).bool()
        recon = self.decode(latents, seq, keep)
        err = F.l1_loss(recon, seq, reduction="none") if self.loss_type == "l1" else \
            F.mse_loss(recon, seq, reduction="none")  # (b, n, d)
        weight = torch.ones_like(err) if mask is None else mask[..., None].expand_as(err).to(err.dtype)
        dims = (1, 2) if return_unreduced_loss else (0, 1, 2)
        recon_loss = (err * weight).sum(dim=dims) / weight.sum(dim=dims).clamp(min=1e-5)
        total = recon_loss if aux_loss is None else recon_loss + aux_loss
        return (total, (recon_loss, aux_loss)) if return_all_losses else total
