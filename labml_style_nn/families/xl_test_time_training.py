r"""
# Test-time training of fast weights across XL segments

*Paper:* [Learning to (Learn at Test Time): RNNs with Expressive Hidden States](https://arxiv.org/abs/2407.04620)
(Sun et al., 2024); the orthogonalised update is [Muon](https://kellerjordan.github.io/posts/muon/)'s
Newton-Schulz iteration (Jordan et al., 2024).

A Transformer-XL carries its past in memories of hidden states.  Test-time training (TTT) carries
it in *weights* as well: some modules of the network get a private copy of their parameters per
sequence, the **fast weights** $W$, and after each segment those take one gradient step on a
self-supervised loss of that segment (by default the next-token loss itself),

$$W_{s+1} = W_s - \eta\, \nabla_{W} \ell(W_s;\ \text{segment } s) - \eta\, \lambda\, W_s ,$$

so the next segment is read by a network that has just learnt from the previous one.  In training
the step is kept in the graph (`create_graph`), so the outer loss also teaches the slow weights to
be good starting points and good learners (a meta-gradient through the inner step); attention then
runs on PyTorch's math backend, since the fused kernels cannot be differentiated twice.

The [XL autoregressive wrapper](xl_autoregressive.md) turns it on with `ttt_module_paths`, the
dotted paths of the modules to fast-train in its network (a pair `(source, target)` takes the
gradient of one module's fast weights to update another's, of the same shapes); the episodic
memories are the path `"episodic_mems"`.  The pieces, each below:

* `TTTModuleWrapper` runs its module with per-sequence parameters, $\operatorname{vmap}$ over the batch;
* `LowRankLinear` (`ttt_low_rank_paths`) replaces a weight by $AB$ with $B = 0$ at the start, so the
  fast weights are a low-rank update;
* `newton_schulz` (`ttt_use_muon`) orthogonalises a matrix gradient, $G \to U V^\top$ for
  $G = U \Sigma V^\top$, approximately, in five steps;
* `TTTNextLatentPredictionLoss` (`ttt_next_latent_loss`) and `TTTMetaLearningTargetKLLoss`: inner
  losses other than the next token, computed from the segment's final hidden states.

Shapes: `b` batch, `n` tokens, `d` width, `o`/`i` a weight's output/input features, `r` low rank.

**Differences from the paper.**  TTT layers take the inner step token by token (or in mini-batches)
inside a layer; here it is taken once per segment, on modules of an ordinary transformer.
**Differences from x-transformers.**  Module paths name this library's modules
(`attn_layers.blocks.1.fn.proj_out`, not `attn_layers.layers.1.1.ff.3`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap


def newton_schulz(g: Tensor, steps: int = 5, eps: float = 1e-7,
                  coefs: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)) -> tuple[Tensor, bool]:
    r"""Approximately orthogonalise batched matrix gradients `(..., o, i)`; `(g, False)` for vectors.

    Iterates $X \leftarrow aX + (bA + cA^2)X$ with $A = XX^\top$ from $X = G / \lVert G \rVert$.

    >>> g, done = newton_schulz(torch.randn(1, 4, 4))
    >>> done, bool(torch.linalg.svdvals(g[0]).max() < 1.3)
    (True, True)
    """
    if g.dim() < 3:
        return g, False
    tall = g.shape[-2] > g.shape[-1]
    x = g.transpose(-1, -2) if tall else g
    x = x / x.norm(dim=(-1, -2), keepdim=True).clamp(min=eps)
    a, b, c = coefs
    for _ in range(steps):
        A = x @ x.transpose(-1, -2)  # (..., o, o)
        x = a * x + (b * A + c * A @ A) @ x
    return (x.transpose(-1, -2) if tall else x), True


class LowRankLinear(nn.Module):
    r"""A linear layer whose weight is $A B$, `(o, r) @ (r, i)`, with $B = 0$ at the start: a low-rank fast weight."""

    def __init__(self, module: nn.Module, low_rank_dim: int):
        super().__init__()
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            raise ValueError("ttt_low_rank_paths: the module at the path must have a 2-d weight (a Linear)")
        out_dim, in_dim = weight.shape
        if not 0 < low_rank_dim < min(out_dim, in_dim):
            raise ValueError(f"ttt_low_rank_paths: the low rank must lie in (0, {min(out_dim, in_dim)}), "
                             f"got {low_rank_dim}")
        self.weight_a = nn.Parameter(torch.randn(out_dim, low_rank_dim))
        self.weight_b = nn.Parameter(torch.zeros(low_rank_dim, in_dim))
        bias = getattr(module, "bias", None)
        self.bias = nn.Parameter(bias.detach().clone()) if isinstance(bias, Tensor) else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_a @ self.weight_b, self.bias)


class TTTModuleWrapper(nn.Module):
    """Runs `module` with its slow parameters, or with per-sequence fast ones (`batch_params`, each `(b, ...)`)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.batch_params: Optional[dict[str, Tensor]] = None

    def reset(self) -> None:
        self.batch_params = None

    def forward(self, *args, **kwargs):
        if self.batch_params is None:
            return self.module(*args, **kwargs)

        # Row $k$ of the batch runs with its own weights $W^{(k)}$.
        def one(params, *row):
            return functional_call(self.module, params, row, kwargs)

        return vmap(one)(self.batch_params, *args)


class TTTNextLatentPredictionLoss(nn.Module):
    r"""Inner loss: an MLP predicts the next position's final hidden state, $\ell_t = \lVert f(z_t) - \operatorname{sg}(z_{t+1}) \rVert$ (smooth L1 or squared)."""

    def __init__(self, *, dim: int, hidden_dim: Optional[int] = None, num_layers: int = 3,
                 loss_type: str = "smooth_l1"):
        super().__init__()
        if loss_type not in ("smooth_l1", "mse"):
            raise ValueError(f"loss_type: expected 'smooth_l1' or 'mse', got {loss_type!r}")
        hidden_dim = dim if hidden_dim is None else hidden_dim
        layers: list[nn.Module] = [nn.LayerNorm(dim)]
        for i in range(num_layers):
            layers.append(nn.Linear(dim if i == 0 else hidden_dim, dim if i == num_layers - 1 else hidden_dim))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.predictor = nn.Sequential(*layers)
        self.loss_fn = F.smooth_l1_loss if loss_type == "smooth_l1" else F.mse_loss

    def forward(self, intermediates, mask: Optional[Tensor] = None) -> Tensor:
        """Per position `(b, n)`; the last position predicts the first (wrapping), masked like the labels."""
        z = intermediates.last_layer_hiddens  # (b, n, d)
        target = torch.roll(z, -1, dims=1).detach()
        loss = self.loss_fn(self.predictor(z), target, reduction="none").mean(dim=-1)  # (b, n)
        if mask is not None:
            # The target at $t + 1$ counts only where the label at $t + 1$ does.
            loss = loss.masked_fill(~torch.roll(mask, -1, dims=1), 0.0)
        return loss


class TTTMetaLearningTargetKLLoss(nn.Module):
    r"""Inner loss: $\mathrm{KL}(p \,\|\, q)$ between a linear prediction $p$ from the final hidden states and $q$ from a small encoder over them."""

    def __init__(self, *, dim: int, num_classes: int, depth: int = 1, heads: int = 4, dim_head: int = 64, **kwargs):
        super().__init__()
        from ..models import Encoder

        self.encoder = Encoder(dim=dim, depth=depth, heads=heads, attn_dim_head=dim_head, **kwargs)
        self.to_prediction = nn.Linear(dim, num_classes)
        self.to_meta_prediction = nn.Linear(dim, num_classes)

    def forward(self, intermediates, mask: Optional[Tensor] = None) -> Tensor:
        """Per position `(b, n)`."""
        z = intermediates.last_layer_hiddens  # (b, n, d)
        p = self.to_prediction(z).softmax(dim=-1)
        log_q = self.to_meta_prediction(self.encoder(z, mask=mask)).log_softmax(dim=-1)
        # $\sum_c p_c (\log p_c - \log q_c)$
        return F.kl_div(log_q, p, reduction="none").sum(dim=-1)
