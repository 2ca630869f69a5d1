r"""
# Activations of the feed-forward layer

*Papers:* [Gaussian Error Linear Units (GELUs)](https://arxiv.org/abs/1606.08415) (Hendrycks & Gimpel, 2016),
[Searching for Activation Functions](https://arxiv.org/abs/1710.05941) (Ramachandran et al., 2017)

The hidden layer of a feed-forward network applies one element-wise nonlinearity $\phi$.  The
families of models differ here, and a checkpoint is only reproduced with its own $\phi$, so the
choice is the keyword `ff_activation`:

| `ff_activation` | $\phi(x)$ | used by |
|---|---|---|
| `gelu` (default) | $x\,\Phi(x)$, $\Phi$ the standard normal CDF | BERT, ViT |
| `gelu_tanh` | $\tfrac{1}{2} x \left(1 + \tanh\left[\sqrt{2/\pi}\,(x + 0.044715\, x^3)\right]\right)$ | GPT-2 (`gelu_new`) |
| `relu` | $\max(0, x)$ | the original transformer, T5 v1.0 |
| `silu` | $x\,\sigma(x)$ (Swish with $\beta = 1$) | LLaMA, Qwen2, Mistral (gated) |
| `sigmoid` | $\sigma(x)$ | Dauphin et al.'s GLU (gated) |
| `identity` | $x$ | the bilinear layer (gated) |
| `relu_squared` | $\max(0, x)^2$ | [Primer](relu_squared.md) |

GELU weighs its input by the probability that a standard normal variable is smaller,
$x\,\Phi(x)$; the tanh form is the paper's fast approximation, which GPT-2 was trained with.  The
two differ by less than $10^{-3}$, enough to move logits well past a parity tolerance of $10^{-4}$,
so a converted GPT-2 must use the approximation.  Swish (SiLU) is $x\,\sigma(x)$, found by a
search over activation functions.

With `ff_glu=True` the activation becomes the gate of a [gated linear unit](glu.md).  The older
flags still choose it when `ff_activation` is not given: `ff_swish=True` is `silu`,
`ff_relu_squared=True` is `relu_squared`.

`ff_custom_activation=module` takes any `nn.Module` instead (`nn.Tanh()`, `nn.Mish()`, one of
your own): each layer gets its own deep copy, so a module with parameters (a learned slope) is
learned per layer, as in x-transformers.  [SoLU](solu.md) (`ff_solu=True`) has its own page.  A test
checks that each layer holds a copy and that the copy computes the module's function.

Shapes: any; applied element-wise.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare
from .relu_squared import ReLUSquared

KEYWORDS = declare(__name__, "ff",
    Keyword("swish", False, "SiLU (Swish) as the activation; with ff_glu, SwiGLU"),
    Keyword("custom_activation", None, "any activation module, copied into each layer (overrides the others)",
            type="module", example=nn.Tanh()),
    Keyword("activation", None, "the activation by name: gelu, gelu_tanh, relu, silu, sigmoid, identity, "
            "relu_squared", type=str, example="relu", xtransformers=False))


class GELUTanh(nn.Module):
    r"""$\tfrac{1}{2} x (1 + \tanh[\sqrt{2/\pi}(x + 0.044715 x^3)])$, GELU's tanh approximation.

    >>> import torch
    >>> round(GELUTanh()(torch.tensor(1.0)).item(), 4), round(F.gelu(torch.tensor(1.0)).item(), 4)
    (0.8412, 0.8413)
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


# Name of `ff_activation` to the module that computes it.
ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": GELUTanh,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "relu_squared": ReLUSquared,
}


def activation(name: str) -> nn.Module:
    """The activation module named `name` (a key of `ACTIVATIONS`).

    >>> import torch
    >>> activation("silu")(torch.tensor([0.0])).tolist()
    [0.0]
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"ff_activation: expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
