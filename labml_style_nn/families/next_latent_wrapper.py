r"""
# Next-latent prediction

*Paper:* [Next-Latent Prediction Transformers Learn Compact World Models](https://arxiv.org/abs/2511.05963)
(Teoh et al., 2025)

A transformer trained on next tokens can look anything up in its past, so nothing asks its hidden
state $h_t$ to be a compact summary of the history.  NextLat adds a small *latent dynamics* model
$f$ that must predict the transformer's own next hidden state from the current one and the next
token, $\hat h_{t+1} = f(h_t, e_{x_{t+1}})$.  If that is possible, $h_t$ together with the token
carries what the future needs: the paper shows such latents converge to belief states.  Rolled out
for $R$ steps, $\hat h_{t+r+1} = f(\hat h_{t+r}, e_{x_{t+r+1}})$, the loss adds to the
cross-entropy a regression on the (stop-gradient) targets and a KL between the next-token
distributions that the frozen output head $W$ reads from target and prediction:

$$\mathcal{L} = \operatorname{CE} + \lambda_{\text{lat}} \sum_r w_r\, \ell\big(\hat h_{t+r+1}, \operatorname{sg}(h_{t+r+1})\big)
+ \lambda_{\text{KL}} \sum_r w_r\, D_{KL}\big(\operatorname{softmax}(W \operatorname{sg}(h_{t+r+1})) \,\|\, \operatorname{softmax}(W \hat h_{t+r+1})\big)$$

with $\ell$ the smooth L1 loss by default.  The transformer receives gradients through the
cross-entropy and through the start of each rollout, $h_t$.  After training the wrapper is
dropped: the transformer generates as usual.

Two options follow x-transformers.  Errors compound along a rollout, so step $r$ can be weighted by
$\exp(-\gamma \sum_{r' < r} \ell_{r'})$ (`dynamic_rollout_loss_weight`, the losses of the earlier
steps, detached).  `sigreg_loss_weight` adds LeJEPA's SIGReg
([Balestriero & LeCun, 2025](https://arxiv.org/abs/2511.08544)), which pushes the hidden states
towards an isotropic Gaussian: along random unit directions $a$, the empirical characteristic
function of $a^\top h$ is compared with the Gaussian's,
$\int \big|\frac{1}{N}\sum_i e^{\mathrm{i} s a^\top h_i} - e^{-s^2/2}\big|^2 e^{-s^2/2}\, ds$.

```python
model = TransformerWrapper(num_tokens=256, max_seq_len=1024, attn_layers=Decoder(dim=512, depth=6, heads=8))
wrapper = NextLatentWrapper(model, dim=512, num_rollouts=3)
loss = wrapper(token_ids)                              # token_ids (b, n)
AutoregressiveWrapper(model).generate(token_ids[:, :1], 10)
```

**Differences from the paper.**  The dynamics model is x-transformers' residual MLP (or a GRU, or
your own), and the targets are the final hidden states after the last norm.

**Differences from x-transformers.**  Its SIGReg indexes the hidden states `(b, n, D)` with the
targets' mask `(b, n - 1)` and fails; here it regularises the hidden states of the positions with
a target, `h[:, :-1][mask]`.  A tied output head (`tie_embedding=True`) is frozen for the KL by
detaching its weight instead of copying a module.

Shapes: `b` batch, `n` tokens, `D` width, `r` rollout step, `V` vocabulary.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Losses = namedtuple("Losses", ["ce", "next_latent", "kl", "sigreg"])


def exclusive_cumsum(t: Tensor, dim: int = 0) -> Tensor:
    """Sums of the earlier entries along `dim`.

    >>> exclusive_cumsum(torch.tensor([1., 2., 3.])).tolist()
    [0.0, 1.0, 3.0]
    """
    return t.cumsum(dim=dim) - t


def masked_mean(t: Tensor, mask: Tensor, dim) -> Tensor:
    """The mean of `t` over `dim` where `mask` (broadcast to `t`) is true."""
    mask = mask.expand_as(t).to(t.dtype)
    return (t * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1e-5)


def MLP(dim_in: int, dim_out: int, dim_hidden: int, depth: int = 3) -> nn.Sequential:
    """`depth` linear layers with GELUs between them."""
    widths = [dim_in] + [dim_hidden] * (depth - 1) + [dim_out]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(widths[i], widths[i + 1])] + ([nn.GELU()] if i < depth - 1 else [])
    return nn.Sequential(*layers)


class ResidualDynamics(nn.Module):
    r"""$\hat h_{r+1} = \hat h_r + g([\hat h_r, e_{r+1}])$, rolled out over the next tokens' embeddings."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, rollout_next_token_embeds: Tensor, curr_latent: Tensor) -> Tensor:
        """Predicted latents `(r, b, n, D)` from next-token embeddings `(r, b, n, D)` and $h_t$ `(b, n, D)`."""
        out = []
        for embed in rollout_next_token_embeds:
            curr_latent = curr_latent + self.net(torch.cat((curr_latent, embed), dim=-1))
            out.append(curr_latent)
        return torch.stack(out)


class RolloutGRU(nn.Module):
    """A GRU over the rollout steps, started from $h_t$, reading the next tokens' embeddings."""

    def __init__(self, dim: int):
        super().__init__()
        self.gru = nn.GRU(input_size=dim, hidden_size=dim, batch_first=False)

    def forward(self, rollout_next_token_embeds: Tensor, curr_latent: Tensor) -> Tensor:
        r, b, n, d = rollout_next_token_embeds.shape
        out, _ = self.gru(rollout_next_token_embeds.reshape(r, b * n, d), curr_latent.reshape(1, b * n, d))
        return out.reshape(r, b, n, d)


class MSECosineSimLoss(nn.Module):
    r"""$(1 - \alpha)\,(x - y)^2 + \alpha\,(1 - \cos(x, y))$ per feature."""

    def __init__(self, weight: float = 0.9):
        super().__init__()
        self.weight = weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        mse = F.mse_loss(pred, target, reduction="none")
        cos = 1.0 - F.cosine_similarity(pred, target, dim=-1)[..., None]
        return mse.lerp(cos, self.weight)


class NextLatentWrapper(nn.Module):
    """Next-token loss plus the next-latent loss of a `TransformerWrapper`, through a latent dynamics model."""

    rollout_loss_weights: Tensor

    @staticmethod
    def sigreg_loss(x: Tensor, num_slices: int = 1024, domain: tuple[float, float] = (-5, 5), num_knots: int = 17) -> Tensor:
        r"""SIGReg of the vectors `x` `(..., D)`: the Epps–Pulley distance from $\mathcal{N}(0, 1)$ along random directions."""
        dirs = F.normalize(torch.randn(num_slices, x.shape[-1], device=x.device), dim=-1)  # (m, D)
        s = torch.linspace(domain[0], domain[1], num_knots, device=x.device)  # (k,)
        gauss = (-0.5 * s.square()).exp()
        # $\frac{1}{N}\sum_i e^{\mathrm{i} s\, a^\top x_i}$, per direction and knot
        proj = (x @ dirs.t()).reshape(-1, num_slices)  # (N, m)
        ecf = (1j * proj[..., None] * s).exp().mean(dim=0)  # (m, k)
        err = (ecf - gauss).abs().square() * gauss
        return torch.trapezoid(err, s, dim=-1).mean()

    def __init__(self, net: nn.Module, *, dim: int, num_rollouts: int = 1, loss_type: Union[str, nn.Module] = "smooth_l1",
                 dynamics_type: str = "residual", dynamics_network: Optional[nn.Module] = None,
                 dynamics_hidden_dim: Optional[int] = None, dynamics_num_layers: int = 3,
                 next_latent_loss_weight: float = 1.0, kl_loss_weight: float = 1.0, ignore_index: int = -100,
                 pad_value: int = 0, rollout_weights: Optional[tuple] = None, sigreg_loss_weight: float = 0.0,
                 sigreg_loss_kwargs: Optional[dict[str, Any]] = None, dynamic_rollout_loss_weight: bool = True,
                 dynamic_loss_decay: float = 1.0):
        super().__init__()
        if isinstance(num_rollouts, bool) or not isinstance(num_rollouts, int) or num_rollouts < 1:
            raise ValueError(f"num_rollouts: expected a positive integer, got {num_rollouts!r}")
        if isinstance(loss_type, nn.Module):
            self.loss_fn = loss_type
        elif loss_type in ("smooth_l1", "mse", "mse_and_cosine_sim"):
            self.loss_fn = {"smooth_l1": lambda: nn.SmoothL1Loss(reduction="none"),
                            "mse": lambda: nn.MSELoss(reduction="none"), "mse_and_cosine_sim": MSECosineSimLoss}[loss_type]()
        else:
            raise ValueError(f"loss_type: expected 'smooth_l1', 'mse', 'mse_and_cosine_sim' or a module, got {loss_type!r}")
        weights = (1.0,) * num_rollouts if rollout_weights is None else tuple(rollout_weights)
        if len(weights) != num_rollouts:
            raise ValueError(f"rollout_weights: expected {num_rollouts} weights, one per rollout step, got {len(weights)}")
        if dynamics_type not in ("residual", "gru", "custom") or (dynamics_type == "custom" and dynamics_network is None):
            raise ValueError(f"dynamics_type: expected 'residual', 'gru' or 'custom' (with dynamics_network), "
                             f"got {dynamics_type!r}")
        self.net: Any = net
        self.loss_type, self.num_rollouts = loss_type, num_rollouts
        self.ignore_index, self.pad_value = ignore_index, pad_value
        self.next_latent_loss_weight, self.kl_loss_weight = next_latent_loss_weight, kl_loss_weight
        self.sigreg_loss_weight = sigreg_loss_weight
        self.sigreg_loss_kwargs: dict[str, Any] = dict(num_slices=1024, domain=(-5, 5), num_knots=17) \
            if sigreg_loss_kwargs is None else sigreg_loss_kwargs
        self.dynamic_rollout_loss_weight, self.dynamic_loss_decay = dynamic_rollout_loss_weight, dynamic_loss_decay
        # $w_r$, normalised to sum to one
        w = torch.tensor(weights)
        self.register_buffer("rollout_loss_weights", w / w.sum(), persistent=False)
        self.token_emb: Any = net.token_emb
        if dynamics_type == "residual":
            if dynamics_network is None:
                mlp = MLP(dim * 2, dim, dynamics_hidden_dim or dim, depth=dynamics_num_layers)
                last = mlp[-1]
                assert isinstance(last, nn.Linear)
                # $g$ starts at zero: the first prediction is $\hat h_{t+1} = h_t$.
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
                dynamics_network = nn.Sequential(nn.LayerNorm(dim * 2), mlp)
            self.dynamics_model: nn.Module = ResidualDynamics(dynamics_network)
        elif dynamics_type == "gru":
            self.dynamics_model = RolloutGRU(dim)
        else:
            assert dynamics_network is not None
            self.dynamics_model = dynamics_network

    def _frozen_logits(self, h: Tensor) -> Tensor:
        """The output head with its weights detached: gradients reach `h` only."""
        head = self.net.to_logits
        if isinstance(head, nn.Linear):
            return F.linear(h, head.weight.detach(), None if head.bias is None else head.bias.detach())
        if head is None and getattr(self.net, "tie_embedding", False):
            scale = getattr(self.net, "tie_embedding_scale", None)
            return (h if scale is None else h * scale) @ self.net._tied_weight().detach().t()
        raise ValueError("kl_loss_weight: the KL term needs one linear output head (or a tied embedding)")

    def forward(self, x: Tensor, return_loss_breakdown: bool = False, **kwargs):
        """The total loss on token ids `x` `(b, n)`; with `return_loss_breakdown`, `(loss, Losses(...))`."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.is_floating_point():
            raise ValueError("x: expected token ids of shape (batch, n)")
        n, R = x.shape[1], self.num_rollouts
        if n <= R + 1:
            raise ValueError(f"x: sequence length ({n}) must be greater than num_rollouts ({R}) + 1")
        inp, target = x.masked_fill(x == self.ignore_index, self.pad_value), x[:, 1:]
        hidden, _ = self.net(inp, return_embeddings_and_intermediates=True, **kwargs)  # (b, n, D)
        logits = self.net.logits(hidden[:, :-1])
        ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=self.ignore_index)
        mask = target != self.ignore_index  # (b, n - 1)
        # Rollout step $r$ at position $t$ targets $h_{t+r+1}$ after the embedding of $x_{t+r+1}$ (zeros past the end).
        embeds = self.token_emb(inp)
        targets = torch.stack([F.pad(hidden[:, 1 + r:], (0, 0, 0, r)) for r in range(R)])  # (r, b, n - 1, D)
        next_embeds = torch.stack([F.pad(embeds[:, 1 + r:], (0, 0, 0, r)) for r in range(R)])
        step_masks = torch.stack([F.pad(mask[:, r:], (0, r), value=False) for r in range(R)])  # (r, b, n - 1)
        # $\hat h_{t+r+1} = f(\hat h_{t+r}, e_{x_{t+r+1}})$ from $\hat h_t = h_t$
        predicted = self.dynamics_model(next_embeds.detach(), hidden[:, :-1])  # (r, b, n - 1, D)
        zero = hidden.new_zeros(())
        next_latent_loss = kl_loss = sigreg = zero
        w = self.rollout_loss_weights.to(hidden.dtype)[:, None, None]  # (r, 1, 1)
        unreduced = self.loss_fn(predicted, targets.detach())  # (r, b, n - 1, D)
        dynamic = 1.0
        if self.dynamic_rollout_loss_weight:
            # $\exp(-\gamma \sum_{r' < r} \ell_{r'})$, with the earlier steps' losses detached
            dynamic = (-self.dynamic_loss_decay * exclusive_cumsum(unreduced.detach().mean(-1), dim=0)).exp()
        if self.next_latent_loss_weight > 0:
            weighted = unreduced * (w * dynamic)[..., None]
            next_latent_loss = masked_mean(weighted, step_masks[..., None], dim=(1, 2, 3)).sum()
        if self.kl_loss_weight > 0:
            with torch.no_grad():
                target_log_probs = self._frozen_logits(targets).log_softmax(dim=-1)
            pred_log_probs = self._frozen_logits(predicted).log_softmax(dim=-1)
            # $D_{KL}(p_{\text{target}} \| p_{\text{pred}})$ per position
            kl = (target_log_probs.exp() * (target_log_probs - pred_log_probs)).sum(dim=-1)  # (r, b, n - 1)
            kl_loss = masked_mean(kl * w * dynamic, step_masks, dim=(1, 2)).sum()
        if self.sigreg_loss_weight > 0:
            sigreg = self.sigreg_loss(hidden[:, :-1][mask], **self.sigreg_loss_kwargs)
        total = ce + self.next_latent_loss_weight * next_latent_loss + self.kl_loss_weight * kl_loss \
            + self.sigreg_loss_weight * sigreg
        return (total, Losses(ce, next_latent_loss, kl_loss, sigreg)) if return_loss_breakdown else total
