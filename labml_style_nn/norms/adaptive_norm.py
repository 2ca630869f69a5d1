r"""
# Adaptive norms and adaptive LayerScale: conditioning a stack on a vector

*Paper:* [Scalable Diffusion Models with Transformers](https://arxiv.org/abs/2212.09748) (Peebles & Xie, 2023; DiT)

A diffusion transformer must know the noise level and the class of the image it denoises.  DiT
compares ways of feeding such a condition vector $c$ into a transformer and finds the best to be
the simplest: let $c$ set the gains of the norms (adaptive layer norm, adaLN), and gate each
branch with a scale regressed from $c$ that starts at zero (adaLN-Zero):

$$x \leftarrow x + \alpha(c) \odot F\big(\operatorname{Norm}(x) \odot (1 + \gamma(c)) + \beta(c)\big),
\qquad \gamma, \beta, \alpha \text{ linear in } c.$$

The condition costs a few linear maps per block, no extra tokens, and every token of every layer
sees it.

x-transformers keeps the gain, drops the shift, and gates with a sigmoid; so does this file:

$$\operatorname{AdaNorm}(x, c) = \operatorname{Norm}(x) \odot (1 + W_\gamma c), \qquad
\operatorname{AdaScale}(F, c) = F \odot \sigma(W_\alpha c + b_\alpha),$$

with $W_\gamma = 0$ and $W_\alpha = 0$, $b_\alpha = -2$ at initialisation: the norms start as plain
norms and every branch starts scaled by $\sigma(-2) \approx 0.12$.

* `use_adaptive_layernorm=True`: every norm of the stack is $\operatorname{LN}(x) \odot (1 + W_\gamma c)$
  (LayerNorm without its own gain or bias).
* `use_adaptive_rmsnorm=True`: the same with RMSNorm.
* `use_adaptive_layerscale=True`: every branch output is gated by $\sigma(W_\alpha c + b_\alpha)$.
* `dim_condition`: the width of $c$ (default: `dim`).  Without an adaptive norm or scale it has no
  effect: x-transformers ignores it, and here a `UserWarning` says so.
* `adaptive_condition_mlp=True`: $c$ first goes through $\operatorname{SiLU}(W c)$, widening it by
  `adaptive_condition_mlp_expansion` (4), once per forward pass, shared by every layer.

The condition is passed at call time: `stack(x, condition=c)` with `c` of shape `(b, dim_condition)`
(one vector per sequence) or `(b, n, dim_condition)` (one per token).  A stack with an adaptive
norm or scale needs it; any other stack refuses it.

Tests: `tests/norms/test_adaptive_norm.py` (zero initialisation gives a plain norm, the condition
changes the output, parity with x-transformers, cached decoding equals the full pass).

Shapes: `b` batch, `n` tokens, `D` model width, `C` condition width.

## Differences from the paper

* DiT's adaLN also regresses a shift $\beta(c)$ and gates with a zero-initialised linear $\alpha(c)$;
  here (as in x-transformers) there is no shift, and the gate is a sigmoid starting at $0.12$.
* DiT regresses all of a block's modulations from $\operatorname{SiLU}(c)$ with one linear map; here
  each norm and gate has its own map, and the optional shared MLP is bias-free.
"""

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_tensor
from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("use_adaptive_layernorm", False, "LayerNorm gains regressed from a condition vector (DiT's adaLN)"),
    Keyword("use_adaptive_rmsnorm", False, "RMSNorm gains regressed from a condition vector"),
    Keyword("use_adaptive_layerscale", False,
            "gate each branch by sigmoid(W c + b) of a condition vector (DiT's adaLN-Zero gate)"),
    Keyword("dim_condition", None, "width of the condition vector (default: dim)", type=int, example=8),
    Keyword("adaptive_condition_mlp", False, "pass the condition through SiLU(W c) once before the norms"),
    Keyword("adaptive_condition_mlp_expansion", 4, "how much the condition MLP widens the condition",
            example=2, minimum=1))


class AdaptiveNorm(nn.Module):
    r"""$\operatorname{Norm}(x) \odot (1 + W_\gamma c)$ with $W_\gamma = 0$ at initialisation.

    `rms=True` for RMSNorm, else LayerNorm (neither has a gain of its own).

    >>> n = AdaptiveNorm(2, 3)
    >>> [round(v, 4) for v in n(torch.tensor([[1.0, 3.0]]), condition=torch.ones(1, 3))[0].tolist()]   # W = 0
    [-1.0, 1.0]
    """

    needs_condition = True

    def __init__(self, dim: int, dim_condition: int, *, rms: bool = False, eps: Optional[float] = None):
        super().__init__()
        self.dim, self.rms = dim, rms
        self.eps = eps if eps is not None else (1e-6 if rms else 1e-5)
        self.to_gamma = nn.Linear(dim_condition, dim, bias=False)
        nn.init.zeros_(self.to_gamma.weight)

    def forward(self, x: Tensor, *, condition: Tensor) -> Tensor:
        if self.rms:
            xf = x.float()
            # $x / \mathrm{RMS}(x)$
            normed = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        else:
            # $(x - \mu) / \sigma$
            normed = F.layer_norm(x, (self.dim,), eps=self.eps)
        # $\odot\, (1 + W_\gamma c)$, $c$ `(b, 1|n, C)`
        return normed * (1.0 + self.to_gamma(condition))


class AdaptiveLayerScale(nn.Module):
    r"""$F \odot \sigma(W_\alpha c + b_\alpha)$ with $W_\alpha = 0$, $b_\alpha = -2$ at initialisation.

    >>> g = AdaptiveLayerScale(2, 3)
    >>> [round(v, 4) for v in g(torch.ones(1, 1, 2), condition=torch.ones(1, 1, 3)).flatten().tolist()]
    [0.1192, 0.1192]
    """

    needs_condition = True

    def __init__(self, dim: int, dim_condition: int, init_bias: float = -2.0):
        super().__init__()
        self.to_gate = nn.Linear(dim_condition, dim)
        nn.init.zeros_(self.to_gate.weight)
        nn.init.constant_(self.to_gate.bias, init_bias)

    def forward(self, branch: Tensor, *, condition: Tensor) -> Tensor:
        # $F \odot \sigma(W_\alpha c + b_\alpha)$
        return branch * torch.sigmoid(self.to_gate(condition))


class ConditionMLP(nn.Module):
    r"""$c \mapsto \operatorname{SiLU}(W c)$, widening $c$ by `expansion`; once per forward pass."""

    def __init__(self, dim_condition: int, expansion: int):
        super().__init__()
        self.proj = nn.Linear(dim_condition, dim_condition * expansion, bias=False)

    def forward(self, condition: Tensor) -> Tensor:
        return F.silu(self.proj(condition))


def needs_condition(o) -> bool:
    """True when some norm or gate of the stack reads the condition vector."""
    return o.use_adaptive_layernorm or o.use_adaptive_rmsnorm or o.use_adaptive_layerscale


def condition_width(o) -> int:
    """Width of the condition as the norms see it (after the optional MLP)."""
    base = o.dim_condition or o.dim
    return base * o.adaptive_condition_mlp_expansion if o.adaptive_condition_mlp else base


def prepare_condition(condition: Optional[Tensor], needed: bool, dim_condition: int, b: int, n: int,
                      mlp: Optional[nn.Module]) -> Optional[Tensor]:
    """Check the call-time condition and bring it to `(b, 1|n, C)`, through the MLP if there is one."""
    if not needed:
        if condition is not None:
            raise ValueError("condition: this stack has no adaptive norm or scale to read it (set "
                             "use_adaptive_layernorm, use_adaptive_rmsnorm or use_adaptive_layerscale)")
        return None
    if condition is None:
        raise ValueError(f"condition: this stack has adaptive norms or scales and needs a condition of shape "
                         f"(batch, {dim_condition}) or (batch, seq_len, {dim_condition})")
    check_tensor("condition", condition, f"({b}, {dim_condition}) or ({b}, {n}, {dim_condition})", kind="float")
    if condition.dim() == 2:
        condition = condition[:, None]  # (b, 1, C): one vector per sequence
    if condition.dim() != 3 or condition.shape[0] != b or condition.shape[-1] != dim_condition \
            or condition.shape[1] not in (1, n):
        raise ValueError(f"condition: expected shape ({b}, {dim_condition}) or ({b}, {n}, {dim_condition}), "
                         f"got {tuple(condition.shape)}")
    return mlp(condition) if mlp is not None else condition


@rule("stack")
def _condition_keywords(o) -> None:
    if o.use_adaptive_layernorm and o.use_adaptive_rmsnorm:
        raise ValueError("use_adaptive_layernorm and use_adaptive_rmsnorm: choose one normalisation, not both")
    if not needs_condition(o):
        if o.dim_condition is not None:
            # x-transformers accepts and ignores it; the library never ignores a keyword silently.
            warnings.warn("dim_condition: has no effect without use_adaptive_layernorm, use_adaptive_rmsnorm or "
                          "use_adaptive_layerscale (x-transformers ignores it too)", UserWarning, stacklevel=2)
        for name, default in (("adaptive_condition_mlp", False),
                              ("adaptive_condition_mlp_expansion", 4)):
            if getattr(o, name) != default:
                raise ValueError(f"{name}: only meaningful with use_adaptive_layernorm, use_adaptive_rmsnorm "
                                 "or use_adaptive_layerscale")
    elif o.adaptive_condition_mlp_expansion != 4 and not o.adaptive_condition_mlp:
        raise ValueError("adaptive_condition_mlp_expansion: only meaningful with adaptive_condition_mlp=True")
