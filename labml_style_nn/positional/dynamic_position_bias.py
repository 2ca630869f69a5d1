r"""
# Dynamic position bias: a position bias computed by a small network

*Paper:* [CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention](https://arxiv.org/abs/2108.00154) (Wang et al., 2021); the log-spaced distances of [Swin Transformer V2](https://arxiv.org/abs/2111.09883) (Liu et al., 2022)

[T5's bias](t5_bias.md) learns one number per head for each *bucket* of distances, a table whose
size fixes the distances it can tell apart.  CrossFormer instead computes the bias from the
distance itself with a small MLP, so any distance, also one never seen in training, gets a value:

$$B_{h,ij} = \operatorname{MLP}(i - j)_h, \qquad
\operatorname{MLP} = W_{\text{out}} \circ (\operatorname{SiLU} \circ W_L) \circ \dots \circ (\operatorname{SiLU} \circ W_1),$$

added to the scores like any bias, $S_{ij} + B_{h,ij}$.  Swin V2 feeds the network log-spaced
distances, $\operatorname{sign}(d) \log(1 + |d|)$, so that far distances, where a model extrapolates,
are compressed.

* `dynamic_pos_bias=True`: the bias, an MLP of width $D/4$ shared by every self-attention layer.
* `dynamic_pos_bias_mlp_depth` (2): hidden layers $L$ of the MLP.
* `dynamic_pos_bias_log_distance=True`: log-spaced distances.
* `dynamic_pos_bias_norm=True`: a LayerNorm after each hidden linear map.

The MLP runs once per forward pass on the distinct distances ($2n - 1$ of them for $n$ tokens, not
$n^2$) and the bias is gathered from its output.

Tests: `tests/positional/test_stack_positions.py` (the bias depends only on $i - j$; parity with
x-transformers; causal, padding and cached decoding in the input sweep).

Shapes: `h` heads, `i` queries, `j` keys, `w` MLP width ($D/4$).

## Differences from the paper and x-transformers

* CrossFormer uses ReLU and a LayerNorm in each layer of its MLP; x-transformers (and this) uses
  SiLU, with the norms optional.
* x-transformers' first norm has no bias (its own LayerNorm) and the later ones do (PyTorch's);
  the same here, so the weights copy one to one.
* A stack with this bias has no absolute positions by default (like ALiBi and the T5 bias here);
  x-transformers keeps them unless `disable_abs_pos_emb=True`.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..checks import check_positions
from ..keywords import Keyword, declare, rule
from ..norms.layer_norm import LayerNorm

KEYWORDS = declare(__name__, "stack",
    Keyword("dynamic_pos_bias", False, "a position bias per head computed by an MLP of the distance (CrossFormer)"),
    Keyword("dynamic_pos_bias_log_distance", False, "feed the MLP sign(d) log(1 + |d|) instead of d"),
    Keyword("dynamic_pos_bias_mlp_depth", 2, "hidden layers of the dynamic position bias MLP", example=1, minimum=1),
    Keyword("dynamic_pos_bias_norm", False, "LayerNorm after each hidden layer of the dynamic position bias MLP"))


class DynamicPositionBias(nn.Module):
    r"""$B_{h,ij} = \operatorname{MLP}(i - j)_h$, `(1, heads, i, j)` for query and key positions.

    >>> bias = DynamicPositionBias(8, heads=2)(torch.arange(3), torch.arange(3))
    >>> bias.shape, torch.equal(bias[0, :, 1, 0], bias[0, :, 2, 1])   # depends on i - j only
    (torch.Size([1, 2, 3, 3]), True)
    """

    def __init__(self, dim: int, *, heads: int, depth: int = 2, log_distance: bool = False, norm: bool = False):
        super().__init__()
        self.log_distance = log_distance
        layers: list[nn.Module] = []
        for k in range(depth):
            # $\operatorname{SiLU}(\operatorname{Norm}(W_k u))$; the first norm has no bias, as in x-transformers
            layers.append(nn.Linear(1 if k == 0 else dim, dim))
            if norm:
                layers.append(LayerNorm(dim, bias=False) if k == 0 else nn.LayerNorm(dim))
            layers.append(nn.SiLU())
        layers.append(nn.Linear(dim, heads))
        self.mlp = nn.Sequential(*layers)

    def forward(self, q_pos: Tensor, k_pos: Tensor, distances: Optional[Tensor] = None) -> Tensor:
        """The bias between query positions `(i,)` and key positions `(j,)`."""
        check_positions("q_pos", q_pos)
        check_positions("k_pos", k_pos)
        # $d = i - j$ for every pair, and the distinct values between its extremes
        rel = q_pos[:, None] - k_pos[None, :]  # (i, j)
        low = int(rel.min())
        d = torch.arange(low, int(rel.max()) + 1, device=rel.device, dtype=torch.float32)[:, None]  # (u, 1)
        if self.log_distance:
            # $\operatorname{sign}(d) \log(1 + |d|)$
            d = torch.sign(d) * torch.log1p(d.abs())
        first: nn.Linear = self.mlp[0]  # type: ignore[assignment]
        table = self.mlp(d.to(first.weight.dtype))  # (u, h): one row per distinct distance
        return table[rel - low].permute(2, 0, 1)[None]  # (1, h, i, j)


@rule("stack")
def _dynamic_pos_bias_keywords(o) -> None:
    if o.dynamic_pos_bias and (o.rel_pos_bias or o.alibi_pos_emb):
        other = "rel_pos_bias" if o.rel_pos_bias else "alibi_pos_emb"
        raise ValueError(f"dynamic_pos_bias and {other} are both additive position biases; choose one")
    if not o.dynamic_pos_bias:
        for name, default in (("dynamic_pos_bias_log_distance", False), ("dynamic_pos_bias_mlp_depth", 2),
                              ("dynamic_pos_bias_norm", False)):
            if getattr(o, name) != default:
                raise ValueError(f"{name}: only meaningful with dynamic_pos_bias=True")
    if o.dynamic_pos_bias and o.dim < 4:
        raise ValueError(f"dynamic_pos_bias: the MLP is dim // 4 wide, so dim must be at least 4, got {o.dim}")
