r"""
# Latent autoregression with SIGReg (a LeJEPA-style GPT)

*Papers:* [LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics](https://arxiv.org/abs/2511.08544)
(Balestriero and LeCun, 2025); [LLM-JEPA: Large Language Models Meet Joint Embedding Predictive Architectures](https://arxiv.org/abs/2509.14252)
(Huang, LeCun and Balestriero, 2025)

A joint-embedding predictive architecture (JEPA) learns by predicting the *embedding* of what comes
next instead of the thing itself.  For a causal transformer that means: from the hidden state
$z_t$ of token $t$ (and, optionally, the next token $x_{t+1}$ as the "action" taken), a small
predictor $P$ guesses the hidden state $z_{t+1}$, and may keep rolling forward,
$\hat z_{t+r+1} = P([\hat z_{t+r};\ e(x_{t+r+1})])$, $\hat z_t = z_t$.  With cosine similarity
(`predict_next_cosine_sim=True`) the loss of rollout step $r$ with weight $w_r$ is

$$\mathcal{L}_{\text{pred}} = \sum_{r} w_r\ \operatorname{mean}_{t}\ \big\lVert \bar{\hat z}_{t+r+1} - \operatorname{sg}(\bar z_{t+r+1}) \big\rVert^2,
\qquad \bar z = z / \lVert z \rVert .$$

Predicting embeddings alone collapses (every $z$ the same is a perfect prediction).  LeJEPA's answer
is **SIGReg**, the sketched isotropic Gaussian regulariser: embeddings should be distributed like
$\mathcal{N}(0, I)$, which it checks along $M$ random unit directions $a_m$ with the Epps-Pulley test,
comparing the empirical characteristic function of the projections to the Gaussian's:

$$\operatorname{SIGReg}(Z) = \frac{1}{M} \sum_{m=1}^{M} \int \Big| \frac{1}{N}\sum_{i=1}^{N} e^{\,i t\, a_m^\top z_i} - e^{-t^2/2} \Big|^2 e^{-t^2/2}\, dt .$$

The loss of `LatentAutoregressive` mixes the two with $\lambda$ = `sigreg_loss_weight`, and trains a
cross-entropy probe on the embeddings (by default on detached ones, `frac_gradient=0`, so the token
loss only measures what the embeddings already know):

$$\mathcal{L} = \mathcal{L}_{\text{CE probe}} + (1 - \lambda)\, w_{\ell_2}\, (\mathcal{L}_{\text{pred}} + \mathcal{L}_{\text{pred, no action}}) + \lambda\, \operatorname{SIGReg} .$$

The wrapper replaces the network's output layer by the probe, an MLP (with `ce_probe_module`, e.g.
extra transformer blocks, in front) followed by the original head, so `net(x)` gives the probe's
logits afterwards.  `predictor_input_hiddens_index=i` starts the rollouts from the input of the
$i$-th attention layer (the residual stream, before its norm: `hiddens[i]` of the network's
intermediates) instead of the final embedding; SIGReg then regularises both.  The intermediates hold
no positions of memory tokens, and one stream per self-attention layer even when stochastic depth
(`layer_dropout`) skips a layer: the stream it passes on unchanged.

```python
net = TransformerWrapper(num_tokens=256, max_seq_len=1024,
                         attn_layers=Decoder(dim=512, depth=1, heads=8, rotary_pos_emb=True,
                                             pre_norm_has_final_norm=False))
model = LatentAutoregressive(net, dim=512, num_rollouts=4, rollout_loss_weights=[1., .5, .25, .125],
                             predict_next_embed_no_action=True)
loss = model(x)           # x: (b, n) token ids
```

Shapes: `b` batch, `n` tokens, `d` width (`dim`), `r` rollout steps, `M` slices, `K` knots.

**Differences from the papers.**  LeJEPA regularises the embeddings of two views of an image;
here the views are consecutive tokens, as in x-transformers.  **Differences from x-transformers.**
The characteristic function is computed with $\cos$ and $\sin$ instead of complex exponentials (the
same numbers).  Under `layer_dropout` x-transformers' `hiddens` leave out a skipped layer, so its
index then names a deeper layer (or none); here it always names the same layer.  Both read the
intermediates, which outside training record the attention weights (x-transformers' default), so an
evaluation loss takes the explicit attention path (within about $10^{-6}$ of the fused one), unless
the layers are built with `attn_flash=True`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..norms import RMSNorm


def l2norm(t: Tensor, eps: float = 1e-6) -> Tensor:
    r"""$t / \lVert t \rVert$ along the last dimension."""
    return F.normalize(t, dim=-1, eps=eps)


def scale_grad(t: Tensor, scale: float) -> Tensor:
    """`t` forward; `scale` times its gradient backward (0: detached)."""
    if scale == 1.0:
        return t
    if scale == 0.0:
        return t.detach()
    return t * scale + t.detach() * (1.0 - scale)


def sigreg_loss(x: Tensor, num_slices: int = 1024, domain: tuple[float, float] = (-5.0, 5.0),
                num_knots: int = 17) -> Tensor:
    r"""SIGReg of embeddings `x` `(..., d)`: the Epps-Pulley distance of random 1-D projections from $\mathcal{N}(0, 1)$.

    Zero in expectation for isotropic Gaussian embeddings, large for collapsed ones:

    >>> _ = torch.manual_seed(0)
    >>> bool(sigreg_loss(torch.randn(4096, 8), 64) < 0.01 < sigreg_loss(torch.ones(4096, 8), 64))
    True
    """
    a = l2norm(torch.randn(num_slices, x.shape[-1], device=x.device))  # (M, d) random unit directions
    t = torch.linspace(*domain, num_knots, device=x.device)  # (K,)
    # $\varphi(t) = e^{-t^2/2}$, the standard normal's characteristic function, also the weight
    gauss = (-0.5 * t.square()).exp()
    # $a_m^\top z_i\, t_k$
    proj = (x.reshape(-1, x.shape[-1]) @ a.t())[..., None] * t  # (N, M, K)
    # $\hat\varphi_m(t) = \frac{1}{N}\sum_i e^{i t a_m^\top z_i}$, real and imaginary parts
    ecf_re, ecf_im = proj.cos().mean(dim=0), proj.sin().mean(dim=0)  # (M, K)
    err = ((ecf_re - gauss).square() + ecf_im.square()) * gauss
    return torch.trapezoid(err, t, dim=-1).mean()


def _mlp(dim_in: int, dim: int) -> list[nn.Module]:
    """RMSNorm, then three linear layers through width $2d$ with leaky ReLUs, out to width $d$."""
    return [RMSNorm(dim_in), nn.Linear(dim_in, dim * 2), nn.LeakyReLU(), nn.Linear(dim * 2, dim * 2), nn.LeakyReLU(),
            nn.Linear(dim * 2, dim)]


def _check_hiddens_index(index: Optional[int], layers: nn.Module) -> None:
    """`predictor_input_hiddens_index` must name a self-attention layer of a stack that keeps its hiddens."""
    if index is None:
        return
    count = getattr(layers, "num_self_attn", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
        raise ValueError(f"predictor_input_hiddens_index: expected None or the index of one of the network's "
                         f"{count} self-attention layers (from {-count} to {count - 1}), got {index!r}")
    if getattr(layers, "reversible_pairs", None) is not None:
        raise ValueError("predictor_input_hiddens_index: a reversible stack keeps no layer inputs; set it to None")


class LatentAutoregressive(nn.Module):
    """A causal `TransformerWrapper` trained to predict its own next embeddings, regularised by SIGReg."""

    sigreg_loss = staticmethod(sigreg_loss)
    net: Any  # a TransformerWrapper, whose head becomes the probe
    rollout_loss_weights: Tensor

    def __init__(self, net: nn.Module, *, dim: int, sigreg_loss_weight: float = 0.05, l2_loss_weight: float = 1.0,
                 num_rollouts: int = 1, rollout_loss_weights: Optional[Sequence[float]] = None,
                 sigreg_loss_kwargs: Optional[dict] = None, frac_gradient: float = 0.0,
                 predict_next_cosine_sim: bool = True, predictor_input_hiddens_index: Optional[int] = -1,
                 predict_next_embed_with_action: bool = True, predict_next_embed_no_action: bool = False,
                 detach_target: bool = True, ce_probe_module: Optional[nn.Module] = None, ignore_index: int = -100,
                 pad_value: int = 0):
        super().__init__()
        if not isinstance(getattr(net, "to_logits", None), nn.Module):
            raise ValueError("net: expected a TransformerWrapper with an output layer (to_logits) for the probe")
        if getattr(net.attn_layers, "dim", dim) != dim:  # type: ignore[union-attr]
            raise ValueError(f"dim: expected the network's width {net.attn_layers.dim}, got {dim}")  # type: ignore[union-attr]
        if isinstance(num_rollouts, bool) or not isinstance(num_rollouts, int) or num_rollouts < 1:
            raise ValueError(f"num_rollouts: expected an integer >= 1, got {num_rollouts!r}")
        weights = (1.0,) * num_rollouts if rollout_loss_weights is None else tuple(rollout_loss_weights)
        if len(weights) != num_rollouts:
            raise ValueError(f"rollout_loss_weights: expected {num_rollouts} weights (num_rollouts), got {len(weights)}")
        _check_hiddens_index(predictor_input_hiddens_index, net.attn_layers)  # type: ignore[arg-type]
        if not (predict_next_embed_with_action or predict_next_embed_no_action):
            raise ValueError("predict_next_embed_with_action, predict_next_embed_no_action: turn on at least one")
        self.net = net
        self.ignore_index, self.pad_value = ignore_index, pad_value
        self.sigreg_loss_weight, self.l2_loss_weight = sigreg_loss_weight, l2_loss_weight
        self.num_rollouts = num_rollouts
        w = torch.tensor(weights)
        self.register_buffer("rollout_loss_weights", w / w.sum(), persistent=False)
        self.sigreg_loss_kwargs: dict[str, Any] = dict(num_slices=1024, domain=(-5, 5), num_knots=17) \
            if sigreg_loss_kwargs is None else dict(sigreg_loss_kwargs)
        self.frac_gradient, self.predict_next_cosine_sim = frac_gradient, predict_next_cosine_sim
        self.predictor_input_hiddens_index = predictor_input_hiddens_index
        self.predict_next_embed_with_action = predict_next_embed_with_action
        self.predict_next_embed_no_action = predict_next_embed_no_action
        self.detach_target = detach_target
        # The probe: (extra blocks,) an MLP, then the network's own head.
        head: nn.Module = net.to_logits  # type: ignore[assignment]
        probe = ([ce_probe_module] if ce_probe_module is not None else []) + _mlp(dim, dim) + [head]
        net.to_logits = nn.Sequential(*probe)
        if predict_next_embed_with_action:
            self.action_emb = nn.Embedding(net.num_tokens, dim)  # type: ignore[arg-type]
            self.to_next_embed_pred = nn.Sequential(*_mlp(dim * 2, dim))
        if predict_next_embed_no_action:
            self.to_next_embed_no_action_pred = nn.Sequential(*_mlp(dim, dim))

    def forward(self, x: Tensor, return_loss_breakdown: bool = False, **kwargs):
        """The total loss of token ids `x` `(b, n)`; with `return_loss_breakdown` also `(ce, l2, l2_no_action, sigreg)`."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] < 2:
            raise ValueError(f"x: expected token ids of shape (batch, n) with n >= 2, got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        n = x.shape[1]
        target = x[:, 1:]
        inp = torch.where(x == self.ignore_index, self.pad_value, x)
        index = self.predictor_input_hiddens_index
        # The stream entering layer `index` comes from the intermediates, which hold one per self-attention
        # layer without the memory tokens' positions, even for a layer stochastic depth skipped.
        embed, intermediates = self.net(inp, return_embeddings_and_intermediates=True, **kwargs)  # (b, n, d)
        embed_prev = embed[:, :-1]  # $z_t$ for $t < n$
        embed_prev_lower = intermediates.hiddens[index][:, :-1] if index is not None else embed_prev
        mask = target != self.ignore_index  # (b, n - 1)

        # The probe: $-\log p(x_{t+1} \mid z_t)$ through (mostly) detached embeddings
        logits = self.net.to_logits(scale_grad(embed_prev, self.frac_gradient))  # (b, n - 1, V)
        ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=self.ignore_index, reduction="sum")
        ce = ce / mask.sum().clamp(min=1)

        targets = embed.detach() if self.detach_target else embed
        targets = l2norm(targets) if self.predict_next_cosine_sim else targets
        zero = embed.new_zeros(())
        l2, l2_no_action = zero, zero
        rollouts = min(self.num_rollouts, n - 1)
        pad = rollouts - 1
        # Step $r$'s target at $t$ is $z_{t+r+1}$ and its action $x_{t+r+1}$ (padding past the end).
        step_targets = torch.stack([F.pad(targets, (0, 0, 0, pad))[:, 1 + r:n + r] for r in range(rollouts)])  # (r, b, n - 1, d)
        step_masks = torch.stack([F.pad(mask, (0, pad), value=False)[:, r:n - 1 + r] for r in range(rollouts)])  # (r, b, n - 1)
        actions = [F.pad(inp, (0, pad), value=self.pad_value)[:, 1 + r:n + r] for r in range(rollouts)]
        weights = self.rollout_loss_weights[:rollouts]
        predictors = ([(True, self.to_next_embed_pred)] if self.predict_next_embed_with_action else []) + \
                     ([(False, self.to_next_embed_no_action_pred)] if self.predict_next_embed_no_action else [])
        for with_action, predictor in predictors:
            pred, preds = embed_prev_lower, []
            for r in range(rollouts):
                # $\hat z_{t+r+1} = P([\hat z_{t+r};\ e(x_{t+r+1})])$
                pred = predictor(torch.cat((pred, self.action_emb(actions[r])), dim=-1) if with_action else pred)
                preds.append(l2norm(pred) if self.predict_next_cosine_sim else pred)
            err = F.mse_loss(torch.stack(preds), step_targets, reduction="none") * weights[:, None, None, None]
            # $\sum_r$ of the mean over valid positions and features
            keep = step_masks[..., None].expand_as(err)
            loss = ((err * keep).sum(dim=(1, 2, 3)) / keep.sum(dim=(1, 2, 3)).clamp(min=1e-5)).sum()
            if with_action:
                l2 = loss
            else:
                l2_no_action = loss

        sreg = self.sigreg_loss(embed_prev[mask], **self.sigreg_loss_kwargs)
        if index is not None:
            sreg = (sreg + self.sigreg_loss(embed_prev_lower[mask], **self.sigreg_loss_kwargs)) / 2
        lam = self.sigreg_loss_weight
        total = ce + (1 - lam) * self.l2_loss_weight * (l2 + l2_no_action) + lam * sreg
        if return_loss_breakdown:
            return total, (ce, l2, l2_no_action, sreg)
        return total
