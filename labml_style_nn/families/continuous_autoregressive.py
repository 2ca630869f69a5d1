r"""
# Continuous autoregressive models

*Background:* next-step prediction of real-valued vectors, as in autoregressive models of audio
frames, trajectories or latent codes; the Gaussian head follows
[DeepAR](https://arxiv.org/abs/1704.04110) (Salinas et al., 2020).

`ContinuousAutoregressiveWrapper` does for a `ContinuousTransformerWrapper` what
`AutoregressiveWrapper` does for tokens: training predicts each vector from the ones before it,
generation feeds every prediction back in.  Without a distribution the loss is the squared error
(or L1) of the prediction; with `probabilistic=True` the network outputs a mean $\mu_t$ and a
variance $\sigma_t^2$ per feature, the loss is the Gaussian negative log-likelihood

$$\mathcal{L} = \frac{1}{2}\Big(\log \sigma_t^2 + \frac{(x_{t+1} - \mu_t)^2}{\sigma_t^2}\Big)$$

(up to a constant), and generation samples $x_{t+1} \sim \mathcal{N}(\mu_t, (T\sigma_t)^2)$ with a
temperature $T$.

```python
net = ContinuousTransformerWrapper(dim_in=8, dim_out=8, max_seq_len=256, probabilistic=True,
                                   attn_layers=Decoder(dim=256, depth=4, heads=4))
model = ContinuousAutoregressiveWrapper(net)
loss = model(x)                       # x: (b, n, 8)
more = model.generate(x[:, :4], 16)   # (b, 16, 8)
```

Generation uses the key/value cache through x-transformers' spelling
([intermediates](../generation/intermediates.md)), so each step runs one vector.

**Differences from x-transformers.**  `rollout_steps > 1` (training on several steps of the model's
own rollouts) is not implemented here; it is refused with a `ValueError`.

Shapes: `b` batch, `n` steps, `d` features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GaussianNLL(nn.Module):
    r"""$\frac{1}{2}(\log \sigma^2 + (x - \mu)^2 / \sigma^2)$ per feature, from `pred = (mean, variance)`."""

    def forward(self, pred, target: Tensor) -> Tensor:
        mean, var = pred
        return F.gaussian_nll_loss(mean, target, var, reduction="none")


def sample_from_mean_variance(mean: Tensor, variance: Tensor, eps: float = 1e-5, temperature: float = 1.0) -> Tensor:
    r"""$x \sim \mathcal{N}(\mu, (T \sigma)^2)$."""
    std = variance.clamp(min=eps).sqrt()
    return torch.normal(mean, std * temperature)


class ContinuousAutoregressiveWrapper(nn.Module):
    """Next-vector loss and generation around a causal `ContinuousTransformerWrapper`."""

    def __init__(self, net: nn.Module, loss_fn: Optional[Callable] = None, use_l1_loss: bool = False,
                 equal_loss_weight_batch: bool = False):
        super().__init__()
        self.net = net
        self.max_seq_len: int = net.max_seq_len  # type: ignore[assignment]
        self.probabilistic = bool(getattr(net, "probabilistic", False))
        if loss_fn is None:
            loss_fn = GaussianNLL() if self.probabilistic else \
                nn.L1Loss(reduction="none") if use_l1_loss else nn.MSELoss(reduction="none")
        self.loss_fn, self.equal_loss_weight_batch = loss_fn, equal_loss_weight_batch

    def forward(self, x: Tensor, rollout_steps: int = 1, lens: Optional[Tensor] = None, **kwargs) -> Tensor:
        """The mean loss of predicting `x[:, t + 1]` from `x[:, :t + 1]`; `mask` or `lens` mark real steps."""
        if rollout_steps != 1:
            raise ValueError("rollout_steps: training on the model's own rollouts is not implemented here (use 1)")
        if "prepend_embeds" in kwargs:
            raise ValueError("prepend_embeds: not supported by the continuous autoregressive wrapper")
        inp, target = x[:, :-1], x[:, 1:]
        mask = kwargs.pop("mask", None)
        if lens is not None:
            if mask is not None:
                raise ValueError("lens and mask: give one of them")
            mask = torch.arange(x.shape[1], device=x.device)[None] < lens[:, None].to(x.device)  # (b, n)
        if mask is not None and mask.shape[1] == x.shape[1]:
            mask = mask[:, :-1]
        out = self.net(inp, mask=mask, **kwargs)
        loss = self.loss_fn(out, target)  # (b, n - 1, d)
        if mask is None:
            return loss.mean()
        if self.equal_loss_weight_batch:
            # Every sequence counts the same, however long: mean per row, then over rows.
            per_row = (loss * mask[..., None]).sum(dim=(1, 2)) / mask.sum(dim=1).clamp(min=1)
            return per_row.mean()
        return loss[mask].mean()

    @torch.no_grad()
    def generate(self, start_tokens: Tensor, seq_len: int, temperature: float = 1.0, cache_kv: bool = True,
                 **kwargs) -> Tensor:
        """`seq_len` vectors after `start_tokens` `(b, t, d)` (or `(t, d)`), each fed back in: `(b, seq_len, d)`."""
        if start_tokens.dim() < 2:
            raise ValueError("start_tokens: expected (batch, t, d) or (t, d) vectors")
        no_batch = start_tokens.dim() == 2
        out = start_tokens[None] if no_batch else start_tokens
        t = out.shape[1]
        learned = bool(getattr(self.net, "learned_positions", False))
        max_seq_len = self.max_seq_len
        # The cache serves while the positions fit (or when they are relative).
        use_cache = cache_kv and bool(getattr(self.net.attn_layers, "causal", False)) \
            and not (learned and t + seq_len > max_seq_len)
        was_training = self.net.training
        self.net.eval()
        try:
            cache = None
            for _ in range(seq_len):
                x = out if use_cache or not learned else out[:, -max_seq_len:]
                if use_cache:
                    pred, cache = self.net(x, cache=cache, return_intermediates=True, **kwargs)
                else:
                    pred = self.net(x, **kwargs)
                last = pred[..., -1:, :]
                if self.probabilistic:
                    last = sample_from_mean_variance(last[0], last[1], temperature=temperature)
                out = torch.cat((out, last), dim=1)
        finally:
            self.net.train(was_training)
        out = out[:, t:]
        return out[0] if no_batch else out
