r"""
# Feedback memory: one memory for all layers

*Paper:* [Addressing Some Limitations of Transformers with Feedback Memory](https://arxiv.org/abs/2002.09402) (Fan et al., 2021)

In a Transformer (and in Transformer-XL) layer $l$ of token $t$ only sees layer $l-1$ of earlier
tokens.  The lower layers of the present can never use the higher-level representations that were
already computed for the past.  The Feedback Transformer merges, for every time step, *all* the
layer outputs of that step into a single memory vector

$$m_t = \sum_{l=0}^{L} \operatorname{softmax}(\alpha)_l\, x^l_t,$$

where $x^0_t$ is the token embedding, $x^l_t$ the output of layer $l$ and $\alpha \in \mathbb{R}^{L+1}$
a learned weight per layer (the paper writes $w^l$; we keep $w$ for the window length of
[the model](feedback_transformer.md)).  With three layers at initialisation, $\alpha = 0$ gives
$\operatorname{softmax}(\alpha) = (\tfrac14, \tfrac14, \tfrac14, \tfrac14)$: the memory starts as the
plain average of the embedding and the three layer outputs.  Every layer of every later step attends to the same memory
$\{m_{t-M}, \dots, m_{t-1}\}$, so even the first layer sees the top layer's view of the past.

Because the memory is shared, so are its keys and values: one projection for all layers,

$$k_t = \operatorname{LN}(m_t)\, W_K, \qquad v_t = \operatorname{LN}(m_t)\, W_V,$$

computed **once** per memory entry instead of once per layer.  The same projection turns a layer's
own inputs into keys and values inside a window (see [the model](feedback_transformer.md)).

This file holds that shared part: the layer weights $\alpha$, the norm, $W_K, W_V$, and the first-in
first-out update that keeps the last $M$ entries.

Shapes: `b` batch, `n` tokens, `L` layers, `D` model width, `h` heads, `d` head dim, `m` memory length.

## Differences from the paper

The paper projects $m_t$ directly; we apply a LayerNorm first, so that memory keys live on the same
scale as the pre-normalised inputs that the layers project with the same $W_K, W_V$.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


def fifo(buffer: Tensor, new: Tensor, max_len: int, dim: int = 1) -> Tensor:
    """Append `new` to `buffer` along `dim` and keep the last `max_len` entries.

    >>> fifo(torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]]), max_len=4).tolist()
    [[2, 3, 4, 5]]
    """
    out = torch.cat((buffer, new), dim=dim)
    return out.narrow(dim, max(0, out.shape[dim] - max_len), min(max_len, out.shape[dim]))


class FeedbackMemory(nn.Module):
    r"""The shared memory's parameters: layer weights $\alpha$, a norm and the key/value projection.

    Args:
        dim: model width $D$.
        depth: number of layers $L$ (the memory mixes $L + 1$ states, the embedding included).
        heads: attention heads $h$.
        dim_head: head width $d$.
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        # $\alpha$, zero at initialisation: every layer contributes $1 / (L + 1)$.
        self.layer_weights = nn.Parameter(torch.zeros(depth + 1))
        self.norm = nn.LayerNorm(dim)
        # $[W_K, W_V]$, shared by the memory and by every layer's in-window keys.
        self.to_kv = nn.Linear(dim, 2 * heads * dim_head, bias=False)

    def aggregate(self, states: list[Tensor]) -> Tensor:
        r"""$m_t = \sum_l \operatorname{softmax}(\alpha)_l\, x^l_t$ for states `[(b, n, D)] * (L + 1)`."""
        weights = self.layer_weights.softmax(dim=0)  # (L + 1,)
        return torch.einsum("l,lbnd->bnd", weights.to(states[0].dtype), torch.stack(states))  # (b, n, D)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Keys and values $x W_K, x W_V$ of already normalised vectors `(b, n, D)`, split into heads."""
        k, v = self.to_kv(x).chunk(2, dim=-1)
        def split(t: Tensor) -> Tensor:
            return rearrange(t, "b n (h d) -> b h n d", h=self.heads)

        return split(k), split(v)  # (b, h, n, d) each

    def keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        r"""$k = \operatorname{LN}(m) W_K$, $v = \operatorname{LN}(m) W_V$ for memory entries `(b, m, D)`."""
        return self.project(self.norm(memory))  # (b, h, m, d) each
