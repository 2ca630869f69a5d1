r"""
# Layer layouts: the order of attention and feed-forward blocks

*Paper:* [Improving Transformer Models by Reordering their Sublayers](https://arxiv.org/abs/1911.03864) (Press et al., 2020); [Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of View](https://arxiv.org/abs/1906.02762) (Lu et al., 2019)

A stack of depth $N$ is a sequence of blocks: `a` self-attention, `c` cross-attention,
`f` feed-forward.  The standard transformer interleaves them, $(\texttt{af})^N$ (or $(\texttt{acf})^N$
with cross-attention).  Two papers propose other orders.

**Sandwich transformer.** Press et al. search over orderings and find that putting more attention
at the bottom and more feed-forward at the top helps language modelling.  With a *sandwich
coefficient* $k$:

$$\texttt{a}^k\,(\texttt{af})^{N-k}\,\texttt{f}^k$$

The number of blocks of each kind is unchanged; $k = 6$ works best in the paper.

**Macaron.** Lu et al. read a transformer layer as one step of a numerical solver for a
convection-diffusion equation, and find that a Strang-Marchuk splitting, half a feed-forward step,
a full attention step, half a feed-forward step, is more accurate:

$$x \leftarrow x + \tfrac12 F(x), \quad x \leftarrow x + A(x), \quad x \leftarrow x + \tfrac12 F(x)$$

so each layer is $\texttt{faf}$ with the feed-forward branches scaled by $\tfrac12$.  The Conformer
uses the same layout.
"""

from ..options import LayerOptions


def layer_types(o: LayerOptions) -> tuple[str, ...]:
    """The block sequence of a stack.

    >>> from labml_style_nn.options import LayerOptions
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=3)))
    'afafaf'
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=3, sandwich_coef=2)))
    'aaafff'
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=2, macaron=True)))
    'faffaf'
    """
    if o.only_cross:
        default = ("c", "f")
    elif o.cross_attend:
        default = ("a", "c", "f")
    else:
        default = ("a", "f")
    if o.macaron:
        default = ("f",) + default
    if o.sandwich_coef is not None:
        # $\texttt{a}^k\,(\texttt{af})^{N-k}\,\texttt{f}^k$, with cross-attention after each attention
        attn = default[:-1]
        k = o.sandwich_coef
        return attn * k + default * (o.depth - k) + ("f",) * k
    return default * o.depth


def branch_steps(types: tuple[str, ...], macaron: bool) -> list[float]:
    """The step size of each block: macaron's feed-forward blocks take half steps."""
    return [0.5 if macaron and t == "f" else 1.0 for t in types]


def shift_amounts(o: LayerOptions, num_blocks: int) -> list[int]:
    """One token-shift amount per block, from an int or a tuple of `shift_tokens`."""
    if isinstance(o.shift_tokens, (tuple, list)):
        if len(o.shift_tokens) != num_blocks:
            raise ValueError(
                f"shift_tokens: expected one amount per block, a tuple of length {num_blocks} "
                f"(attention and feed-forward blocks of depth {o.depth}), got length {len(o.shift_tokens)}"
            )
        return list(o.shift_tokens)
    return [o.shift_tokens] * num_blocks
