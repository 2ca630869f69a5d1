r"""
# Mean-variance split residuals

*Paper:* [Mean Mode Screaming: Mean-Variance Split Residuals for 1000-Layer Diffusion Transformers](https://arxiv.org/abs/2605.06169) (Lu, 2026)

Attention averages its values with weights that sum to one, so a state in which every token holds
the same vector (the token mean) passes through it unchanged.  Stacked hundreds of layers deep, the
paper finds the residual writes drifting into that mean direction: the tokens become alike, the
centred part that tells them apart shrinks, and training collapses.  MV-Split treats the two parts
of each update differently.  The centred part of the branch output is added with a small learned
gain $\beta$; the token mean of the stream is not added to but *leakily replaced*, moved a fraction
$\alpha$ of the way towards the branch's mean:

$$x' = x + \beta \odot \big(F - \bar F\big) + \alpha \odot \big(\bar F - \bar x\big),
\qquad \bar x' = (1 - \alpha) \odot \bar x + \alpha \odot \bar F,$$

where $\bar F$ and $\bar x$ are the means of the branch output and of the stream over the tokens
(padding left out), and $x' - \bar x' = (x - \bar x) + \beta \odot (F - \bar F)$.  By default
$\alpha = 0$ (the stream's mean never moves) and $\beta = 0.03$, one value per feature, learned.
`residual_fn_kwargs=dict(learned=True)` makes them functions of the branch mean instead,
$\alpha = W_\alpha \bar F + b_\alpha$, $\beta = W_\beta \bar F + b_\beta$ (with $W = 0$ at first);
`init_alpha` and `init_beta` set the starting values.

**In a decoder the mean is causal.**  The paper's diffusion transformer sees the whole sequence.
A language model's token $i$ may not read tokens after it, so here the means at token $i$ are over
the tokens $j \le i$ that it attends to:

$$\bar F_i = \frac{\sum_{j \le i} m_j F_j}{\sum_{j \le i} m_j}$$

($m_j = 0$ for padding); an encoder uses the mean over every real token, as the paper does.  A
cached step would need every earlier token's running sums, which the key/value cache does not keep:
`cache=` and Transformer-XL memories are refused with this keyword, and `generate` decodes without a
cache.

`residual_fn_kwargs` is x-transformers' way of passing arguments to the residual of each block: here
`init_alpha`, `init_beta` and `learned`, and `read_gate_rank` for
[gated multi residuals](gated_multi_residual.md).

Tests: `tests/residual/test_mv_split_and_gated_multi.py` (the formula, the invariant sweeps,
weight-copied parity with x-transformers on an encoder, and its decoder reading the future).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from the paper

* The paper gives the mean path and the centred path separate gains and studies a diffusion
  transformer; the causal (prefix) mean for decoders is this library's.

## Differences from x-transformers

* x-transformers 2.31.10 takes the mean over the whole sequence in a `Decoder` too, so each token's
  output depends on later tokens (a test shows it); here a decoder's mean is causal.  Encoders agree
  with x-transformers given the same weights.
* x-transformers ignores `residual_fn_kwargs` that its residual does not read, and
  `scale_residual` with this residual; here both are a `ValueError` with MV-Split.  With a residual that
  reads none (the plain one, hyper-connections), `residual_fn_kwargs` is a `UserWarning` saying it has no
  effect, since x-transformers' `HyperConnection` and `Residual` accept any arguments (`**kwargs`).
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("mv_split_residual", False,
            "MV-Split: add the centred branch output with a gain and move the stream's token mean towards the "
            "branch's"),
    Keyword("residual_fn_kwargs", {}, "arguments of each block's residual (MV-Split's init_alpha, init_beta, "
            "learned; the gated multi residual's read_gate_rank)", type=dict, example={"init_beta": 0.1}))

# What each residual reads from `residual_fn_kwargs`, and their defaults.
MV_SPLIT_ARGUMENTS = {"init_alpha": 0.0, "init_beta": 0.03, "learned": False}


def token_mean(x: Tensor, mask: Optional[Tensor], causal: bool) -> Tensor:
    r"""The mean over the real tokens, $\bar x$ `(b, 1, D)`, or over tokens $j \le i$ when `causal` `(b, n, D)`.

    >>> token_mean(torch.tensor([[[1.0], [3.0], [8.0]]]), torch.tensor([[True, True, False]]), causal=True)[0, :, 0]
    tensor([1., 2., 2.])
    """
    weight = torch.ones_like(x[..., :1]) if mask is None else mask[..., None].to(x.dtype)  # (b, n, 1)
    if causal:
        # $\sum_{j \le i} m_j x_j / \sum_{j \le i} m_j$
        return (x * weight).cumsum(dim=1) / weight.cumsum(dim=1).clamp(min=1e-5)
    return (x * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True).clamp(min=1e-5)


class MVSplitResidual(nn.Module):
    r"""$x + \beta \odot (F - \bar F) + \alpha \odot (\bar F - \bar x)$, with causal means in a decoder."""

    # The stack passes the padding mask to this residual (`models/run_block.py`).
    reads_mask = True

    def __init__(self, dim: int, causal: bool, init_alpha: float = 0.0, init_beta: float = 0.03,
                 learned: bool = False):
        super().__init__()
        self.causal = causal
        self.to_alpha: Optional[nn.Linear] = None
        self.to_beta: Optional[nn.Linear] = None
        if learned:
            # $\alpha = W_\alpha \bar F + b_\alpha$, $W_\alpha = 0$ at first (and so for $\beta$)
            self.to_alpha, self.to_beta = nn.Linear(dim, dim), nn.Linear(dim, dim)
            for proj, init in ((self.to_alpha, init_alpha), (self.to_beta, init_beta)):
                nn.init.zeros_(proj.weight)
                nn.init.constant_(proj.bias, init)
        else:
            self.alpha = nn.Parameter(torch.full((dim,), float(init_alpha)))
            self.beta = nn.Parameter(torch.full((dim,), float(init_beta)))

    def forward(self, branch: Tensor, residual: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        mask = None if mask is None else mask[:, -branch.shape[1]:]
        mean_branch = token_mean(branch, mask, self.causal)  # $\bar F$: (b, 1, D), or (b, n, D) when causal
        mean_stream = token_mean(residual, mask, self.causal)  # $\bar x$
        if self.to_alpha is not None and self.to_beta is not None:
            alpha, beta = self.to_alpha(mean_branch), self.to_beta(mean_branch)
        else:
            alpha, beta = self.alpha, self.beta
        # $x + \beta \odot (F - \bar F) + \alpha \odot (\bar F - \bar x)$
        return residual + beta * (branch - mean_branch) + alpha * (mean_branch - mean_stream)


def mv_split_residual(o) -> MVSplitResidual:
    """The residual of one block, with the arguments of `residual_fn_kwargs`."""
    return MVSplitResidual(o.dim, o.causal, **o.residual_fn_kwargs)


@rule("stack")
def _mv_split_keywords(o) -> None:
    if not o.mv_split_residual:
        return
    for name in ("gated_multi_residual", "gate_residual", "orthog_residual", "attn_aggregated_residuals", "integrate_layers",
                 "scale_residual", "reversible"):
        if getattr(o, name):
            raise ValueError(f"mv_split_residual and {name} cannot be combined: " + (
                "a reversible coupling adds each branch output whole" if name == "reversible"
                else "each decides how a branch output joins the stream"))
    unknown = sorted(set(o.residual_fn_kwargs) - set(MV_SPLIT_ARGUMENTS))
    if unknown:
        raise ValueError(f"residual_fn_kwargs: mv_split_residual reads {', '.join(MV_SPLIT_ARGUMENTS)}, got "
                         f"{', '.join(unknown)}")
    for name, value in o.residual_fn_kwargs.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (name == "learned") != isinstance(value, bool) or (name != "learned" and not number):
            raise ValueError(f"residual_fn_kwargs: mv_split_residual's {name} must be "
                             f"{'True or False' if name == 'learned' else 'a number'}, got {value!r}")
    if o.num_residual_streams > 1:
        raise ValueError("mv_split_residual and num_residual_streams cannot be combined: hyper-connections replace "
                         "the residual sum")
    if o.scale_residual_constant != 1:
        raise ValueError("mv_split_residual and scale_residual_constant cannot be combined (the split takes no "
                         "constant)")


@rule("stack")
def _residual_fn_keywords(o) -> None:
    if o.residual_fn_kwargs and not (o.mv_split_residual or o.gated_multi_residual):
        # x-transformers 2.31.10's other residuals (plain, hyper-connections, gated, orthogonal) take `**kwargs`
        # and ignore them, e.g. the `tanh` of its older hyper-connections; the library never ignores silently.
        kind = "hyper-connections (num_residual_streams > 1)" if o.num_residual_streams > 1 else "this residual"
        warnings.warn(f"residual_fn_kwargs: {sorted(o.residual_fn_kwargs)} have no effect: only mv_split_residual "
                      f"and gated_multi_residual read arguments, {kind} takes none (x-transformers ignores them too)",
                      UserWarning, stacklevel=2)
