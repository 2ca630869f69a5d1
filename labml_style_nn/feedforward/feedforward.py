r"""
# The position-wise feed-forward network

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

After attention has mixed information *between* tokens, the feed-forward network transforms each
token on its own, with the same two-layer MLP at every position:

$$\operatorname{FFN}(x) = \phi(x W_1 + b_1)\, W_2 + b_2$$

The hidden width is `ff_mult` times the model width (4 in the paper), or exactly `ff_inner_dim`
(LLaMA's 11008 for $D = 4096$ is no multiple of it).  The activation $\phi$ is GELU by default;
the other choices live in their own files:

* [activations](activations.md): `ff_activation=` any of GELU, GELU's tanh approximation (GPT-2),
  ReLU, SiLU/Swish (`ff_swish=True`), sigmoid, identity, ReLU².
* [GLU variants](glu.md): `ff_glu=True`, a gated hidden layer; its gate is the activation above
  (GEGLU by default, SwiGLU with `ff_swish=True`).
* [ReLU²](relu_squared.md): `ff_relu_squared=True`.
* `ff_no_bias=True` drops $b_1$ and $b_2$ (LLaMA, T5).
* [SoLU](solu.md): `ff_solu=True`; any module: `ff_custom_activation=` ([activations](activations.md)).
* [Soft clamping](softclamp.md): `ff_softclamp_value=`, `ff_glu_softclamp=True`.
* The output projection's initialisation and the dropout after it (`ff_zero_init_output`,
  `ff_output_proj_depth`, `ff_sublayer_dropout`): [the output of a residual branch](../residual/branch_output.md).
* `ff_dim_out` is the output width; the `FeedForward` module accepts any, but in a stack the output
  is added to the residual stream, so only `dim` (or `None`) is accepted there (x-transformers fails
  at the residual sum with any other).
* `ff_post_act_ln=True` adds a LayerNorm right after the activation, one of the NormFormer changes
  (Shleifer et al. 2021, [arXiv:2110.09456](https://arxiv.org/abs/2110.09456)): it keeps the
  scale of the hidden layer in check so that the second projection sees well-conditioned inputs.

Tests: `tests/feedforward/test_ff_feedforward.py` (the default GELU MLP, GEGLU and ReLU² in closed form, the hidden width); the block sits on a [residual connection](../residual/residual.md) after each attention layer.

Shapes: `b` batch, `n` tokens, `D` model width, `H` hidden width ($H$ = `int(ff_mult * D)`).

## Differences from the paper

* GELU instead of the paper's ReLU, as in BERT and GPT.
* The post-activation LayerNorm is NormFormer's, not the original transformer's; it is off by default.
"""

from torch import Tensor, nn

from ..checks import check_tensor
from ..keywords import Keyword, declare, rule
from .activations import activation as make_activation
from .glu import GatedLinearUnit
from .softclamp import SoftClamp

KEYWORDS = declare(__name__, "ff",
    Keyword("mult", 4, "hidden width as a multiple of dim", type=(int, float), example=2),
    Keyword("dropout", 0.0, "dropout on the hidden layer", example=0.1),
    Keyword("inner_dim", None, "hidden width, overriding ff_mult", type=int, example=96, xtransformers=False),
    Keyword("no_bias", False, "no biases in the feed-forward projections"),
    Keyword("post_act_ln", False, "a LayerNorm after the activation (NormFormer)"),
    Keyword("dim_out", None, "width of the layer's output (None: dim; a stack needs dim)", type=int, minimum=1,
            example=32))


@rule("ff")
def _ff_output_fits_the_stream(f, o) -> None:
    if f.dim_out is not None and f.dim_out != o.dim:
        raise ValueError(f"ff_dim_out: the output is added to the residual stream of width dim ({o.dim}); "
                         f"expected {o.dim} or None, got {f.dim_out}")


class FeedForward(nn.Module):
    r"""$\phi(x W_1 + b_1) W_2 + b_2$ with optional post-activation LayerNorm and dropout.

    >>> import torch
    >>> FeedForward(8, mult=2)(torch.zeros(1, 3, 8)).shape
    torch.Size([1, 3, 8])

    Args:
        dim: model width $D$.
        mult: hidden width as a multiple of `dim`.
        glu: a gated linear unit, gated by the activation.
        relu_squared: use $\operatorname{ReLU}(x)^2$ (the same as `activation="relu_squared"`).
        activation: a name of `activations.ACTIVATIONS` or a module; `None`: GELU, or ReLU² with `relu_squared`.
        inner_dim: hidden width $H$ (overrides `mult`).
        bias: biases $b_1, b_2$.
        post_act_ln: LayerNorm after the activation (NormFormer).
        dropout: dropout on the hidden layer.
        dim_out: output width (defaults to `dim`).
        softclamp: soft-clamp the pre-activation to this bound (not with `glu`).
        glu_mult_bias: a learned multiplier on the GLU's output.
        glu_up_softclamp: soft-clamp the GLU's value to this bound.
        sublayer_dropout: dropout on the output, after $W_2$.
    """

    def __init__(self, dim: int, *, mult: float = 4, glu: bool = False, relu_squared: bool = False,
                 post_act_ln: bool = False, dropout: float = 0.0, dim_out: int | None = None,
                 activation: str | nn.Module | None = None, inner_dim: int | None = None, bias: bool = True,
                 softclamp: float | None = None, glu_mult_bias: bool = False, glu_up_softclamp: float | None = None,
                 sublayer_dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        hidden = int(dim * mult) if inner_dim is None else inner_dim
        if hidden < 1:
            raise ValueError(f"ff_mult: {mult} times dim={dim} leaves no hidden feature; expected at least 1/{dim}")
        act = activation if activation is not None else ("relu_squared" if relu_squared else "gelu")
        if glu:
            # A gated unit projects to twice the hidden width: one half is the value, one half the gate.
            self.proj_in = GatedLinearUnit(dim, hidden, activation=act, bias=bias, mult_bias=glu_mult_bias,
                                           up_softclamp=glu_up_softclamp)
        else:
            # $\phi(\operatorname{clamp}_c(x W_1 + b_1))$ with `softclamp`
            clamp = [SoftClamp(softclamp)] if softclamp is not None else []
            self.proj_in = nn.Sequential(nn.Linear(dim, hidden, bias=bias), *clamp,
                                         make_activation(act) if isinstance(act, str) else act)
        self.post_act_norm = nn.LayerNorm(hidden) if post_act_ln else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(hidden, dim if dim_out is None else dim_out, bias=bias)
        self.sublayer_dropout = nn.Dropout(sublayer_dropout)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, f"(..., {self.dim})", kind="float", sizes={-1: self.dim})
        # $\phi(x W_1 + b_1)$, or the gated unit
        h = self.proj_in(x)  # (b, n, H)
        # $\operatorname{LN}(h)$ with `ff_post_act_ln`, then $W_2$
        out = self.proj_out(self.dropout(self.post_act_norm(h)))  # (b, n, D)
        # dropout on the branch's output (`ff_sublayer_dropout`)
        return self.sublayer_dropout(out)
