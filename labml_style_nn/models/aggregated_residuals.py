r"""
# Attention residuals: each block attends over the earlier layers' states

*Papers:* [arXiv:2601.21582](https://arxiv.org/abs/2601.21582) and [arXiv:2603.15031](https://arxiv.org/abs/2603.15031), as cited by x-transformers

The residual stream hands each block one fixed sum of everything written before it.  Attention
residuals let each block *choose*, per token, which earlier states to read, with a small attention
over depth instead of over positions: the query is the current state, the keys are the states at
the inputs of the earlier sublayers, the values are those states themselves,

$$\begin{aligned}
q &= \operatorname{RMSNorm}_3\!\big(x^{(l)} + B\, A\, \operatorname{RMSNorm}_1(x^{(l)})\big), \qquad
\kappa_k = \operatorname{RMSNorm}_2(x^{(k)}), \\
x^{(l)}_{\text{in}} &= \sum_{k \le l} \operatorname{softmax}_k\!\left(\frac{q^\top \kappa_k}{\sqrt D}\right) x^{(k)},
\end{aligned}$$

where $A \in \mathbb R^{r \times D}$, $B \in \mathbb R^{D \times r}$ is a low-rank correction ($B = 0$
at first, so the query starts as the normalised current state).  Unlike [LIMe](layer_integration.md),
whose weights are a learned projection of the current state onto a fixed list of layers, the
weights here come from comparing the current state with each earlier one, so the same module
serves any depth.  The residual stream itself is unchanged.

`attn_aggregated_residuals=True` turns it on; `attn_aggregated_residual_kwargs` takes `lora_rank`
($r$, default 64, below the model width) and `lora_activation` (a module between $A$ and $B$,
default none).  Everything is computed token by token, so cached decoding works, and a
Transformer-XL memory (the attention layers' branch inputs over the earlier tokens) is what the full
pass computes for those tokens.

Tests: `tests/residual/test_res_stream.py` (the invariant sweeps, cached decoding, XL memory,
weight-copied parity with x-transformers).

Shapes: `b` batch, `n` tokens, `D` model width, `l` sublayers so far.

## Differences from the papers

* The formula above is x-transformers' (its docstring: "attention over all preceding hiddens, with
  the query conditioned on the latest hidden through a low-rank residual"); the papers themselves
  were not available to this page's author, so it teaches the code, not the papers.

## Differences from x-transformers

* x-transformers silently ignores a numeric `depth_scale_residual` with attention residuals; here
  the combination is refused.
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import einsum
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from ..norms.rms_norm import RMSNorm

KEYWORDS = declare(__name__, "stack",
    Keyword("attn_aggregated_residuals", False,
            "each block attends over the earlier sublayers' inputs to choose what it reads"),
    Keyword("attn_aggregated_residual_kwargs", {}, "settings of attn_aggregated_residuals: lora_rank (int, "
            "default 64), lora_activation (a module)", example={"lora_rank": 8}))

_SETTINGS = ("lora_rank", "lora_activation")


class AggregatedResidual(nn.Module):
    r"""Attention over the earlier inputs $x^{(k)}$ with the query from the current one."""

    def __init__(self, dim: int, lora_rank: int = 64, lora_activation: Optional[nn.Module] = None):
        super().__init__()
        self.scale = dim ** -0.5
        self.query_norm, self.key_norm, self.norm = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)
        self.down = nn.Linear(dim, lora_rank, bias=False)
        self.up = nn.Linear(lora_rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)  # $B = 0$: the query starts as the normalised current state
        self.activation = lora_activation if lora_activation is not None else nn.Identity()

    def forward(self, x: Tensor, hiddens: tuple[Tensor, ...]) -> Tensor:
        """`x` `(b, n, D)` (the current input, the last of `hiddens`) to `(b, n, D)`."""
        stacked = torch.stack(hiddens)  # (l, b, n, D)
        # $q = \operatorname{RMSNorm}(x + B A \operatorname{RMSNorm}(x))$, $\kappa_k = \operatorname{RMSNorm}(x^{(k)})$
        q = self.norm(x + self.up(self.activation(self.down(self.query_norm(x)))))
        keys = self.key_norm(stacked)
        # $\operatorname{softmax}_k(q^\top \kappa_k / \sqrt D)$
        weights = (einsum(q, keys, "b n d, l b n d -> l b n") * self.scale).softmax(dim=0)
        # $\sum_k w_k x^{(k)}$
        return einsum(weights, stacked, "l b n, l b n d -> b n d")


def make_aggregations(o, kinds: tuple[str, ...]) -> nn.ModuleList:
    """One attention residual per sublayer."""
    settings = o.attn_aggregated_residual_kwargs
    return nn.ModuleList(AggregatedResidual(o.dim, settings.get("lora_rank", 64), settings.get("lora_activation"))
                         for _ in kinds)


@rule("stack")
def _aggregated_keywords(o) -> None:
    settings = o.attn_aggregated_residual_kwargs
    if not o.attn_aggregated_residuals:
        if settings:
            raise ValueError("attn_aggregated_residual_kwargs: only meaningful with attn_aggregated_residuals=True")
        return
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"attn_aggregated_residual_kwargs: unknown settings {unknown}; expected {', '.join(_SETTINGS)}")
    rank = settings.get("lora_rank", 64)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 < rank < o.dim:
        raise ValueError(f"attn_aggregated_residual_kwargs: lora_rank must be an integer in 1..dim-1 ({o.dim - 1}), "
                         f"got {rank!r}")
    activation = settings.get("lora_activation")
    if activation is not None and not isinstance(activation, nn.Module):
        raise ValueError(f"attn_aggregated_residual_kwargs: lora_activation must be an nn.Module, got {activation!r}")
    for name in ("integrate_layers", "gate_residual", "orthog_residual", "num_residual_streams",
                 "qkv_receive_diff_residuals", "layers_execute_order", "weight_tie_layers", "reversible",
                 "layer_dropout", "unet_skips"):
        value = getattr(o, name)
        off = value == 1 if name == "num_residual_streams" else value is None or value is False or (
            not isinstance(value, bool) and value == 0)
        if not off:
            raise ValueError(f"attn_aggregated_residuals and {name} cannot be combined: " + (
                "each decides what the blocks read or how they add; use one"
                if name in ("integrate_layers", "gate_residual", "orthog_residual", "num_residual_streams",
                            "qkv_receive_diff_residuals", "unet_skips")
                else "each sublayer reads the inputs of the sublayers built before it, each run once"))
    if not isinstance(o.depth_scale_residual, bool):
        raise ValueError("attn_aggregated_residuals and depth_scale_residual (a number) cannot be combined: "
                         "x-transformers ignores the scale with attention residuals")
