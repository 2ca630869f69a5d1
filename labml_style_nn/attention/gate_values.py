r"""
# Gated attention: gating the aggregated values

*Papers:* [Gated Attention for Large Language Models: Non-linearity, Sparsity, and Attention-Sink-Free](https://arxiv.org/abs/2505.06708) (Qiu et al., 2025);
the hybrid gated attention (HyGA) that x-transformers 2.31 cites, [arXiv:2608.11805](https://arxiv.org/abs/2608.11805);
first in [AlphaFold 2](https://doi.org/10.1038/s41586-021-03819-2) (Jumper et al., 2021)

Attention's output is a weighted average of values followed by a linear projection: from the
values to the residual stream the layer is linear, and a softmax row that must sum to one forces a
head with nothing to say to say *something* (often by staring at the first token, an "attention
sink").  Gated attention multiplies each head's aggregated values by a gate computed per token,
before the output projection:

$$o_{hi} = \phi\big(\ell_{hi}\big) \odot \sum_j A_{hij} v_{hj},$$

with $\phi$ a sigmoid (or SiLU, `attn_swiglu_values=True`, which makes the pair a SwiGLU).  Qiu et
al. compare gating positions and find this one, after the attention and gated from the layer's
input, the best: it adds a non-linearity between $W_V$ and $W_O$, and a sparse gate lets a head
return (close to) nothing, which removes the attention sink.  The gate logit $\ell$ is a sum of
two parts, either one optional:

* from the layer's input $x$ (`attn_gate_values=True`), the gate of Qiu et al. and of AlphaFold:
  $\ell^x_{hi} = x_i W^x_h$;
* from the aggregated values themselves (`attn_output_gate=True`), HyGA's "output gate":
  $\ell^o_{hi} = \hat o_i W^o_h$, $\hat o_i$ all heads' outputs side by side.

Each part is either one logit per head and feature ($W$ of width $h d$) or, with
`attn_gate_values_headwise=True` / `attn_output_gate_headwise=True`, one per head that multiplies
all of the head's features; and either a full matrix or, with `attn_gate_values_rank=r` /
`attn_output_gate_rank=r`, a low-rank product $W = W_\downarrow W_\uparrow$ with a SiLU between
the two factors (`attn_low_rank_silu_gates`, on by default).  The last matrix of each part starts
at zero, so every gate starts at $\phi(0)$: $\sigma(0) = \tfrac12$, the layer's output halved, or
$\operatorname{SiLU}(0) = 0$, the layer silent, which x-transformers accepts as it is.

In numbers: with $D = 512$, $h = 8$, $d = 64$, the full input gate has $512 \times 512 = 262{,}144$
weights, a rank-16 one $512 \times 16 + 16 \times 512 = 16{,}384$, a headwise one $512 \times 8 =
4{,}096$.

The gate acts after the weighted sum: the scores are untouched and the fused kernel stays in use.
In cross-attention the input gate reads the queries' side $x$, never the context.  It plugs into
the `output_gate` point of [attention](attention.md), after [head scale](head_scale.md) and the
[head gate](head_gate.md), as in x-transformers.  Tests: `tests/attention/test_attn_gating.py`
(closed forms at initialisation and with random weights, parity with x-transformers' weights).

Shapes: `b` batch, `n` tokens, `h` heads, `d` value dim per head, `D` model width, `r` rank.

## Differences from the papers

* Qiu et al. and AlphaFold give the input gate a bias; x-transformers 2.31 does not, and neither
  do we by default.  AlphaFold's form, a bias that starts every gate open, is
  `attn_gate_values_bias=10.0` (this library's keyword): zero weights, bias 10, so the layer starts
  as plain attention up to $\sigma(10) = 0.99995$.  Before 2.31, x-transformers' `gate_values` was
  that form, and so was this library's; `attn_gate_values=True` alone now means what x-transformers
  2.31 means (gates start at $\tfrac12$).
* The older keyword spelling `gate_values=True` is accepted as `attn_gate_values=True`.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("gate_values", False, "gate each head's output with a function of the layer's input (gated attention)"),
    Keyword("gate_values_rank", None, "a low-rank input gate of this rank (None: a full matrix)", type=int,
            minimum=1, example=4),
    Keyword("gate_values_headwise", False, "one input gate per head instead of per feature"),
    Keyword("output_gate", False, "add a gate logit computed from the heads' outputs themselves (HyGA)"),
    Keyword("output_gate_rank", None, "a low-rank output gate of this rank (None: a full matrix)", type=int,
            minimum=1, example=4),
    Keyword("output_gate_headwise", False, "one output gate per head instead of per feature"),
    Keyword("low_rank_silu_gates", True, "a SiLU between the two factors of a low-rank gate"),
    Keyword("swiglu_values", False, "SiLU instead of a sigmoid on the gate logits (a SwiGLU on the values)"),
    Keyword("gate_values_bias", None, "a bias on the input gate, initialised to this (AlphaFold: 10)", type=float,
            example=10.0, xtransformers=False))


@rule("attn")
def _gate_options_need_their_gate(a, prefix: str, o) -> None:
    for name, needs in (("gate_values_rank", "gate_values"), ("gate_values_headwise", "gate_values"),
                        ("gate_values_bias", "gate_values"), ("output_gate_rank", "output_gate"),
                        ("output_gate_headwise", "output_gate")):
        if getattr(a, name) not in (None, False) and not getattr(a, needs):
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}{needs}=True")
    for which in ("gate_values", "output_gate"):
        if getattr(a, which + "_rank") is not None and getattr(a, which + "_headwise"):
            raise ValueError(f"{prefix}{which}_rank and {prefix}{which}_headwise: a headwise gate projects "
                             "straight to one logit per head; choose one")
    if a.swiglu_values and not (a.gate_values or a.output_gate):
        raise ValueError(f"{prefix}swiglu_values: only meaningful with {prefix}gate_values or {prefix}output_gate")
    if not a.low_rank_silu_gates and a.gate_values_rank is None and a.output_gate_rank is None:
        raise ValueError(f"{prefix}low_rank_silu_gates=False: only meaningful with {prefix}gate_values_rank or "
                         f"{prefix}output_gate_rank")


class GateLogits(nn.Module):
    r"""$u W$ with $W$ a matrix starting at zero, or $\psi(u W_\downarrow) W_\uparrow$ with $W_\uparrow$ at zero.

    >>> import torch
    >>> GateLogits(6, 4, rank=2)(torch.randn(3, 6)).abs().max().item()   # zero at initialisation
    0.0

    Args:
        dim_in: input width.
        dim_out: number of logits.
        rank: the rank $r$ of a low-rank $W$ (`None`: a full matrix).
        silu: $\psi$ = SiLU between the two factors of a low-rank $W$ (else the identity).
        bias: a bias on the full matrix, initialised to this value (`None`: no bias).
    """

    def __init__(self, dim_in: int, dim_out: int, *, rank: Optional[int] = None, silu: bool = True,
                 bias: Optional[float] = None):
        super().__init__()
        if rank is not None and not (rank < dim_in or rank < dim_out):
            raise ValueError(f"gate rank: expected less than the input ({dim_in}) or output ({dim_out}) width, "
                             f"got {rank}")
        if rank is not None and bias is not None:
            raise ValueError("gate_values_bias: the bias belongs to a full input gate, not a low-rank one")
        self.silu = silu
        self.down = nn.Linear(dim_in, rank, bias=False) if rank is not None else None  # $W_\downarrow$
        self.proj = nn.Linear(dim_in if rank is None else rank, dim_out, bias=bias is not None)  # $W$ or $W_\uparrow$
        nn.init.zeros_(self.proj.weight)
        if self.proj.bias is not None:
            nn.init.constant_(self.proj.bias, float(bias))  # type: ignore[arg-type]

    def forward(self, u: Tensor) -> Tensor:
        if self.down is not None:
            # $\psi(u W_\downarrow)$, the rank-$r$ bottleneck
            u = self.down(u)
            u = F.silu(u) if self.silu else u  # (..., r)
        return self.proj(u)


class ValueGate(nn.Module):
    r"""The gate $\phi(\ell^x + \ell^o)$ on the heads' aggregated values (an output gate).

    >>> import torch
    >>> gate = ValueGate(8, heads=2, dim_head=4)
    >>> out = torch.ones(1, 2, 3, 4)
    >>> gate(out, torch.randn(1, 3, 8)).unique().tolist()   # sigma(0) at initialisation
    [0.5]

    Args:
        dim: model width $D$ of the input $x$.
        heads: number of heads $h$.
        dim_head: width $d$ of each head's values.
        from_input: a logit from $x$ (`attn_gate_values`).
        input_rank, input_headwise: its rank, or one logit per head.
        from_output: a logit from the heads' outputs (`attn_output_gate`).
        output_rank, output_headwise: its rank, or one logit per head.
        low_rank_silu: a SiLU inside the low-rank gates.
        silu: $\phi$ = SiLU (`attn_swiglu_values`), else a sigmoid.
        input_bias: a bias on the input gate starting at this value (AlphaFold's 10).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, *, from_input: bool = True,
                 input_rank: Optional[int] = None, input_headwise: bool = False, from_output: bool = False,
                 output_rank: Optional[int] = None, output_headwise: bool = False, low_rank_silu: bool = True,
                 silu: bool = False, input_bias: Optional[float] = None):
        super().__init__()
        self.heads, self.silu = heads, silu
        self.input_headwise, self.output_headwise = input_headwise, output_headwise
        inner = heads * dim_head
        # $W^x$: $D \to h d$, or $D \to h$ headwise
        self.to_gate = GateLogits(dim, heads if input_headwise else inner, rank=input_rank, silu=low_rank_silu,
                                  bias=input_bias) if from_input else None
        # $W^o$: $h d \to h d$, or $h d \to h$ headwise
        self.to_output_gate = GateLogits(inner, heads if output_headwise else inner, rank=output_rank,
                                         silu=low_rank_silu) if from_output else None

    def _head_space(self, logits: Tensor, headwise: bool) -> Tensor:
        if headwise:
            return rearrange(logits, "b n h -> b h n 1")  # one logit per head, broadcast over $d$
        return rearrange(logits, "b n (h d) -> b h n d", h=self.heads)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        """Gate the heads' outputs `out` `(b, h, n, d)` with gates computed from `x` `(b, n, D)` and `out`."""
        logits = None
        if self.to_gate is not None:
            # $\ell^x_{hi} = x_i W^x_h$
            logits = self._head_space(self.to_gate(x), self.input_headwise)
        if self.to_output_gate is not None:
            # $\ell^o_{hi} = \hat o_i W^o_h$, $\hat o_i$ the heads' outputs side by side
            from_out = self._head_space(self.to_output_gate(rearrange(out, "b h n d -> b n (h d)")),
                                        self.output_headwise)
            logits = from_out if logits is None else logits + from_out
        assert logits is not None  # at least one of the two gates exists
        # $o_{hi} \leftarrow \phi(\ell_{hi}) \odot o_{hi}$
        return out * (F.silu(logits) if self.silu else logits.sigmoid())  # (b, h, n, d)
