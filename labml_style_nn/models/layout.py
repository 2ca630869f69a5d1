r"""
# Layer layouts: the order of attention and feed-forward blocks

*Paper:* [Improving Transformer Models by Reordering their Sublayers](https://arxiv.org/abs/1911.03864) (Press et al., 2020); [Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of View](https://arxiv.org/abs/1906.02762) (Lu et al., 2019)

A stack of depth $N$ is a sequence of blocks: `a` self-attention, `c` cross-attention,
`f` feed-forward.  The standard transformer interleaves them, $(\texttt{af})^N$ (or $(\texttt{acf})^N$
with cross-attention).  Two papers propose other orders; this file computes the sequence and the
step size of each block, and the stack (`models/layers.py`) builds and runs the blocks in that order.

**Sandwich transformer.** Press et al. search over orderings and find that putting more attention
at the bottom and more feed-forward at the top helps language modelling.  With a *sandwich
coefficient* $k$, $1 \le k \le N$:

$$\texttt{a}^k\,(\texttt{af})^{N-k}\,\texttt{f}^k$$

The number of blocks of each kind is unchanged; $k = 0$ would be the standard interleaving (leave
`sandwich_coef` unset for it) and $k = N$ puts all attention first; the x-transformers README suggests $k = 6$.

**Macaron.** Lu et al. read a transformer layer as one step of a numerical solver for a
convection-diffusion equation: attention moves particles by their interaction (diffusion),
feed-forward moves each on its own (convection).  The Lie-Trotter splitting, one full step of
each, is the standard layer; the more accurate Strang-Marchuk splitting takes half a feed-forward
step, a full attention step and half a feed-forward step:

$$x \leftarrow x + \tfrac12 F_1(x), \quad x \leftarrow x + A(x), \quad x \leftarrow x + \tfrac12 F_2(x)$$

so each layer is $\texttt{faf}$ with the feed-forward branches scaled by $\tfrac12$ (block `step`).
The Conformer uses the same layout.

Shapes: `N` depth, `k` sandwich coefficient, `s` token-shift amount; block sequences are strings
over `a`, `c`, `f`.

## Differences from the papers

* With cross-attention, each attention of the sandwich is followed by a cross-attention
  ($\texttt{(ac)}^k (\texttt{acf})^{N-k} \texttt{f}^k$), and a macaron layer is
  $\texttt{facf}$; neither paper covers encoder-decoder models with these layouts.
* The two macaron feed-forwards of a layer have their own weights ($F_1 \neq F_2$) and the full
  `ff_mult` width, so a macaron stack has more parameters than a standard one of the same depth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..keywords import Keyword, declare

if TYPE_CHECKING:  # options.py imports this file to read its keywords
    from ..options import LayerOptions

KEYWORDS = declare(__name__, "stack",
    Keyword("sandwich_coef", None, "sandwich transformer: k attention blocks first, k feed-forward blocks last",
            type=int, example=1),
    Keyword("macaron", False, "a half-step feed-forward block before and after each attention block"))


def layer_types(o: LayerOptions) -> tuple[str, ...]:
    r"""The block sequence of a stack.

    >>> from labml_style_nn.options import LayerOptions
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=3)))
    'afafaf'
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=3, sandwich_coef=2)))
    'aaafff'
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=4, sandwich_coef=2)))
    'aaafafff'
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=2, macaron=True)))
    'faffaf'
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=2, cross_attend=True, macaron=True)))
    'facffacf'
    """
    if o.only_cross:
        default = ("c", "f")
    elif o.cross_attend:
        default = ("a", "c", "f")
    else:
        default = ("a", "f")
    if o.macaron:
        # $\tfrac12 F$, attention, $\tfrac12 F$
        default = ("f",) + default
    if o.sandwich_coef is not None:
        # $\texttt{a}^k\,(\texttt{af})^{N-k}\,\texttt{f}^k$, with cross-attention after each attention
        attn = default[:-1]
        k = o.sandwich_coef
        return attn * k + default * (o.depth - k) + ("f",) * k
    return default * o.depth


def branch_steps(types: tuple[str, ...], macaron: bool) -> list[float]:
    r"""The step size of each block: macaron's feed-forward blocks take half steps.

    >>> branch_steps(('f', 'a', 'f'), macaron=True)
    [0.5, 1.0, 0.5]
    """
    return [0.5 if macaron and t == "f" else 1.0 for t in types]


def shift_amounts(o: LayerOptions, num_blocks: int) -> list[int]:
    r"""One token-shift amount per block, from an int or a tuple of `shift_tokens`.

    >>> from labml_style_nn.options import LayerOptions
    >>> shift_amounts(LayerOptions(dim=8, depth=2, shift_tokens=1), 4)
    [1, 1, 1, 1]
    """
    if isinstance(o.shift_tokens, (tuple, list)):
        if len(o.shift_tokens) != num_blocks:
            raise ValueError(
                f"shift_tokens: expected one amount per block, a tuple of length {num_blocks} "
                f"(the blocks of depth {o.depth}, in the order of layer_types), got length {len(o.shift_tokens)}"
            )
        amounts = list(o.shift_tokens)
    else:
        amounts = [o.shift_tokens] * num_blocks
    # $s + 1$ chunks of the features need at least $s + 1$ features.
    if amounts and max(amounts) >= o.dim:
        raise ValueError(f"shift_tokens: a shift of {max(amounts)} splits the features into {max(amounts) + 1} "
                         f"chunks, more than dim={o.dim}")
    return amounts
