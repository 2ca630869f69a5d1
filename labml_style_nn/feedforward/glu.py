r"""
# GLU variants: gated feed-forward layers

*Paper:* [GLU Variants Improve Transformer](https://arxiv.org/abs/2002.05202) (Shazeer, 2020),
building on [Language Modeling with Gated Convolutional Networks](https://arxiv.org/abs/1612.08083) (Dauphin et al., 2016)

A gated linear unit computes two projections of its input and lets one, passed through an
activation $\phi$, gate the other element-wise:

$$\operatorname{GLU}_\phi(x) = \phi(x W) \odot x V, \qquad
\operatorname{FFN}_\phi(x) = \big(\phi(x W) \odot x V\big)\, W_2$$

The path through $x V$ is linear, so gradients flow through the unit without being squashed, while
$\phi(xW)$ decides, per feature and per token, how much of it passes.  Dauphin et al. introduced it
with a sigmoid gate for convolutional language models; Shazeer tried other gates in the
transformer's feed-forward layer:

| variant | $\phi$ | keywords | log-perplexity, 65k steps | 524k steps |
|---|---|---|---|---|
| $\operatorname{FFN}_{\text{ReLU}}$ (no gate) | | `ff_glu=False, ff_activation="relu"` | 1.997 | 1.677 |
| $\operatorname{FFN}_{\text{GELU}}$ (no gate) | | `ff_glu=False` | 1.983 | 1.679 |
| $\operatorname{FFN}_{\text{Swish}}$ (no gate) | | `ff_glu=False, ff_swish=True` | 1.994 | 1.683 |
| GLU | $\sigma$ | `ff_glu=True, ff_activation="sigmoid"` | 1.982 | 1.663 |
| Bilinear | identity | `ff_glu=True, ff_activation="identity"` | 1.960 | 1.648 |
| ReGLU | ReLU | `ff_glu=True, ff_activation="relu"` | 1.953 | 1.645 |
| GEGLU | GELU | `ff_glu=True` (GELU is the default gate) | 1.942 | 1.633 |
| SwiGLU | Swish | `ff_glu=True, ff_swish=True` | 1.944 | 1.636 |

The numbers are the paper's Table 1: held-out log-perplexity of T5-base-sized models on C4's
span-filling task, at equal parameters and compute (lower is better; the 65k-step figures are the
mean of four runs, whose standard deviation is 0.003 to 0.010).  ReGLU, GEGLU and SwiGLU each beat
their ungated activation, and every gated variant beats the ReLU baseline; GEGLU and SwiGLU are best.  SwiGLU is the feed-forward layer of LLaMA,
Qwen2 and Mistral, GEGLU that of T5 v1.1.  The paper's conclusion: "We offer no explanation as to
why these architectures seem to work; we attribute their success, as all else, to divine
benevolence."

Both projections are one matrix multiply of width $2H$, split in two: the first half is $x V$, the
second half $x W$.

Shapes: `b` batch, `n` tokens, `D` model width, `H` hidden width.

## Differences from the paper

* To keep the parameter count of the ungated layer the paper shrinks $H$ to $\tfrac{2}{3}$ of it;
  here `ff_mult` (or `ff_inner_dim`) sets $H$ as given, so a gated layer has 1.5 times the
  parameters of a plain one unless you shrink it yourself (LLaMA's $H$ is about $\tfrac{8}{3} D$).
* The projections have biases unless `ff_no_bias=True`; the paper has none.

## A learned multiplier: `ff_glu_mult_bias`

x-transformers can multiply the unit's output by a learned vector $m \in \mathbb{R}^H$, starting at
ones: $\phi(x W) \odot x V \odot m$.  At initialisation it changes nothing; it lets each hidden
feature learn its own overall scale independently of the two projections (which could also
express it, but only through every weight of a row).  With [soft clamping](softclamp.md) it scales
the clamped product.  A test copies x-transformers' vector and gets its logits.

## Evidence

* Measured: at equal parameters (`ff_mult=8/3`), GEGLU reaches 2.163 ± 0.051 bpc against 2.387 ± 0.025
  for the plain GELU feed-forward, over three seeds (2-layer rotary decoder, 250 steps,
  [`compare_variants.py`](../../experiments/compare_variants.py);
  [results](../../docs/results.md#comparing-techniques)).
* Invariant: each variant computes its paper's formula,
  `test_each_variant_is_the_papers_formula` in `tests/feedforward/test_ff_glu_family.py`.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from .activations import activation as make_activation
from .softclamp import softclamp

KEYWORDS = declare(__name__, "ff",
    Keyword("glu", False, "a gated linear unit as the hidden layer (GEGLU; SwiGLU with ff_swish)"),
    Keyword("glu_mult_bias", False, "a learned per-feature multiplier on the GLU's output, starting at one"))


@rule("ff")
def _mult_bias_needs_glu(f, o) -> None:
    if f.glu_mult_bias and not f.glu:
        raise ValueError("ff_glu_mult_bias: only meaningful with ff_glu=True")

# Shazeer's names for the gate activations (keys of `activations.ACTIVATIONS`).
VARIANTS = {"glu": "sigmoid", "bilinear": "identity", "reglu": "relu", "geglu": "gelu", "swiglu": "silu"}


class GatedLinearUnit(nn.Module):
    r"""$\phi(x W) \odot x V$, with $V$ and $W$ fused into one projection of width $2H$.

    >>> import torch
    >>> GatedLinearUnit(4, 6)(torch.zeros(2, 4)).shape   # hidden width 6, from one projection of width 12
    torch.Size([2, 6])
    >>> u = GatedLinearUnit(1, 1, activation="identity", bias=False)   # the bilinear layer
    >>> _ = u.proj.weight.data.copy_(torch.tensor([[2.0], [3.0]]))     # V = 2, W = 3
    >>> u(torch.tensor([[1.5]])).item()                                  # (3 * 1.5) * (2 * 1.5)
    13.5

    Args:
        dim: input width $D$.
        hidden: hidden width $H$.
        activation: the gate's $\phi$, a name of `ff_activation` (`"gelu"`: GEGLU) or a module.
        bias: biases on both projections.
        mult_bias: a learned multiplier $m$ on the output, starting at ones (`ff_glu_mult_bias`).
        up_softclamp: soft-clamp the value $x V$ to this bound ([soft clamping](softclamp.md)).
    """

    def __init__(self, dim: int, hidden: int, *, activation: str | nn.Module = "gelu", bias: bool = True,
                 mult_bias: bool = False, up_softclamp: float | None = None):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden, bias=bias)
        self.act = make_activation(activation) if isinstance(activation, str) else activation
        self.mult_bias = nn.Parameter(torch.ones(hidden)) if mult_bias else None  # $m$, (H,)
        self.up_softclamp = up_softclamp

    def forward(self, x: Tensor) -> Tensor:
        # $x V$ and $x W$ from one matrix multiply
        value, gate = self.proj(x).chunk(2, dim=-1)  # (b, n, H) each
        if self.up_softclamp is not None:
            value = softclamp(value, self.up_softclamp)
        # $\phi(x W) \odot x V$
        out = self.act(gate) * value
        # $\odot\, m$
        return out if self.mult_bias is None else out * self.mult_bias


# The name this class had before the family was written out.
GLU = GatedLinearUnit
