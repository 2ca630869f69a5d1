r"""
# RMSNorm

*Paper:* [Root Mean Square Layer Normalization](https://arxiv.org/abs/1910.07467) (Zhang & Sennrich, 2019)

RMSNorm is LayerNorm without the mean subtraction and the bias.  It only rescales each vector by
its root mean square and applies a learned gain per feature:

$$\operatorname{RMSNorm}(x) = \frac{x}{\sqrt{\frac{1}{D} \sum_k x_k^2 + \epsilon}} \odot \gamma.$$

The paper finds re-scaling invariance is what LayerNorm contributes; re-centring can go: its
models train to the same quality while running 7-64% faster overall (the paper's figures, on
GPUs of 2019; the saving is in the norm, so its share of the total depends on the model).

`use_rmsnorm=True` puts it everywhere a stack has a norm, like `use_scalenorm`; the two differ in
their gain: one scalar for ScaleNorm, one per feature here.  `norm_eps` sets $\epsilon$
($10^{-6}$ by default).  `use_simple_rmsnorm=True` drops the gain altogether,
$\operatorname{SimpleRMSNorm}(x) = x / \sqrt{\frac1D \sum_k x_k^2 + \epsilon}$: no parameters at all,
the gains left to the projections that follow.  With `norm_add_unit_offset` (the default) the stored
gain is $\gamma - 1$ ([LayerNorm](layer_norm.md) explains why).

This is exactly the norm T5 calls its LayerNorm, and LLaMA's RMSNorm: $\epsilon$ inside the square
root, no mean, no bias, no extra factor (a test compares it with T5's in Hugging Face
`transformers`).  Written as $\sqrt{D}\, x / \lVert x \rVert_2$ instead, as x-transformers does,
it is the same function except for where $\epsilon$ goes.

Tests: `test_rms_norm_closed_form` and `test_rescaling_invariant_but_not_recentring` in `tests/norms/test_norms.py`; [residual blocks](../residual/residual.md) shows where a stack puts its norms.

**Few operators.**  In decoding a norm sees one token, and its cost is the number of operators
called, not the arithmetic.  `F.rms_norm` is a composite on the CPU (about twenty operator calls:
casts, a mean that is a sum and a division, the $\epsilon$ wrapped into a tensor at every call), and
a Python number as an operand costs a conversion per call too.  `rms_norm` below writes the same
arithmetic in six operators, with $D$ and $\epsilon$ kept as tensors: the same numbers as
`F.rms_norm` and as Hugging Face's `LlamaRMSNorm`, bit for bit (tested), in three quarters of the
time (one token of width 256 on a 2-core CPU: 6.3 µs against 8.4 µs, and 9.6 µs for the lines
`transformers` writes out).  Under `torch.compile` and `torch.jit.trace` the plain lines run (a
compiler fuses them).

Shapes: `D` model width; any leading axes.

## Differences from the paper

* No bias term (the paper's optional $\beta$), and $\epsilon$ sits inside the square root.
* x-transformers' `SimpleRMSNorm` is $\sqrt D\, x / \max(\lVert x \rVert_2, 10^{-12})$, ours puts
  $\epsilon$ inside the root; the two agree within $10^{-5}$ for vectors that are not tiny.
* The partial variant (pRMSNorm, the RMS estimated from the first $p\%$ of features) is not implemented.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..checks import check_tensor
from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("use_rmsnorm", False, "RMSNorm instead of LayerNorm everywhere"),
    Keyword("use_simple_rmsnorm", False, "RMSNorm without a gain everywhere"))


# Constant tensors by (value, dtype, device), made once: an operand given as a Python number is
# converted to a tensor at every call, which costs as much as the operator itself.
_CONSTANTS: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}


def constant_tensor(value: float, like: Tensor) -> Tensor:
    """`value` as a 0-d tensor of the dtype and device of `like`, made once and kept."""
    key = (value, like.dtype, like.device)
    c = _CONSTANTS.get(key)
    if c is None:
        # An ordinary tensor even under `torch.inference_mode()`, so that autograd may save it later.
        with torch.inference_mode(False):
            c = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return c


def rms_norm(x: Tensor, gamma: Optional[Tensor], eps: float) -> Tensor:
    r"""$x / \sqrt{\frac1D \sum_k x_k^2 + \epsilon}\ (\odot\, \gamma)$ over the last axis, in the dtype of `x`.

    The operations of `F.rms_norm` (and of Hugging Face's `LlamaRMSNorm`) in the same order, so the
    same numbers; fewer operator calls.

    >>> [round(v, 4) for v in rms_norm(torch.tensor([3.0, 4.0]), None, 0.0).tolist()]
    [0.8485, 1.1314]
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # pyright: ignore[reportPrivateImportUsage]
        # A compiler fuses the lines into one kernel, and a trace records them (a trace would take
        # the kept constants for values of its own); the constant tensors are not needed there.
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
        return y if gamma is None else y * gamma
    return rms_norm_eager(x, gamma, constant_tensor(eps, x), constant_tensor(x.shape[-1], x))


def rms_norm_eager(x: Tensor, gamma: Optional[Tensor], eps: Tensor, dim: Tensor) -> Tensor:
    r"""`rms_norm` outside a compiler, with $\epsilon$ and $D$ given as tensors of the dtype of `x`
    (the decoding step's plan looks them up once per generation)."""
    sum_sq = (x * x).sum(dim=-1, keepdim=True)  # (..., 1)
    # $1 / \sqrt{\epsilon + \frac1D \sum_k x_k^2}$ (`addcdiv`: $\epsilon$ plus a quotient in one operator;
    # the inverse root in place, autograd keeps its result)
    inv_rms = torch.addcdiv(eps, sum_sq, dim).rsqrt_()  # (..., 1)
    y = x * inv_rms  # (..., D)
    if gamma is None:
        return y
    # $\odot\, \gamma$: in place without autograd; with it, the product before the gain is kept for $\gamma$'s gradient
    return y.mul_(gamma) if not torch.is_grad_enabled() else y * gamma


class RMSNorm(nn.Module):
    r"""Divide by the root mean square of the features, then scale each feature by $\gamma_k$.

    >>> y = RMSNorm(2, eps=0.0)(torch.tensor([3.0, 4.0]))   # RMS = sqrt(12.5) = 3.5355
    >>> [round(v, 4) for v in y.tolist()]
    [0.8485, 1.1314]
    """

    def __init__(self, dim: int, eps: float = 1e-6, *, unit_offset: bool = False):
        super().__init__()
        self.eps = eps
        # `unit_offset`: $\gamma = 1 + \gamma'$ with $\gamma'$ stored ([LayerNorm](layer_norm.md) explains why)
        self.unit_offset = float(unit_offset)
        self.gamma = nn.Parameter(torch.full((dim,), 1.0 - self.unit_offset))

    def forward(self, x: Tensor) -> Tensor:
        dim = self.gamma.shape[0]
        if x.shape[-1] != dim or not x.is_floating_point():
            check_tensor("x", x, f"(..., {dim})", kind="float", sizes={-1: dim})
        if x.dtype == torch.float32 and self.gamma.dtype == torch.float32 and not self.unit_offset:
            # In float32 the gain joins the same few operators (the numbers of the lines below, bit for bit)
            return rms_norm(x, self.gamma, self.eps)
        # $x / \mathrm{RMS}(x)$, in float32
        xf = rms_norm(x.float(), None, self.eps)  # (..., D)
        # $\odot\, \gamma$
        gamma = self.gamma + self.unit_offset if self.unit_offset else self.gamma
        return xf.to(x.dtype) * gamma.to(x.dtype)


class SimpleRMSNorm(nn.Module):
    r"""RMSNorm without a gain: $x / \mathrm{RMS}(x)$, every vector on the sphere of radius $\sqrt D$.

    >>> [round(v, 4) for v in SimpleRMSNorm(2)(torch.tensor([3.0, 4.0])).tolist()]
    [0.8485, 1.1314]
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, f"(..., {self.dim})", kind="float", sizes={-1: self.dim})
        # $x / \mathrm{RMS}(x)$, in float32
        return rms_norm(x.float(), None, self.eps).to(x.dtype)
