r"""
# Embedding options of the token wrapper

Four small techniques that act on the input embeddings $e_t = E[x_t] + p_t$ before the stack,
each a keyword of x-transformers' `TransformerWrapper`:

* **`l2norm_embed`** ([Transformers without Tears](https://arxiv.org/abs/1910.05895),
  Nguyen & Salazar, 2019): the token and position vectors are divided by their length, so the
  first layer sees inputs of a fixed scale however the tables drift, $\hat e = e / \lVert e\rVert$;
  the tables start tiny ($\sigma = 10^{-5}$), which only the direction then matters for.
* **`scaled_sinu_pos_emb`**: fixed sinusoids times one learned scale $\alpha$ (initialised to
  $D^{-1/2}$), $p_t = \alpha\,[\sin(t \omega_k); \cos(t \omega_k)]$, as in
  [Transformer Quality in Linear Time](https://arxiv.org/abs/2202.10447) (FLASH, Hua et al., 2022).
* **`emb_frac_gradient`** ([CogView](https://arxiv.org/abs/2105.13290), Ding et al., 2021, and
  GLM-130B): the embedding's forward value is unchanged, its gradient is shrunk by $\gamma$,
  $e \leftarrow \gamma e + (1 - \gamma)\,\operatorname{sg}(e)$, which tamed loss spikes from the
  embedding layer's large gradients.
* **`embed_num_tokens`**: extra embedding tables summed into the input, e.g. BERT's segment
  (token type) embedding: `embed_num_tokens={"type": 2}` and `model(x, embed_ids={"type": ids})`.

Shapes: `b` batch, `n` tokens, `E` embedding width.

**Differences from x-transformers.**  Its token embedding is a `TokenEmbedding` module holding an
`nn.Embedding` (`.emb`); here the default is an `nn.Embedding` itself (`.weight`), and
`l2norm_embed` uses a subclass of it, so that checkpoints and the parity harness read the same
parameter either way.  Its default token table is initialised with Kaiming-normal, ours with
$\sigma = 0.02$ (GPT-2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def l2norm(t: Tensor) -> Tensor:
    r"""$t / \lVert t \rVert$ along the last axis.

    >>> l2norm(torch.tensor([[3., 4.]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    return F.normalize(t, dim=-1)


class L2NormEmbedding(nn.Embedding):
    """An embedding table whose rows are returned at unit length (`l2norm_embed=True`)."""

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__(num_embeddings, dim)
        nn.init.normal_(self.weight, std=1e-5)

    def forward(self, input: Tensor) -> Tensor:
        # $\hat e = E[x] / \lVert E[x] \rVert$
        return l2norm(super().forward(input))


class ScaledSinusoidalEmbedding(nn.Module):
    r"""Sinusoids times one learned scale: $p_t = \alpha\,[\sin(t\omega_k);\ \cos(t\omega_k)]$."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"scaled_sinu_pos_emb: the embedding width must be even, got {dim}")
        self.scale = nn.Parameter(torch.ones(1) * dim ** -0.5)
        half = dim // 2
        # $\omega_k = \theta^{-k / (D/2)}$, $k = 0 \dots D/2 - 1$
        self.register_buffer("inv_freq", theta ** -(torch.arange(half).float() / half), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """`positions` `(n,)` (any real values) to `(n, E)`."""
        inv_freq: Tensor = self.inv_freq  # type: ignore[assignment]
        angles = positions.float()[:, None] * inv_freq  # (n, E/2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1) * self.scale  # (n, E)


def shrink_gradient(e: Tensor, frac: float) -> Tensor:
    r"""The same value, a gradient times `frac`: $\gamma e + (1 - \gamma)\,\operatorname{sg}(e)$.

    >>> e = torch.ones(2, requires_grad=True); shrink_gradient(e, 0.1).sum().backward(); e.grad.tolist()
    [0.10000000149011612, 0.10000000149011612]
    """
    if frac >= 1:
        return e
    return e * frac + e.detach() * (1 - frac)


class ExtraEmbeddings(nn.Module):
    """Named extra tables (`embed_num_tokens={"type": 2}`), summed into the token embedding."""

    def __init__(self, embed_num_tokens: dict[str, int], dim: int):
        super().__init__()
        if not isinstance(embed_num_tokens, dict) or any(
                not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 1
                for k, v in embed_num_tokens.items()):
            raise ValueError(f"embed_num_tokens: expected a dict of name -> positive number of ids, "
                             f"got {embed_num_tokens!r}")
        self.embeds = nn.ModuleDict({f"{name}_embed": nn.Embedding(num, dim) for name, num in embed_num_tokens.items()})

    def forward(self, embed_ids: dict[str, Tensor]) -> Tensor:
        names = {k[:-len("_embed")] for k in self.embeds}
        if not isinstance(embed_ids, dict) or set(embed_ids) != names:
            raise ValueError(f"embed_ids: expected ids for exactly {sorted(names)}, got "
                             f"{sorted(embed_ids) if isinstance(embed_ids, dict) else type(embed_ids).__name__}")
        # $\sum_k E_k[\text{id}_k]$
        parts = [self.embeds[f"{name}_embed"](ids) for name, ids in embed_ids.items()]
        return torch.stack(parts).sum(dim=0)  # (b, n, E)
