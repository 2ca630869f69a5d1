r"""
# Residual blocks: pre-norm, post-norm and sandwich norm

*Paper:* [On Layer Normalization in the Transformer Architecture](https://arxiv.org/abs/2002.04745) (Xiong et al., 2020); [CogView: Mastering Text-to-Image Generation via Transformers](https://arxiv.org/abs/2105.13290) (Ding et al., 2021)

Every sublayer $F$ (attention or feed-forward) of a transformer sits on a residual connection with a
normalisation somewhere along it.  Where the norm goes changes how well deep stacks train:

$$\begin{aligned}
\text{post-norm:}\quad & x \leftarrow \operatorname{Norm}(x + F(x)) \\
\text{pre-norm:}\quad & x \leftarrow x + F(\operatorname{Norm}(x)) \\
\text{sandwich:}\quad & x \leftarrow x + \operatorname{Norm}'(F(\operatorname{Norm}(x))) \\
\text{pre and post:}\quad & x \leftarrow \operatorname{Norm}'(x + F(\operatorname{Norm}(x)))
\end{aligned}$$

The original transformer is post-norm; it needs a learning-rate warmup.  Pre-norm (the default
here) keeps an unnormalised identity path from input to output, trains without warmup, and needs a
final norm after the last block.  CogView's sandwich norm adds a second norm on the branch output to
keep the branches from blowing up the residual stream in large models.  NormFormer's norm after
the attention output projection is the same thing for attention branches.

`pre_and_post_norm=True` normalises both the branch input and the residual sum, so the stream
itself is normalised after every block, as in post-norm, while every branch also sees a normalised
input; the stack then has no final norm (the last block's post-norm is one).  This is what
x-transformers' keyword does.  It is not ResiDual
([Xie et al., 2023](https://arxiv.org/abs/2304.14802)), which keeps a post-norm and a pre-norm
residual stream side by side and adds them at the end; the name only shares the idea of using both
norms.  `pre_norm_has_final_norm=False` drops the final norm of a pre-norm stack, for a stack whose
output goes on into something that normalises it anyway.

`Block` is the one place that arranges these pieces around a sublayer.  The residual sum itself is
pluggable: plain addition (here), a learned per-feature scale on the residual
([scale_residual](scale_residual.md)) or a GRU gate ([gated_residual](gated_residual.md)); the branch
can be scaled by ReZero's scalar ([rezero](rezero.md)); its input can be shifted along the sequence
([token_shift](token_shift.md)).

A block also carries a constant `step`: macaron layers add half of each feed-forward branch
($x \leftarrow x + \tfrac12 F(x)$, see [layout](../models/layout.md)).  The order inside a block is
fixed: shift the normalised input, run the sublayer, normalise its output (sandwich), scale it
(ReZero, step), add it to the residual, normalise the sum (post-norm).

Tests: `test_pre_post_and_sandwich_norm_formulas` and `test_final_norm_only_for_pre_norm` in `tests/residual/test_res_residual.py`, `pre_and_post_norm` and `pre_norm_has_final_norm` in `tests/residual/test_layer_scale_and_norm_placement.py`; the norms themselves are [RMSNorm](../norms/rms_norm.md) and [ScaleNorm](../norms/scale_norm.md) (or LayerNorm).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from the papers

* Post-norm stacks end without a final norm (the last block's norm is one), pre-norm stacks with
  one, as in Xiong et al.; ReZero stacks have neither.
* `pre_and_post_norm` has no paper of its own in x-transformers' source (its comment points to a talk
  and to recurrent-depth models); the formula above is what both libraries compute.
* CogView's sandwich norm is LayerNorm; here the branch norm is whatever norm the stack uses
  (ScaleNorm or RMSNorm with `use_scalenorm` / `use_rmsnorm`).
"""

from typing import Optional

from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("pre_norm", True, "normalise each branch's input (True) or the residual sum (False: post-norm)"),
    Keyword("sandwich_norm", False, "also normalise each branch's output"),
    Keyword("pre_norm_has_final_norm", True, "a pre-norm stack ends with a norm (False: the last sum is returned as is)",
            example=False),
    Keyword("pre_and_post_norm", False, "normalise both each branch's input and each residual sum (no final norm)"))


def _norm(norm: nn.Module, x: Tensor, condition: Optional[Tensor]) -> Tensor:
    """Apply `norm`, passing the condition vector to the adaptive norms that read one."""
    return norm(x, condition=condition) if getattr(norm, "needs_condition", False) else norm(x)


class Residual(nn.Module):
    r"""The plain residual sum $x + F(x)$.

    >>> Residual()(torch.ones(2), torch.ones(2)).tolist()
    [2.0, 2.0]
    """

    def forward(self, branch: Tensor, residual: Tensor) -> Tensor:
        return branch + residual


class Block(nn.Module):
    r"""One sublayer with its norms, branch scaling and residual connection.

    Args:
        fn: the sublayer (attention or feed-forward).
        pre_norm: norm applied to the branch input (pre-norm), or `None`.
        post_norm: norm applied after the residual sum (post-norm), or `None`.
        branch_norm: norm on the branch output (sandwich norm), or `None`.
        residual: how the branch joins the residual stream.
        branch_scale: a module scaling the branch output (ReZero), or `None`.
        step: a constant factor on the branch (macaron's half-step feed-forward).
        shift: token shift applied to the branch input, or `None`.
        layer_scale: a module scaling the sublayer output before the branch norm (LayerScale, or
            the adaptive gate, which reads the condition vector), or `None`.
    """

    def __init__(self, kind: str, fn: nn.Module, *, pre_norm: Optional[nn.Module] = None,
                 post_norm: Optional[nn.Module] = None, branch_norm: Optional[nn.Module] = None,
                 residual: Optional[nn.Module] = None, branch_scale: Optional[nn.Module] = None,
                 step: float = 1.0, shift: Optional[nn.Module] = None, layer_scale: Optional[nn.Module] = None):
        super().__init__()
        self.kind, self.fn, self.step = kind, fn, step
        self.pre_norm, self.post_norm, self.branch_norm = pre_norm, post_norm, branch_norm
        self.residual = residual if residual is not None else Residual()
        self.branch_scale, self.shift, self.layer_scale = branch_scale, shift, layer_scale

    def branch_input(self, x: Tensor, mask: Optional[Tensor] = None, shift_state=None,
                     condition: Optional[Tensor] = None) -> Tensor:
        """What the sublayer sees: the normalised (pre-norm) and possibly token-shifted input."""
        h = _norm(self.pre_norm, x, condition) if self.pre_norm is not None else x
        if self.shift is not None:
            h = self.shift(h, mask=mask, state=shift_state)
        return h

    def memory_input(self, mem: Tensor, condition: Optional[Tensor] = None) -> Tensor:
        """A Transformer-XL memory `(b, m, D)` (the stream as an earlier segment left it) as the keys read it:
        through the same pre-norm as the tokens, without token shift."""
        return _norm(self.pre_norm, mem, condition) if self.pre_norm is not None else mem

    def branch_output(self, out: Tensor, condition: Optional[Tensor] = None) -> Tensor:
        """The sublayer output `out` `(b, n, D)` as it is added to the stream (LayerScale, sandwich norm,
        ReZero, step)."""
        # $\operatorname{diag}(\lambda) F$: LayerScale (or the adaptive gate $\sigma(W c + b) \odot F$)
        if self.layer_scale is not None:
            out = _norm(self.layer_scale, out, condition)
        # $\operatorname{Norm}'(F)$: sandwich norm
        if self.branch_norm is not None:
            out = _norm(self.branch_norm, out, condition)
        # $\alpha F$: ReZero
        if self.branch_scale is not None:
            out = self.branch_scale(out)
        # $\tfrac12 F$: macaron's half step
        if self.step != 1.0:
            out = out * self.step
        return out

    def join(self, out: Tensor, x: Tensor, condition: Optional[Tensor] = None, **reads) -> Tensor:
        """Add the branch output `out` `(b, n, D)` back into the residual stream `x` `(b, n, D)` (`reads`: what
        a residual that looks across tokens needs, the padding mask)."""
        out = self.branch_output(out, condition)
        # $x + F$, $\lambda \odot x + F$ or the GRU gate
        x = self.residual(out, x, **reads)
        # $\operatorname{Norm}(x + F)$: post-norm (and pre-and-post norm)
        return _norm(self.post_norm, x, condition) if self.post_norm is not None else x


@rule("stack")
def _norm_placement(o) -> None:
    if o.pre_and_post_norm and not o.pre_norm:
        raise ValueError("pre_and_post_norm and pre_norm=False: pre_and_post_norm already normalises the residual "
                         "sums; leave pre_norm=True")
    if o.pre_and_post_norm and o.sandwich_norm:
        raise ValueError("pre_and_post_norm and sandwich_norm: choose one way of adding norms to a pre-norm stack")
    if not o.pre_norm_has_final_norm and (not o.pre_norm or o.pre_and_post_norm):
        raise ValueError("pre_norm_has_final_norm=False: only meaningful for a pre-norm stack (pre_norm=True, "
                         "without pre_and_post_norm, which has no final norm)")
