r"""
# Output heads: mixture of softmaxes, sigsoftmax, several heads, a next-embedding head

The usual head is one linear map to logits and a softmax, $p(x_{t+1}) = \operatorname{softmax}(W h_t)$.
Its log-probabilities form a matrix of rank at most $D + 1$ over all contexts, which
[Breaking the Softmax Bottleneck](https://arxiv.org/abs/1711.03953) (Yang et al., 2018) argues is
too low for natural language.  Their **mixture of softmaxes** (`mixture_of_softmax=True`,
`mixture_of_softmax_k=K`) projects each hidden state to $K$ contexts and mixes their softmaxes
with learned weights $\pi$:

$$p(x \mid h) = \sum_{k=1}^{K} \pi_k(h)\, \operatorname{softmax}(W h_k)_x, \qquad
h_k = (P h)_k, \quad \pi(h) = \operatorname{softmax}(U h)$$

so the head returns **log-probabilities** (`output_is_log_prob`), and the autoregressive loss is
then the negative log-likelihood instead of the cross-entropy.

**Sigsoftmax** ([Sigsoftmax: Reanalysis of the Softmax Bottleneck](https://arxiv.org/abs/1805.10829),
Kanai et al., 2018; `sigsoftmax_logits=True`) breaks the same bound with no parameters: the
normalised $\exp(z)\,\sigma(z)$, i.e. logits $z + \log \sigma(z)$.

`num_output_heads=H` gives $H$ independent linear heads (a tuple of logits, e.g. for several
tokens ahead); `add_continuous_pred_head=True` adds a small MLP that predicts the *next
embedding* $e_{t+1}$ from $h_t$, trained with an L1 loss by the autoregressive wrapper.

Shapes: `b` batch, `n` tokens, `D` model width, `K` mixture components, `V` vocabulary.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn


class MixtureOfSoftmaxes(nn.Module):
    r"""$K$ contexts per hidden state, each through the shared output layer, mixed by $\pi(h)$."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"mixture_of_softmax_k: expected a positive integer, got {k!r}")
        self.k = k
        self.to_mixture = nn.Linear(dim, dim * k, bias=False)  # $P$
        self.combine_mixture = nn.Linear(dim, k, bias=False)  # $U$

    def forward(self, h: Tensor, to_logits) -> Tensor:
        """Log-probabilities `(b, n, V)` of the mixture, with `to_logits` the shared output layer $W$."""
        # $\pi(h) = \operatorname{softmax}(U h)$
        pi = self.combine_mixture(h).softmax(dim=-1)  # (b, n, K)
        contexts = rearrange(self.to_mixture(h), "... (k d) -> ... k d", k=self.k)  # (b, n, K, D)
        probs = to_logits(contexts).float().softmax(dim=-1)  # (b, n, K, V)
        # $\log \sum_k \pi_k\, \operatorname{softmax}(W h_k)$
        mixed = einsum(probs, pi.float(), "... k v, ... k -> ... v")  # (b, n, V)
        return mixed.clamp(min=1e-20).log()


def sigsoftmax_logits(z: Tensor) -> Tensor:
    r"""Logits whose softmax is the sigsoftmax $\exp(z)\sigma(z) / \sum \exp(z')\sigma(z')$: $z + \log\sigma(z)$.

    >>> sigsoftmax_logits(torch.tensor([0.])).tolist()   # log(1/2)
    [-0.6931471824645996]
    """
    return z + F.logsigmoid(z)


class NextEmbeddingHead(nn.Sequential):
    r"""$\hat e_{t+1} = W_2\, \operatorname{SiLU}(W_1 h_t)$: predicts the next input embedding."""

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim, bias=False), nn.SiLU(), nn.Linear(dim, dim, bias=False))


def next_embedding_loss(pred: Tensor, init_embeds: Tensor, keep: Tensor) -> Tensor:
    r"""$\lVert \hat e_{t+1} - \operatorname{sg}(e_{t+1}) \rVert_1$, averaged over the kept positions `(b, n - 1)`."""
    loss = F.l1_loss(pred[:, :-1], init_embeds[:, 1:].detach(), reduction="none")  # (b, n - 1, D)
    return loss[keep].mean() if keep.any() else loss.sum() * 0.0


def output_tuple(logits) -> tuple:
    return logits if isinstance(logits, tuple) else (logits,)
