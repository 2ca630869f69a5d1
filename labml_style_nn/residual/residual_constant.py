r"""
# A constant scale on the residual (DeepNet's $\alpha$)

*Paper:* [DeepNet: Scaling Transformers to 1,000 Layers](https://arxiv.org/abs/2203.00555) (Wang et al., 2022)

A post-norm transformer normalises the residual sum after every block, $x \leftarrow
\operatorname{LN}(x + F(x))$.  Early in training each branch update then moves the stream by as
much as the stream itself, and deep post-norm stacks diverge.  DeepNet up-weights the residual by a
constant $\alpha > 1$ so that each update is small relative to it:

$$x \leftarrow \operatorname{LN}(\alpha\, x + F(x)),$$

with $\alpha = (2N)^{1/4}$ for an $N$-layer encoder (and a matching down-scaled initialisation of
the branches, $\beta = (8N)^{-1/4}$, which is not part of this keyword).
`scale_residual_constant=α` multiplies the residual by $\alpha$ in every block, whatever the norm
placement; with `scale_residual=True` (NormFormer's learned $\lambda$) both apply,
$\alpha\,\lambda \odot x + F(x)$.

Worked numbers: a 24-layer post-norm encoder takes $\alpha = 48^{1/4} = 2.63$; the residual then
outweighs a branch output of the same size 2.63 to 1 before the norm.

Tests: `tests/residual/test_res_stream.py` (the formula, the invariant sweeps, parity with
x-transformers).

Shapes: any; $\alpha$ is a number.

## Differences from the paper

* DeepNet also scales the initial weights of the value and output projections and of the
  feed-forward layers by $\beta$; here only $\alpha$ is applied (the initial weights are the
  stack's usual ones, or those of `depth_scale_residual` and `zero_init_branch_output`).
* DeepNet is defined for post-norm; the constant applies to pre-norm stacks too, as in
  x-transformers.

## Differences from x-transformers

* x-transformers ignores the constant with `gate_residual=True` (its GRU gate takes no constant);
  here that combination is refused.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("scale_residual_constant", 1.0, "multiply the residual by this constant before adding each branch "
            "(DeepNet's alpha)", example=2.0))


class ConstantScaledResidual(nn.Module):
    r"""$\alpha x + F(x)$, or `residual`'s own sum with $\alpha x$ in place of $x$.

    >>> from labml_style_nn.residual.residual import Residual
    >>> ConstantScaledResidual(Residual(), 2.0)(torch.ones(2), torch.tensor([1.0, 3.0])).tolist()
    [3.0, 7.0]
    """

    def __init__(self, residual: nn.Module, alpha: float):
        super().__init__()
        self.residual, self.alpha = residual, alpha

    def forward(self, branch: Tensor, residual: Tensor) -> Tensor:
        # $\alpha x + F(x)$ (or $\alpha \lambda \odot x + F(x)$ with NormFormer's scale)
        return self.residual(branch, residual * self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def scaled_residual(residual: nn.Module, o) -> nn.Module:
    """Wrap the residual sum of a block in the constant, when `scale_residual_constant` is not 1."""
    return residual if o.scale_residual_constant == 1 else ConstantScaledResidual(residual, o.scale_residual_constant)


@rule("stack")
def _residual_constant_keywords(o) -> None:
    if o.scale_residual_constant == 1:
        return
    if o.gate_residual:
        raise ValueError("scale_residual_constant and gate_residual cannot be combined: the GRU gate replaces the "
                         "residual sum the constant scales")
    if o.reversible:
        raise ValueError("reversible and scale_residual_constant cannot be combined: a reversible coupling adds each "
                         "branch to the unscaled stream")
