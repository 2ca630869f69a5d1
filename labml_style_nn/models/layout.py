r"""
# Layer layouts: the order of attention and feed-forward blocks

*Paper:* [Improving Transformer Models by Reordering their Sublayers](https://arxiv.org/abs/1911.03864) (Press et al., 2020); [Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of View](https://arxiv.org/abs/1906.02762) (Lu et al., 2019); [Pay Attention when Required](https://arxiv.org/abs/2009.04534) (Mandava et al., 2020)

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

**PAR.** Mandava et al. find that most self-attention layers of a deep stack can be replaced by
feed-forward layers if the attention that remains sits in the lower part of the stack.  With
`par_ratio` $r$, a stack of $L = N \cdot |\text{block}|$ sublayers keeps $a = \lfloor L / r \rfloor$
attention blocks, spread over the first two thirds of the stack, each followed by feed-forward
blocks up to a width $w$, and fills the rest with feed-forward blocks:

$$(\texttt{a}\,\texttt{f}^{w-1})^{a}\;\texttt{f}^{L - a w}, \qquad
c = \lfloor 2L/3 \rfloor,\quad w = \lfloor (c + \lfloor c / a \rfloor) / a \rfloor,$$

the rule of x-transformers (with cross-attention each attention is $\texttt{ac}$).

**Any other order.** `custom_layers=('a', 'f', 'f', 'a', 'f')` gives the sequence outright (`depth`
may then be left out), and `only_attn=True` drops every feed-forward block: a stack of attention
alone (Ndubuaku et al., [arXiv 2607.18363](https://arxiv.org/abs/2607.18363), as cited by
x-transformers).  Which *weights* each position of the sequence uses is the business of
[weight-tied layers](layer_sharing.md).

Shapes: `N` depth, `k` sandwich coefficient, `s` token-shift amount; block sequences are strings
over `a`, `c`, `f`.

## Differences from the papers

* With cross-attention, each attention of the sandwich is followed by a cross-attention
  ($\texttt{(ac)}^k (\texttt{acf})^{N-k} \texttt{f}^k$), and a macaron layer is
  $\texttt{facf}$; neither paper covers encoder-decoder models with these layouts.
* x-transformers' sandwich puts self-attention alone in the first $k$ positions even with
  cross-attention; here each is followed by its cross-attention.
* The two macaron feed-forwards of a layer have their own weights ($F_1 \neq F_2$) and the full
  `ff_mult` width, so a macaron stack has more parameters than a standard one of the same depth.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..keywords import Keyword, declare, rule

if TYPE_CHECKING:  # options.py imports this file to read its keywords
    from ..options import LayerOptions

KEYWORDS = declare(__name__, "stack",
    Keyword("sandwich_coef", None, "sandwich transformer: k attention blocks first, k feed-forward blocks last",
            type=int, example=1),
    Keyword("macaron", False, "a half-step feed-forward block before and after each attention block"),
    Keyword("par_ratio", None, "PAR transformer: one attention block per par_ratio sublayers, in the lower "
            "two thirds of the stack", type=int, example=2, minimum=2),
    Keyword("custom_layers", None, "the block sequence itself, a tuple over 'a', 'c', 'f' (depth may be left out)",
            type=(tuple, list), example=("a", "f", "f")),
    Keyword("only_attn", False, "no feed-forward blocks: attention only"))


def par_layout(block: tuple[str, ...], depth: int, par_ratio: int) -> tuple[str, ...]:
    r"""The PAR sequence: $(\texttt{a}\,\texttt{f}^{w-1})^{a}\,\texttt{f}^{L - a w}$.

    >>> ''.join(par_layout(('a', 'f'), 4, 4))   # L = 8, a = 2, c = 5, w = (5 + 2) // 2 = 3
    'affaffff'
    >>> ''.join(par_layout(('a', 'f'), 6, 3))   # L = 12, a = 4, c = 8, w = (8 + 2) // 4 = 2
    'afafafafffff'
    """
    total = depth * len(block)
    if not 1 < par_ratio <= total:
        raise ValueError(f"par_ratio: expected an integer in 2..{total} (depth * sublayers per block), got {par_ratio}")
    attn_block = tuple(t for t in block if t != "f")
    # $a = \lfloor L / r \rfloor$ attention blocks over the first $c = \lfloor 2L/3 \rfloor$ sublayers
    num_attn = total // par_ratio
    cut = total * 2 // 3
    width = (cut + cut // num_attn) // num_attn
    if width < len(attn_block):
        raise ValueError(f"par_ratio: {par_ratio} leaves blocks of {width} sublayers, fewer than the "
                         f"{len(attn_block)} attention sublayers of each; use a larger par_ratio or depth")
    head = (attn_block + ("f",) * (width - len(attn_block))) * num_attn
    return head + ("f",) * (total - len(head))


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
    >>> ''.join(layer_types(LayerOptions(dim=8, depth=3, only_attn=True)))
    'aaa'
    """
    if o.custom_layers is not None:
        return tuple(o.custom_layers)
    if o.only_cross:
        default = ("c", "f")
    elif o.cross_attend:
        default = ("a", "c", "f")
    else:
        default = ("a", "f")
    if o.macaron:
        # $\tfrac12 F$, attention, $\tfrac12 F$
        default = ("f",) + default
    if o.par_ratio is not None:
        types = par_layout(default, o.depth, o.par_ratio)
    elif o.sandwich_coef is not None:
        # $\texttt{a}^k\,(\texttt{af})^{N-k}\,\texttt{f}^k$, with cross-attention after each attention
        attn = default[:-1]
        k = o.sandwich_coef
        types = attn * k + default * (o.depth - k) + ("f",) * k
    else:
        types = default * o.depth
    # Attention only: every feed-forward block goes.
    return tuple(t for t in types if t != "f") if o.only_attn else types


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


def layer_schedule(start: float, end: float, depth: int, schedule="cosine") -> tuple[float, ...]:
    r"""Values tapering from `start` to `end` over `depth` layers, e.g. a feed-forward width per layer.

    `schedule` is `'linear'` ($v_l = s + (e - s)\,t_l$), `'cosine'`
    ($v_l = s + (e - s)\,\tfrac12 (1 - \cos \pi t_l)$) or a function `(start, end, t) -> value`, with
    $t_l = l / (N - 1)$.  A tuple of length `depth` is what per-layer keywords take in x-transformers
    (`ff_mult=layer_schedule(4, 2, depth)`).

    >>> layer_schedule(1.0, 3.0, 3, 'linear')
    (1.0, 2.0, 3.0)
    >>> [round(v, 3) for v in layer_schedule(0.0, 1.0, 3)]
    [0.0, 0.5, 1.0]
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
        raise ValueError(f"depth: a schedule tapers over at least 2 layers, got {depth!r}")
    if schedule == "linear":
        def fn(s, e, t):
            return s + (e - s) * t
    elif schedule == "cosine":
        def fn(s, e, t):
            return s + (e - s) * 0.5 * (1 - math.cos(math.pi * t))
    elif callable(schedule):
        fn = schedule
    else:
        raise ValueError(f"schedule: expected 'linear', 'cosine' or a function (start, end, t), got {schedule!r}")
    return tuple(fn(start, end, layer / (depth - 1)) for layer in range(depth))


@rule("stack")
def _layout_keywords(o) -> None:
    if o.custom_layers is not None:
        bad = [t for t in o.custom_layers if t not in ("a", "c", "f")]
        if bad or not o.custom_layers:
            raise ValueError(f"custom_layers: expected a non-empty tuple over 'a', 'c' and 'f', got {o.custom_layers!r}")
        if "c" in o.custom_layers and not (o.cross_attend or o.only_cross):
            raise ValueError("custom_layers has cross-attention blocks ('c'); they need cross_attend=True")
        for other in ("sandwich_coef", "par_ratio"):
            if getattr(o, other) is not None:
                raise ValueError(f"custom_layers and {other} both set the block sequence; choose one")
        if o.macaron:
            raise ValueError("custom_layers and macaron both set the block sequence; choose one")
        if o.only_attn and "f" in o.custom_layers:
            raise ValueError("only_attn and custom_layers: custom_layers has feed-forward blocks ('f')")
    if o.par_ratio is not None and o.sandwich_coef is not None:
        raise ValueError("par_ratio and sandwich_coef both set the block sequence; choose one")
