r"""
# LayerNorm, with gains stored as offsets from one

*Paper:* [Layer Normalization](https://arxiv.org/abs/1607.06450) (Ba et al., 2016)

LayerNorm centres each vector, divides it by its standard deviation and applies a learned gain
$\gamma$ and bias $\beta$ per feature:

$$\operatorname{LN}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta,
\qquad \mu = \tfrac1D \textstyle\sum_k x_k,\quad \sigma^2 = \tfrac1D \sum_k (x_k - \mu)^2.$$

It is the default norm of every stack here (`use_rmsnorm`, `use_scalenorm`, `use_dynamic_tanh` and
the others replace it).  Two keywords change how its parameters are kept:

**`norm_add_unit_offset`** (default `True`, as in x-transformers).  The gain starts at one, but
weight decay pulls every parameter towards zero, and a gain pulled to zero switches its feature
off.  So the gain is stored as an offset from one, $\gamma = 1 + \gamma'$, and only $\gamma'$ is a
parameter: weight decay now pulls the gain towards one, the identity.  The function is the same
for the same $\gamma$; only what is stored (and decayed) differs.  The stack passes the same choice
to every norm with a gain ([RMSNorm](rms_norm.md), [ScaleNorm](scale_norm.md),
[DyT](dynamic_tanh.md), [Derf](derf.md)) and to [LayerScale](../residual/layer_scale.md): each
stores its gains as offsets from their initial values.

**`norm_bias`** (default `False`, as in x-transformers, whose LayerNorm never has one; not an
x-transformers keyword).  Without $\beta$ the LayerNorm is nanoGPT's `bias=False` one;
`norm_bias=True` adds $\beta$ back, as the paper has it (and as this library did before the
[training parity study](../../docs/results.md#training-parity-with-x-transformers); the
[GPT-2](../pretrained/gpt2.md) and [ViT](../pretrained/vit.md) conversions set it, since their
checkpoints have one).  The other norms choose their own parameters and refuse `norm_bias=True`.

**Why no bias by default.**  Under x-transformers' small character-model recipe (500 steps, three
seeds, rotary positions), this library's model with a LayerNorm bias, a logit bias and a token
embedding drawn at std 0.02 trained 0.06 bpc behind x-transformers'; the same model with
x-transformers' three choices (no bias here, none on the logits, the
[Kaiming embedding](../models/initialisation.md)) is 0.017 bpc behind, still behind on every seed.
The three were changed together, so the
runs do not say how much each one does; on the second, GPT-2-style recipe, which has no biases
either way, the embedding alone made a difference of the same size, so most of it is likely the
embedding's.  The
bias goes for another reason: a $\beta$ that starts at zero changes nothing at initialisation,
what it would learn the next linear layer's bias or the residual stream can carry, and without it
the model has x-transformers' parameters, one for one.  The numbers are on the
[initialisation page](../models/initialisation.md) and in
[the results](../../docs/results.md#defaults-second-look-two-recipes-500-steps).

Converted checkpoints ([GPT-2](../pretrained/gpt2.md), [LLaMA](../pretrained/llama.md),
[T5](../pretrained/t5.md), [ViT](../pretrained/vit.md)) build their stacks with
`norm_add_unit_offset=False`, so their gains are stored exactly as the checkpoint stores them.

Tests: `tests/norms/test_norm_variants.py` (the offset changes what is stored, not the function;
weight decay pulls an offset gain to one; a bias only with `norm_bias=True`; parity with x-transformers).

Shapes: `D` model width; any leading axes.

## Differences from x-transformers

* x-transformers' LayerNorm has no bias at all; here `norm_bias=True` adds one (the weight-copied
  parity tests set it to zero).
* A state dict saved before `norm_add_unit_offset` existed stores the plain gains: load it into a
  stack built with `norm_add_unit_offset=False`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("norm_add_unit_offset", True,
            "store norm gains (and LayerScale) as offsets from their initial values, so weight decay "
            "pulls them to the identity", example=False),
    Keyword("norm_bias", False, "LayerNorm with a bias (the default has none, as x-transformers and nanoGPT's "
            "bias=False)", example=True, xtransformers=False))


class LayerNorm(nn.LayerNorm):
    r"""`nn.LayerNorm` whose gain is stored as $\gamma - 1$ when `unit_offset` is true.

    The parameters keep `nn.LayerNorm`'s names (`weight`, `bias`), so state dicts line up.

    >>> n = LayerNorm(2, unit_offset=True)
    >>> n.weight.tolist(), [round(v, 4) for v in n(torch.tensor([1.0, 3.0])).tolist()]   # stored 0: gain 1
    ([0.0, 0.0], [-1.0, 1.0])
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, bias: bool = True, unit_offset: bool = False):
        super().__init__(dim, eps=eps, bias=bias)
        # The value the stored gain is measured from: $\gamma = \text{offset} + \gamma'$.
        self.unit_offset = float(unit_offset)
        if unit_offset:
            with torch.no_grad():
                self.weight.zero_()

    def forward(self, x: Tensor) -> Tensor:
        # $\gamma = 1 + \gamma'$ (or $\gamma$ itself)
        gain = self.weight + self.unit_offset if self.unit_offset else self.weight
        # $\frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta$
        return F.layer_norm(x, self.normalized_shape, gain, self.bias, self.eps)


# The norms a stack can use instead of LayerNorm; at most one of them.
NORM_CHOICES = ("use_scalenorm", "use_rmsnorm", "use_simple_rmsnorm", "use_dynamic_tanh", "use_derf",
                "use_adaptive_layernorm", "use_adaptive_rmsnorm")


@rule("stack")
def _one_norm(o) -> None:
    chosen = [name for name in NORM_CHOICES if getattr(o, name)]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)}: choose one normalisation, not several")
    if o.norm_eps is not None and chosen and chosen[0] in ("use_dynamic_tanh", "use_derf"):
        raise ValueError(f"norm_eps and {chosen[0]}: a point-wise norm divides by nothing, so it has no epsilon")
    if chosen and o.norm_bias:
        raise ValueError(f"norm_bias=True and {chosen[0]}: norm_bias adds a bias to LayerNorm; the other norms "
                         "choose their own parameters")
    if o.use_rezero and (chosen or o.norm_bias or o.pre_and_post_norm):
        named = chosen[0] if chosen else "norm_bias" if o.norm_bias else "pre_and_post_norm"
        raise ValueError(f"use_rezero and {named}: ReZero removes every norm of the stack")
