r"""
# SoLU: the softmax linear unit

*Paper:* [Softmax Linear Units](https://transformer-circuits.pub/2022/solu/index.html) (Elhage et al., Anthropic, 2022)

A neuron of a feed-forward layer is easier to interpret when it responds to one feature of the
input rather than to a superposition of several.  SoLU changes the activation to favour that: each
pre-activation is multiplied by the softmax of the whole hidden vector,

$$\operatorname{SoLU}(h) = h \odot \operatorname{softmax}(h), \qquad \phi(h) = \operatorname{LN}\big(\operatorname{SoLU}(h)\big).$$

A large pre-activation takes most of the softmax and passes almost unchanged, small ones are
suppressed: with $h = (4, 1, 0)$ the softmax is $(0.94, 0.05, 0.02)$ and $\operatorname{SoLU}(h) = (3.74, 0.05, 0)$.
So few neurons are active at once, which the paper links to fewer superposed features per neuron.
The suppression also shrinks the output by a factor that depends on how peaked $h$ is; the
LayerNorm after it (the paper's "SoLU + LN") restores the scale, and the paper reports that without it
the models trained worse.

`ff_solu=True` makes $\phi$ the activation of the [feed-forward layer](feedforward.md), or the gate
of a [GLU](glu.md) with `ff_glu=True`.  Tests: `tests/feedforward/test_ff_xt_options.py` (the closed
form, parity with x-transformers' weights).

Shapes: `b` batch, `n` tokens, `H` hidden width.

## Differences from the paper

The LayerNorm here is x-transformers' form, a gain and no bias (the paper's has a bias); it starts
at gain 1, so the two agree at initialisation.
"""

from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "ff",
    Keyword("solu", False, "SoLU, x * softmax(x) followed by a LayerNorm, as the activation"))


@rule("ff")
def _one_activation(f, o) -> None:
    chosen = [n for n, on in (("ff_solu", f.solu), ("ff_relu_squared", f.relu_squared), ("ff_swish", f.swish),
                              ("ff_activation", f.activation is not None),
                              ("ff_custom_activation", f.custom_activation is not None)) if on]
    if len(chosen) > 1 and ("ff_solu" in chosen or "ff_custom_activation" in chosen):
        raise ValueError(f"{' and '.join(chosen)} each choose the activation; choose one")


class SoLU(nn.Module):
    r"""$\operatorname{LN}(h \odot \operatorname{softmax}(h))$ over the hidden features.

    >>> import torch
    >>> h = torch.tensor([4.0, 1.0, 0.0])
    >>> [round(v, 2) for v in (h * h.softmax(-1)).tolist()]   # before the LayerNorm
    [3.74, 0.05, 0.0]
    >>> SoLU(3)(h).mean().abs().item() < 1e-6   # after it: zero mean
    True

    Args:
        hidden: hidden width $H$, the LayerNorm's.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        # $h \odot \operatorname{softmax}(h)$, over the hidden features
        solu = h * h.softmax(dim=-1)  # (b, n, H)
        return self.norm(solu)
