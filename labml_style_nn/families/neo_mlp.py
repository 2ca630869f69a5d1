r"""
# NeoMLP: an MLP whose units are tokens

*Paper:* NeoMLP (ICLR 2025, [OpenReview](https://openreview.net/forum?id=A8Vuf2e8y6)); the use of
learned output tokens read by a plain transformer follows [LVSM](https://haian-jin.github.io/projects/LVSM/).

An MLP is a graph: input units, hidden units, output units, messages along the edges.  NeoMLP
makes the graph fully connected and replaces the fixed weights with attention: every unit is a
token with a learned embedding, and a transformer encoder passes messages among all of them.  The
$i$-th input value $x_i$ enters its token through random Fourier features,

$$e_i = \operatorname{Linear}\big(\cos(2\pi\,(w x_i + b))\big) + E^{\text{in}}_i, \qquad
w, b \text{ random and fixed},$$

hidden and output tokens start from their learned embeddings alone, and the $k$-th output is read
from its token by a linear map of its own, $y_k = \langle W_k, h^{\text{out}}_k \rangle + c_k$.

```python
mlp = NeoMLP(dim_in=5, dim_hidden=16, dim_out=2, dim_model=32, depth=2)
y = mlp(x)   # x: (b, 5) -> (b, 2)
```

Shapes: `b` batch, `I` inputs, `H` hidden units, `O` outputs, `d` token width.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from einops import einsum, repeat
from torch import Tensor, nn

from ..models.layers import Encoder


class RandomFourierEmbed(nn.Module):
    r"""$\cos(2\pi (w x + b))$ with a frozen random $w, b$: a scalar to `dim` features."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(1, dim)
        self.proj.requires_grad_(False)

    def forward(self, values: Tensor) -> Tensor:
        return torch.cos(2 * math.pi * self.proj(values[..., None]))  # (..., dim)


class NeoMLP(nn.Module):
    """Inputs `(b, dim_in)` to outputs `(b, dim_out)` through a transformer over the units."""

    def __init__(self, *, dim_in: int, dim_hidden: int, dim_out: int, dim_model: int, depth: int,
                 encoder_kwargs: Optional[dict] = None):
        super().__init__()
        # $E^{\text{in}}, E^{\text{hid}}, E^{\text{out}}$: one learned token per unit
        self.input_embed = nn.Parameter(torch.randn(dim_in, dim_model) * 0.02)
        self.hidden_embed = nn.Parameter(torch.randn(dim_hidden, dim_model) * 0.02)
        self.output_embed = nn.Parameter(torch.randn(dim_out, dim_model) * 0.02)
        self.random_fourier = nn.Sequential(RandomFourierEmbed(dim_model), nn.Linear(dim_model, dim_model))
        kwargs = dict(attn_dim_head=16, heads=4) if encoder_kwargs is None else encoder_kwargs
        self.transformer = Encoder(dim=dim_model, depth=depth, **kwargs)
        # $y_k = \langle W_k, h_k \rangle + c_k$
        self.to_output_weights = nn.Parameter(torch.randn(dim_out, dim_model))
        self.to_output_bias = nn.Parameter(torch.zeros(dim_out))
        self.sizes = (dim_in, dim_hidden, dim_out)

    def forward(self, x: Tensor, return_embeds: bool = False):
        """`(b, dim_in)` (or `(dim_in,)`) to `(b, dim_out)`; with `return_embeds` also the three token groups."""
        if not torch.is_tensor(x) or x.dim() not in (1, 2) or x.shape[-1] != self.sizes[0] or not x.is_floating_point():
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected float inputs (batch, {self.sizes[0]}) or ({self.sizes[0]},), got {got}")
        no_batch = x.dim() == 1
        x = x[None] if no_batch else x
        b = x.shape[0]
        inputs = self.random_fourier(x) + self.input_embed  # (b, I, d)
        hidden, outputs = (repeat(t, "n d -> b n d", b=b) for t in (self.hidden_embed, self.output_embed))
        h = self.transformer(torch.cat((inputs, hidden, outputs), dim=1))  # (b, I + H + O, d): messages among all units
        h_in, h_hid, h_out = h.split(self.sizes, dim=1)
        y = einsum(h_out, self.to_output_weights, "b n d, n d -> b n") + self.to_output_bias  # (b, O)
        y = y[0] if no_batch else y
        return (y, (h_in, h_hid, h_out)) if return_embeds else y
