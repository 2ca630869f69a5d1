r"""
# Non-autoregressive generation by iterative demasking (MaskGIT, masked diffusion)

*Papers:* [Mask-Predict: Parallel Decoding of Conditional Masked Language Models](https://arxiv.org/abs/1904.09324)
(Ghazvininejad et al., 2019); [MaskGIT: Masked Generative Image Transformer](https://arxiv.org/abs/2202.04200)
(Chang et al., 2022); the loss weight of [Simple and Effective Masked Diffusion Language Models](https://arxiv.org/abs/2406.07524)
(Sahoo et al., 2024); the token critic of [Don't Take It Literally: An Edit-Invariant Sequence Loss](https://aclanthology.org/2021.naacl-main.409/)
(Nijkamp et al., 2021) and [Improved Masked Image Generation with Token-Critic](https://arxiv.org/abs/2209.04439)
(Lezama et al., 2022).

A bidirectional encoder learns to fill in masked tokens; generation starts from a sequence that is
all `[MASK]` and, in a fixed number of steps, predicts every masked token at once, keeps the ones it
is most sure of and masks the rest again.  A *schedule* $\gamma(t)$ says which fraction of the
tokens is still masked at time $t \in [0, 1]$ ($\gamma(0) = 1$, $\gamma(1) = 0$): linear
$\gamma(t) = 1 - t$ or MaskGIT's cosine $\gamma(t) = \cos(\pi t / 2)$.

Training draws $t \sim U(0, 1)$, masks $\lceil \gamma(t)\, n \rceil$ random tokens (at least one)
and scores the prediction of the masked ones $M$:

$$\mathcal{L} = \mathbb{E}_t\Big[\,w(t)\,\frac{1}{|M|}\sum_{i \in M} -\log p_\theta(x_i \mid x_{\setminus M})\Big],
\qquad w(t) = -\frac{\gamma'(t)}{\gamma(t)}$$

With `use_simple_mdlm_loss_weight=True` (the default) $w(t)$ is the masked diffusion ELBO's weight
(MDLM's eq. 10: the rate at which tokens are unmasked over the fraction still masked, $1/\gamma$ for
the linear schedule); otherwise $w = 1$ (MaskGIT).  As in BERT, some masked positions keep their
token (`no_replace_prob`) or get a random one (`random_token_prob`), each on half the batches.

Generation runs `steps` rounds; after round $s$ the $\lfloor \gamma(s / S)\, n \rfloor$ least
confident tokens are masked again.  Confidence is $1 - p_\theta(\hat x_i)$ of the sampled token,
or, with a *token critic*, a second network's logit that a token was wrong: the critic is trained
with a binary cross-entropy to tell the generator's samples from the real tokens,

$$\mathcal{L}_{\text{critic}} = \operatorname{BCE}\big(c_\phi(\tilde x)_i,\ [\tilde x_i \ne x_i]\big).$$

`self_token_critic=True` puts the critic's head on the generator's own network.  *Self-conditioning*
(`self_cond=True`) adds a projection of the previous round's embeddings to the input.

```python
net = TransformerWrapper(num_tokens=257, max_seq_len=256, attn_layers=Encoder(dim=512, depth=6, heads=8))
model = NonAutoregressiveWrapper(net, mask_id=256, steps=18, self_token_critic=True)
losses = model(seq)            # seq (b, 256): Losses(loss, generator_loss, critic_loss)
losses.loss.backward()
samples = model.generate(batch_size=4)   # (4, 256); generate() alone gives (256,)
```

**Differences from x-transformers.**  x-transformers 2.31.10 multiplies the cross-entropy by
$\gamma'(t) / (1 - \gamma(t))$: it reads the schedule as the fraction *kept* and misses a sign, so
its default loss is negative and minimising it raises the cross-entropy.  Here the weight is
$-\gamma'(t)/\gamma(t)$ as in MDLM, with $\gamma$ clamped at $1/n$ (the one token always masked);
a test shows x-transformers' default loss is below zero.  x-transformers labels the critic's
targets $[\hat x_i \ne x_i]$ at every position, also where the token was never masked (and so is
right); here the label is whether the token the critic sees is wrong.  With
`use_simple_mdlm_loss_weight=False` the generator's loss, the critic's logits and generation equal
x-transformers' under the same seeds (the random draws are made in the same order).
`only_train_critic=True` without a critic is refused.

Shapes: `b` batch, `n` tokens (always `max_seq_len`), `V` vocabulary, `D` width.
"""

from __future__ import annotations

import math
import random
from collections import namedtuple
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Losses = namedtuple("Losses", ["loss", "generator_loss", "critic_loss"])


def linear_schedule(t: Tensor) -> Tensor:
    r"""$\gamma(t) = 1 - t$, the fraction still masked: `linear_schedule(torch.tensor(0.25))` is `0.75`."""
    return 1 - t


def cosine_schedule(t: Tensor) -> Tensor:
    r"""$\gamma(t) = \cos(\pi t / 2)$ (MaskGIT): `cosine_schedule(torch.tensor(1.0))` is `~0`."""
    return torch.cos(t * math.pi / 2)


def schedule_and_slope(schedule: Callable[[Tensor], Tensor], t: Tensor) -> tuple[Tensor, Tensor]:
    r"""$\gamma(t)$ and $\gamma'(t)$ of an elementwise schedule, by autograd."""
    with torch.enable_grad():
        t = t.detach().requires_grad_()
        gamma = schedule(t)
        (slope,) = torch.autograd.grad(gamma.sum(), t)
    return gamma.detach(), slope


def gumbel_noise(t: Tensor) -> Tensor:
    r"""$-\log(-\log u)$, $u \sim U(0, 1)$: argmax of logits plus this noise samples the softmax."""
    u = torch.zeros_like(t).uniform_(0, 1)
    return -torch.log(-torch.log(u + 1e-10) + 1e-10)


def gumbel_sample(logits: Tensor, temperature: float) -> Tensor:
    r"""$\arg\max_v (z_v / T + g_v)$: a sample of $\operatorname{softmax}(z / T)$."""
    return (logits / max(temperature, 1e-10) + gumbel_noise(logits)).argmax(dim=-1)


def keep_top_fraction(logits: Tensor, thres: float) -> Tensor:
    r"""Keep the $\lceil (1 - \text{thres}) V \rceil$ largest logits, $-\infty$ elsewhere."""
    k = math.ceil((1 - thres) * logits.shape[-1])
    values, index = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, index, values)


def random_subset(mask: Tensor, prob: float) -> Tensor:
    r"""A random $\lfloor p\,|mask| \rfloor$-ish subset of the `True` positions of each row `(b, n)`."""
    count = mask.sum(dim=-1, keepdim=True) * prob  # (b, 1)
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1)
    # rank among the row's true positions: padding sorts first, so subtract its count
    rank = scores.argsort(dim=-1).argsort(dim=-1).float() - (~mask).sum(dim=-1, keepdim=True)
    return (rank < count) & mask


def int_attr(module: nn.Module, *path: str) -> int:
    """An integer attribute of a wrapper (`num_tokens`, `attn_layers.dim`, ...), read through `getattr`."""
    value: Any = module
    for name in path:
        value = getattr(value, name)
    return int(value)


class SelfCritic(nn.Module):
    """A token critic that shares the generator's network: one logit per token from its embeddings."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.to_logits = nn.Linear(int_attr(net, "attn_layers", "dim"), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits `(b, n, 1)` that each token of `x` `(b, n)` is wrong."""
        return self.to_logits(self.net(x, return_embeddings=True))


class NonAutoregressiveWrapper(nn.Module):
    """Masked-token training and iterative demasking generation for a bidirectional `TransformerWrapper`."""

    def __init__(self, net: nn.Module, *, mask_id: int, steps: int = 18, self_cond: bool = False,
                 self_cond_train_prob: float = 0.75, no_replace_prob: float = 0.15, random_token_prob: float = 0.1,
                 schedule: Union[str, Callable[[Tensor], Tensor]] = "linear", can_mask_prev_unmasked: bool = False,
                 token_critic: Optional[nn.Module] = None, self_token_critic: bool = False,
                 critic_loss_weight: float = 1.0, use_simple_mdlm_loss_weight: bool = True):
        super().__init__()
        num_tokens = int_attr(net, "num_tokens")
        if isinstance(mask_id, bool) or not isinstance(mask_id, int) or not 0 <= mask_id < num_tokens:
            raise ValueError(f"mask_id: expected a token id in [0, {num_tokens}), got {mask_id!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        for name, p in (("self_cond_train_prob", self_cond_train_prob), ("no_replace_prob", no_replace_prob),
                        ("random_token_prob", random_token_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {p!r}")
        if callable(schedule):
            self.schedule_fn = schedule
        elif schedule in ("linear", "cosine"):
            self.schedule_fn = linear_schedule if schedule == "linear" else cosine_schedule
        else:
            raise ValueError(f"schedule: expected 'linear', 'cosine' or a function of t, got {schedule!r}")
        if self_token_critic and token_critic is not None:
            raise ValueError("self_token_critic and token_critic: give one critic, not both")
        self.net, self.mask_id, self.steps = net, mask_id, steps
        self.dim, self.num_tokens = int_attr(net, "emb_dim"), num_tokens
        self.max_seq_len = int_attr(net, "max_seq_len")
        self.no_replace_prob, self.random_token_prob = no_replace_prob, random_token_prob
        self.can_mask_prev_unmasked = can_mask_prev_unmasked
        self.use_simple_mdlm_loss_weight = use_simple_mdlm_loss_weight
        self.self_cond, self.self_cond_train_prob = self_cond, self_cond_train_prob
        if self_cond:
            # the "previous round" of the first round
            self.null_embed = nn.Parameter(torch.randn(self.dim))
            self.to_self_cond = nn.Linear(self.dim, self.dim, bias=False)
        self.token_critic: Optional[nn.Module] = SelfCritic(net) if self_token_critic else token_critic
        self.critic_loss_weight = critic_loss_weight

    def loss_weight(self, times: Tensor, n: int) -> Tensor:
        r"""$w(t) = -\gamma'(t) / \gamma(t)$ per sample `(b,)`, $\gamma$ clamped at $1/n$."""
        gamma, slope = schedule_and_slope(self.schedule_fn, times)
        return -slope / gamma.clamp(min=1 / n)

    @torch.no_grad()
    def generate(self, batch_size: Optional[int] = None, start_temperature: float = 1.0,
                 filter_thres: Optional[float] = 0.7, noise_level_scale: float = 1.0, **kwargs) -> Tensor:
        """`max_seq_len` tokens demasked in `steps` rounds: `(batch_size, n)`, or `(n,)` without a batch size."""
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
        device = next(self.net.parameters()).device
        was_training = self.training
        self.eval()
        shape = (batch_size or 1, self.max_seq_len)
        seq = torch.full(shape, self.mask_id, device=device)
        mask = torch.ones(shape, dtype=torch.bool, device=device)
        # After round $s$, $\lfloor \gamma(s / S)\, n \rfloor$ tokens stay masked.
        times = torch.linspace(0.0, 1.0, self.steps + 1)
        masked_counts = (self.schedule_fn(times[1:]) * self.max_seq_len).long().tolist()
        last_embed = self.null_embed if self.self_cond else None
        critic = self.token_critic
        for masked_count, steps_left in zip(masked_counts, reversed(range(self.steps)), strict=True):
            cond = self.to_self_cond(last_embed) if last_embed is not None else None
            logits, embeds = self.net(seq, sum_embeds=cond, return_logits_and_embeddings=True, **kwargs)
            if self.self_cond:
                last_embed = embeds
            if filter_thres is not None:
                logits = keep_top_fraction(logits, filter_thres)
            # The temperature anneals linearly to zero over the rounds.
            annealing = steps_left / self.steps
            sampled = gumbel_sample(logits, max(start_temperature * annealing, 1e-3))  # (b, n)
            seq = torch.where(mask, sampled, seq)
            if critic is not None:
                # the critic's logit that a token is wrong, with annealed Gumbel noise
                scores = critic(seq).squeeze(-1)
                scores = scores + noise_level_scale * gumbel_noise(scores) * annealing
            else:
                # $1 - p_\theta(\hat x_i)$
                scores = 1 - logits.softmax(dim=-1).gather(-1, sampled[..., None]).squeeze(-1)
            if not self.can_mask_prev_unmasked:
                scores = scores.masked_fill(~mask, -torch.finfo(scores.dtype).max)
            # Mask again the least confident.
            remask = scores.topk(masked_count, dim=-1).indices
            mask = torch.zeros_like(mask).scatter(1, remask, True)
            seq = seq.masked_fill(mask, self.mask_id)
        self.train(was_training)
        return seq[0] if batch_size is None else seq

    def forward(self, x: Tensor, only_train_generator: bool = False, only_train_critic: bool = False,
                generator_sample_temperature: Optional[float] = None, **kwargs) -> Losses:
        """`Losses(loss, generator_loss, critic_loss)` of token ids `x` `(b, max_seq_len)`."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.max_seq_len:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected token ids of shape (batch, {self.max_seq_len}), got {got}")
        if only_train_critic and self.token_critic is None:
            raise ValueError("only_train_critic: the wrapper has no token critic")
        b, n = x.shape
        device = x.device
        target = x
        # $t \sim U(0, 1)$; mask $\lceil \gamma(t) n \rceil$ random tokens, at least one
        times = torch.empty(b, device=device).uniform_(0, 1)
        order = torch.rand((b, n), device=device).argsort(dim=-1).float()
        mask = order < (self.schedule_fn(times) * n).clamp(min=1.0)[:, None]  # (b, n)
        # BERT's trick: some masked positions keep their token, some get a random one.
        to_mask_id = mask.clone()
        left = 1.0
        if self.no_replace_prob > 0 and random.random() < 0.5:
            left -= self.no_replace_prob
            to_mask_id &= ~random_subset(mask, self.no_replace_prob)
        if self.random_token_prob > 0 and random.random() < 0.5:
            to_random = random_subset(to_mask_id, self.random_token_prob * left)
            x = torch.where(to_random, torch.randint(0, self.num_tokens, (b, n), device=device), x)
            to_mask_id &= ~to_random
        masked = torch.where(to_mask_id, self.mask_id, x)
        if self.self_cond:
            cond = self.null_embed
            if random.random() < self.self_cond_train_prob:
                with torch.no_grad():
                    cond = self.net(masked, return_embeddings=True, **kwargs).detach()
            kwargs["sum_embeds"] = self.to_self_cond(cond)
        with torch.no_grad() if only_train_critic else nullcontext():
            logits = self.net(masked, **kwargs)  # (b, n, V)
        # $-\log p_\theta(x_i \mid x_{\setminus M})$ (the network may already give log-probabilities)
        log_probs = logits if self.net.output_is_log_prob else logits.log_softmax(dim=-1)
        nll = -log_probs.gather(-1, target[..., None]).squeeze(-1)  # (b, n)
        if self.use_simple_mdlm_loss_weight:
            nll = nll * self.loss_weight(times, n)[:, None]
        loss = nll[mask].mean()
        if self.token_critic is None or only_train_generator:
            return Losses(loss, loss, None)
        # The critic learns which of the generator's samples differ from the data.
        temperature = random.random() if generator_sample_temperature is None else generator_sample_temperature
        sampled = gumbel_sample(logits.detach(), temperature)
        generated = torch.where(mask, sampled, target)
        critic_logits = self.token_critic(generated).squeeze(-1)  # (b, n)
        # $[\tilde x_i \ne x_i]$: only masked positions can be wrong
        critic_loss = F.binary_cross_entropy_with_logits(critic_logits, (generated != target).float())
        if only_train_critic:
            return Losses(critic_loss, None, critic_loss)
        return Losses(loss + critic_loss * self.critic_loss_weight, loss, critic_loss)
