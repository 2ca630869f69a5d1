r"""
# Explorative modeling: a decoder with latent candidates

*Paper:* [Explorative Modeling: Unlocking a Third Pretraining Axis and End-to-End Generation](https://arxiv.org/abs/2607.27372)
(Gladstone, Ji & Du, 2026), after [Discrete Distribution Networks](https://arxiv.org/abs/2401.00036)
(Yang, 2024)

A language model trained on the average of its data hedges: where the data branches, it spreads
probability over the branches.  Explorative modeling gives the decoder noise to be decisive with.
$L$ latent vectors $z_1 \dots z_L \sim \mathcal{N}(0, I)$ are prepended to the sequence as
embeddings.  For each training sequence $K$ candidates are drawn for one latent slot $a$ (the
others held fixed), the decoder runs once per candidate, and only the *winner*, the candidate whose
continuation explains the sequence best, is trained (winner takes all, as in DDN's
split-and-prune):

$$k^\star = \arg\min_k \mathcal{L}_{\text{CE}}\big(x \mid z^{(k)}\big), \qquad
\mathcal{L} = \mathcal{L}_{\text{CE}}\big(x \mid z^{(k^\star)}\big) - \beta\, \frac{1}{K}\sum_k D_{KL}\Big(p_k \,\Big\|\, \frac{1}{K}\sum_{k'} p_{k'}\Big)$$

Each region of latent space thus specialises on part of the data.  The optional second term
($\beta$ = `repulsive_loss_weight`) pushes the candidates' next-token distributions $p_k$ apart,
through their Jensen–Shannon-style divergence from the mixture.  At generation the latents are
drawn (or chosen: `generate_with_candidate_latents` scores $K$ candidates with a *winner function*
of their logits first) and the decoder samples as usual.

```python
model = TransformerWrapper(num_tokens=256, max_seq_len=1024, attn_layers=Decoder(dim=512, depth=6, heads=8))
xm = XMLatentDecoder(model, num_latents=4, candidates=8)
loss = xm(seq)                                    # seq (b, n)
out = xm.generate(seq[:, :1], 64)                 # (b, 64), fresh latents
```

**Differences from x-transformers.**  With `latent_drop_prob`, the dropped path passes the
shortened sequence's mask (x-transformers passes the full-length `mask` and fails on its shape).
A winner function receives the intermediates when its signature takes two arguments (x-transformers
tries and catches `TypeError`).  `generate_with_candidate_latents` refuses the default winner
function, which ranks losses (x-transformers applies it to the logits and fails).  Generation is this library's `AutoregressiveWrapper.generate`,
which samples differently from x-transformers' (so seeded generations differ between the two).

Shapes: `b` batch, `k` candidates, `L` latents, `d` latent width, `n` tokens, `V` vocabulary.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation.autoregressive import AutoregressiveWrapper

Latents = Union[Tensor, Sequence[Optional[Tensor]], None]


def lowest_loss_winner_fn(losses: Tensor, intermediates=None) -> Tensor:
    """The candidate with the lowest loss, `(b, k) -> (b,)`."""
    return losses.argmin(dim=-1)


def masked_mean(t: Tensor, mask: Optional[Tensor], dim=None) -> Tensor:
    """The mean of `t` where `mask` is true (over `dim`, or over everything)."""
    if mask is None:
        return t.mean() if dim is None else t.mean(dim=dim)
    m = mask.to(t.dtype)
    if dim is None:
        return (t * m).sum() / m.sum().clamp(min=1e-5)
    return (t * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1e-5)


def _as_tuple(fns, length: int) -> tuple:
    return tuple(fns) if isinstance(fns, (tuple, list)) else (fns,) * length


def _pick(t: Tensor, index: Tensor) -> Tensor:
    """`t[b, index[b]]` for `t` `(b, k, ...)`."""
    return t[torch.arange(t.shape[0], device=t.device), index]


def _call_winner(fn: Callable, losses: Tensor, intermediates) -> Tensor:
    """A winner function's choice `(b,)`; one that returns scores `(b, k)` picks the highest."""
    try:
        takes_two = len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        takes_two = False
    winner = fn(losses, intermediates) if takes_two else fn(losses)
    return winner.argmax(dim=-1) if winner.dim() > 1 else winner


class XMLatentDecoder(nn.Module):
    """A `TransformerWrapper` decoder conditioned on prepended Gaussian latents, trained winner-takes-all."""

    def __init__(self, net: nn.Module, num_latents: int = 4, dim: Optional[int] = None,
                 latent_dim: Optional[int] = None, candidates: int = 2, max_batch_size: Optional[int] = None,
                 ignore_index: int = -100, latent_drop_prob: float = 0.0, always_latent_proj: bool = False,
                 repulsive_loss_weight: float = 0.0,
                 winner_fn: Union[Callable, Sequence[Callable]] = lowest_loss_winner_fn,
                 winner_fns: Optional[Sequence[Callable]] = None):
        super().__init__()
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates: expected an integer >= 1, got {candidates!r}")
        if isinstance(num_latents, bool) or not isinstance(num_latents, int) or num_latents < 1:
            raise ValueError(f"num_latents: expected an integer >= 1, got {num_latents!r}")
        self.net: Any = net
        self.candidates, self.max_batch_size, self.ignore_index = candidates, max_batch_size, ignore_index
        # As in x-transformers, `dim` defaults to `latent_dim`, then to the stack's width.
        self.dim = dim if dim is not None else (latent_dim if latent_dim is not None else self.net.attn_layers.dim)
        self.latent_dim = latent_dim if latent_dim is not None else self.dim
        self.num_latents, self.latent_drop_prob = num_latents, latent_drop_prob
        self.repulsive_loss_weight = repulsive_loss_weight
        self.latent_proj = nn.Linear(self.latent_dim, self.dim) \
            if self.latent_dim != self.dim or always_latent_proj else nn.Identity()
        fns = _as_tuple(winner_fns if winner_fns is not None else winner_fn, num_latents)
        if len(fns) != num_latents:
            raise ValueError(f"winner_fns: expected {num_latents} functions, one per latent, got {len(fns)}")
        self.winner_fns = fns

    @property
    def max_seq_len(self) -> int:
        return self.net.max_seq_len

    def init_latents(self, latents: Latents, batch: int, device=None) -> Tensor:
        r"""Latents `(b, L, d)`: drawn from $\mathcal{N}(0, I)$, given, or given per slot (`None` slots drawn)."""
        if latents is None:
            return torch.randn(batch, self.num_latents, self.latent_dim, device=device)
        if torch.is_tensor(latents):
            if latents.dim() not in (3, 4) or latents.shape[-1] != self.latent_dim or latents.shape[-2] != self.num_latents:
                raise ValueError(f"latents: expected ({batch}, {self.num_latents}, {self.latent_dim}) or "
                                 f"({batch}, k, {self.num_latents}, {self.latent_dim}), got {tuple(latents.shape)}")
            return latents
        if len(latents) != self.num_latents:
            raise ValueError(f"latents: expected {self.num_latents} slots, got {len(latents)}")
        ref = next((t for t in latents if t is not None), None)
        device, dtype = (ref.device, ref.dtype) if ref is not None else (device, None)
        return torch.stack([t if t is not None else torch.randn(batch, self.latent_dim, device=device, dtype=dtype)
                            for t in latents], dim=1)

    @torch.no_grad()
    def generate(self, start_tokens: Tensor, seq_len: int, latents: Latents = None, **kwargs) -> Any:
        """`seq_len` tokens after `start_tokens` `(b, t)`, the latents prepended (drawn when not given)."""
        latents = self.init_latents(latents, start_tokens.shape[0], device=start_tokens.device)
        was_training = self.training
        self.eval()
        try:
            cond = self.latent_proj(latents)  # (b, L, D)
            return AutoregressiveWrapper(self.net).generate(start_tokens, seq_len, prepend_embeds=cond,
                                                            excise_prepend_embeds=True, **kwargs)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate_with_candidate_latents(self, start_tokens: Tensor, seq_len: int,
                                        winner_fn: Union[Callable, Sequence[Callable], None] = None,
                                        winner_fns: Optional[Sequence[Callable]] = None,
                                        candidates: Optional[int] = None, latents: Latents = None,
                                        active_latent_index: Optional[int] = None,
                                        return_best_latents: bool = False, **kwargs):
        """Score `candidates` latents on the prompt with the winner function(s) of their logits, then generate.

        One winner function chooses the first latent; a sequence of them chooses every latent in turn."""
        given = winner_fns if winner_fns is not None else winner_fn
        sweep = isinstance(given, (tuple, list))
        fns = _as_tuple(given if given is not None else self.winner_fns, self.num_latents)
        latents = self.init_latents(latents, start_tokens.shape[0], device=start_tokens.device)
        if lowest_loss_winner_fn in fns:
            raise ValueError("winner_fn: before generating there are no losses; give a function of the candidates' "
                             "logits (b, k, n, V) that returns indices (b,) or scores (b, k)")
        indices = [active_latent_index] if active_latent_index is not None else \
            (range(self.num_latents) if sweep else [0])
        was_training = self.training
        self.eval()
        try:
            winners, candidate_latents = [], latents
            for index in indices:
                candidate_logits, candidate_latents = self(start_tokens, latents=latents, candidates=candidates,
                                                           active_latent_index=index, return_loss=False, **kwargs)
                winner = fns[index](candidate_logits)
                winner = winner.argmax(dim=-1) if winner.dim() > 1 else winner
                winners.append(winner)
                latents = _pick(candidate_latents, winner)  # (b, L, d)
        finally:
            self.train(was_training)
        out = self.generate(start_tokens, seq_len, latents=latents, **kwargs)
        if not return_best_latents:
            return out
        return out, (candidate_latents, winners[0] if len(winners) == 1 else torch.stack(winners, dim=-1))

    def forward(self, seq: Tensor, latents: Latents = None, candidates: Optional[int] = None,
                max_batch_size: Optional[int] = None, latent_drop_prob: Optional[float] = None,
                return_loss: bool = True, repulsive_loss_weight: Optional[float] = None, mask: Optional[Tensor] = None,
                winner_fn: Union[Callable, Sequence[Callable], None] = None,
                winner_fns: Optional[Sequence[Callable]] = None, active_latent_index: Optional[int] = None, **kwargs):
        """The winner's loss on `seq` `(b, n)`; with `return_loss=False`, `(logits (b, k, n, V), latents (b, k, L, d))`."""
        if not torch.is_tensor(seq) or seq.dim() != 2 or seq.is_floating_point():
            raise ValueError("seq: expected token ids of shape (batch, n)")
        k = self.candidates if candidates is None else candidates
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"candidates: expected an integer >= 1, got {k!r}")
        chunk = max_batch_size if max_batch_size is not None else self.max_batch_size
        drop_prob = self.latent_drop_prob if latent_drop_prob is None else latent_drop_prob
        beta = self.repulsive_loss_weight if repulsive_loss_weight is None else repulsive_loss_weight
        fns = _as_tuple(winner_fns if winner_fns is not None else
                        (winner_fn if winner_fn is not None else self.winner_fns), self.num_latents)
        a = random.randrange(self.num_latents) if active_latent_index is None else active_latent_index
        if not 0 <= a < self.num_latents:
            raise ValueError(f"active_latent_index: expected 0..{self.num_latents - 1}, got {a}")
        fn = fns[a]
        b, device = seq.shape[0], seq.device
        labels = None
        if return_loss:
            seq, labels = seq[:, :-1], seq[:, 1:]
        seq_mask = mask[:, 1:] if mask is not None and return_loss else mask
        # A position counts when its target is real (not padding, not `ignore_index`).
        loss_mask = (labels if labels is not None else seq) != self.ignore_index
        if seq_mask is not None:
            loss_mask = loss_mask & seq_mask

        def token_losses(logits: Tensor, targets: Tensor) -> Tensor:  # (B, n)
            return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=self.ignore_index)

        if self.training and drop_prob > 0 and random.random() < drop_prob:
            # No latents this step: the plain next-token loss.
            logits = self.net(seq, mask=loss_mask if mask is not None else None, **kwargs)
            if labels is None:
                return logits
            return masked_mean(token_losses(logits, labels), loss_mask)
        latents = self.init_latents(latents, b, device=device)
        if latents.dim() == 3:
            # Only the active slot explores: $K$ fresh draws for slot $a$, the others shared.
            latents = latents[:, None].repeat(1, k, 1, 1)
            latents[:, :, a] = torch.randn(b, k, self.latent_dim, device=device, dtype=latents.dtype)
        cond = self.latent_proj(latents.flatten(0, 1))  # (b k, L, D)
        seq_k = seq.repeat_interleave(k, dim=0)  # (b k, n)
        labels_k = labels.repeat_interleave(k, dim=0) if labels is not None else None
        mask_k = loss_mask.repeat_interleave(k, dim=0)
        repel = beta > 0 and k > 1
        needs_intermediates = fn is not lowest_loss_winner_fn
        total = b * k
        step = chunk if chunk is not None else total
        losses, all_logits, all_intermediates = [], [], []
        for start in range(0, total, step):
            part = slice(start, min(start + step, total))
            call = dict(kwargs)
            if mask is not None:
                call["mask"] = mask_k[part]
            out = self.net(seq_k[part], prepend_embeds=cond[part], excise_prepend_embeds=True,
                           return_intermediates=needs_intermediates, **call)
            logits, intermediates = out if needs_intermediates else (out, None)
            if needs_intermediates:
                all_intermediates.append(intermediates)
            if labels_k is None or repel or needs_intermediates:
                all_logits.append(logits)
            if labels_k is not None:
                losses.append(masked_mean(token_losses(logits, labels_k[part]), mask_k[part], dim=-1))
        if labels_k is None:
            return torch.cat(all_logits).unflatten(0, (b, k)), latents
        # $\mathcal{L}_{\text{CE}}(x \mid z^{(k)})$ per candidate, `(b, k)`
        candidate_losses = torch.cat(losses).unflatten(0, (b, k))
        candidate_logits = torch.cat(all_logits).unflatten(0, (b, k)) if all_logits else None
        intermediates = None
        if needs_intermediates:
            intermediates = all_intermediates[0] if len(all_intermediates) == 1 else all_intermediates
            if not isinstance(intermediates, list):
                intermediates.logits = candidate_logits
        # $k^\star$: winner takes all
        winner = _call_winner(fn, candidate_losses, intermediates)
        winner_loss = _pick(candidate_losses, winner).mean()
        if not repel:
            return winner_loss
        assert candidate_logits is not None
        log_p = candidate_logits.log_softmax(dim=-1)  # (b, k, n, V)
        # $\log \frac{1}{K}\sum_{k'} p_{k'}$, the mixture
        log_mix = log_p.logsumexp(dim=1, keepdim=True) - math.log(k)
        # $\frac{1}{K}\sum_k D_{KL}(p_k \| \bar p)$ per position, averaged over the real ones
        kl = (log_p.exp() * (log_p - log_mix)).sum(dim=-1).mean(dim=1)  # (b, n)
        return winner_loss - beta * masked_mean(kl, loss_mask)
