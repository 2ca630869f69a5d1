r"""
# The output of a residual branch: its initialisation and its dropout

*Papers:* [Fixup Initialization: Residual Learning Without Normalization](https://arxiv.org/abs/1901.09321) (Zhang et al., 2019);
[OLMo: Accelerating the Science of Language Models](https://arxiv.org/abs/2402.00838) (Groeneveld et al., 2024)

Every attention and feed-forward layer of a stack ends in a linear projection whose output is added
to the residual stream, $x_{l+1} = x_l + W_O\, f(x_l)$.  At initialisation the $L$ branches each add
an independent random update, so the variance of the stream grows with depth, and a deep stack
starts far from the identity.  Two ways to start it closer, both on $W_O$ alone:

* **Zero init** (`attn_zero_init_output`, `ff_zero_init_output`): $W_O = 0$ (and its bias, if any),
  so every branch starts by adding nothing and the stack starts as the identity.  Fixup's rule for
  residual networks ("initialize the last layer of each residual branch to 0"); the gradient of
  $W_O$ is not zero, so the branch wakes up at the first step.
* **Depth-scaled init** (`attn_output_proj_depth=l`, `ff_output_proj_depth=l`): the weights of
  $W_O$ are drawn from $\mathcal N\big(0, \sigma^2\big)$ with
  $$\sigma = \frac{1}{\sqrt{2\, d_{\text{in}}\, l}},$$
  $d_{\text{in}}$ the projection's input width, the "Mitchell" initialisation of OLMo, which x-transformers
  applies with $l$ the layer's index (from 1) when `depth_scale_branch_output=True`.  With
  $d_{\text{in}} = 512$ and $l = 1$ that is $\sigma = 0.031$; at $l = 16$, $0.0078$.  Here the
  keyword gives one $l$ to every layer of the stack.

**Sublayer dropout** (`attn_sublayer_dropout`, `ff_sublayer_dropout`) drops features of the
branch's output, after $W_O$ and before the residual sum (and before a sandwich norm), the
"residual dropout" of the original transformer; `attn_dropout` and `ff_dropout` act inside the
branch instead (on the attention weights, on the hidden layer).

These act in [attention](../attention/attention.md) (its `to_out` and `sublayer_dropout`) and the
[feed-forward layer](../feedforward/feedforward.md) (`proj_out`), through `init_branch_output`
below, called by `models/build.py`.  Tests: `tests/residual/test_branch_output.py` (a zero-initialised
stack is the identity plus embeddings, the depth-scaled standard deviation, dropout only in training).

Shapes: `d_in` the projection's input width, `D` the model width.

## Differences from x-transformers

* `attn_output_proj_depth` and `ff_output_proj_depth` reach x-transformers' `Attention` and
  `FeedForward`, but its stack also passes `output_proj_depth` itself, so giving them through a
  stack is a `TypeError` there; here they act, with one depth for every layer.
* With `attn_on_attn=True`, x-transformers' zero init fails (its output is a `Sequential`); here the
  projection inside attention on attention is zeroed, so the branch starts at zero all the same.
"""

from typing import Optional

from torch import nn

from ..keywords import Keyword, declare, rule

_SHARED = (
    Keyword("zero_init_output", False, "initialise the output projection to zero: the branch starts adding nothing"),
    Keyword("output_proj_depth", None, "draw the output projection with std 1/sqrt(2 d_in depth) (OLMo)", type=int,
            minimum=1, example=2),
    Keyword("sublayer_dropout", 0.0, "dropout on the branch's output, before the residual sum", type=float,
            minimum=0.0, example=0.1),
)
KEYWORDS = declare(__name__, "attn", *_SHARED) + declare(__name__, "ff", *_SHARED)


def _check(prefix: str, zero: bool, depth: Optional[int], dropout: float) -> None:
    if zero and depth is not None:
        raise ValueError(f"{prefix}zero_init_output and {prefix}output_proj_depth both initialise the output "
                         "projection; choose one")
    if dropout >= 1:
        raise ValueError(f"{prefix}sublayer_dropout: expected a probability in [0, 1), got {dropout!r}")


@rule("attn")
def _attn_branch_output(a, prefix: str, o) -> None:
    _check(prefix, a.zero_init_output, a.output_proj_depth, a.sublayer_dropout)
    if (a.zero_init_output or a.output_proj_depth is not None) and a.project_out is False:
        raise ValueError(f"{prefix}project_out=False and {prefix}zero_init_output (or {prefix}output_proj_depth): "
                         "there is no output projection to initialise")


@rule("ff")
def _ff_branch_output(f, o) -> None:
    _check("ff_", f.zero_init_output, f.output_proj_depth, f.sublayer_dropout)


def output_linear(module: nn.Module) -> nn.Linear:
    """The last linear map of a branch: a `Linear` itself, or the `proj` of a module that has one."""
    if isinstance(module, nn.Linear):
        return module
    proj = getattr(module, "proj", None)
    if isinstance(proj, nn.Linear):
        return proj
    raise ValueError(f"output projection: expected an nn.Linear or a module with a .proj Linear, got "
                     f"{type(module).__name__}")


def init_branch_output(linear: nn.Linear, *, zero: bool = False, depth: Optional[int] = None) -> None:
    r"""Zero `linear`, or draw its weights with $\sigma = 1 / \sqrt{2\, d_{\text{in}}\, l}$ for depth $l$ = `depth`.

    >>> lin = nn.Linear(8, 4)
    >>> init_branch_output(lin, zero=True)
    >>> lin.weight.abs().sum().item(), lin.bias.abs().sum().item()
    (0.0, 0.0)
    """
    if zero:
        nn.init.zeros_(linear.weight)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
    elif depth is not None:
        # $\sigma = (2\, d_{\text{in}}\, l)^{-1/2}$
        nn.init.normal_(linear.weight, std=(2 * linear.in_features * depth) ** -0.5)
