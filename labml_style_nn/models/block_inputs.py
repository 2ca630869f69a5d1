r"""
# Block inputs and outputs: `transform_block_inputs` and `block_hiddens`

Some techniques reach into the stack between its blocks: they read what each *block* (an attention
layer and the feed-forward layer after it, $L$ sublayers) hands to the next, and on a later pass
change what a block receives.  The [full-bandwidth transformer](../families/full_bandwidth.md)
feeds a deep block's output of the previous pass into a shallow block's input.

A stack's forward accepts x-transformers' `transform_block_inputs`: a dict from block depth
$k = 1, 2, \dots$ to a function of the stream, or one function `fn(k, stream)`.  Block $k > 1$
receives $f_k(x)$ in place of the stream $x$ that block $k - 1$ left; block 1's input is the token
embedding, which the wrapper transforms before adding positions (`TransformerWrapper` passes
`transform_block_inputs` on, and also takes `transform_token_embeds`, a function of the token
embeddings alone).  The intermediates (`return_intermediates=True`) carry `block_hiddens`: each
block's output, the last one after the final norm.

$$x^{(k)}_{\text{in}} = f_k\big(x^{(k-1)}_{\text{out}}\big), \qquad
\texttt{block\_hiddens}[k - 1] = x^{(k)}_{\text{out}}$$

A block is the default block of the layout (`a f`, `a c f` with cross-attention, macaron's `f a f`);
custom layouts (`custom_layers`, `par_ratio`, `sandwich_coef`) count each sublayer as a block, as
x-transformers does.

**Differences from x-transformers.**  A sublayer skipped by stochastic depth still ends its block
here (x-transformers records no output for a block whose last sublayer was skipped).  Reversible
stacks and hyper-connections (several streams) refuse `transform_block_inputs`.

Shapes: `b` batch, `n` tokens, `D` model width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Union

from torch import Tensor

BlockTransforms = Union[dict[int, Callable[[Tensor], Tensor]], Callable[[int, Tensor], Tensor]]


def default_block_length(o) -> int:
    """Sublayers per block: those of the default block, or 1 for a custom layout.

    >>> from labml_style_nn.options import LayerOptions
    >>> default_block_length(LayerOptions(dim=8, depth=3))
    2
    >>> default_block_length(LayerOptions(dim=8, depth=3, cross_attend=True))
    3
    """
    if o.custom_layers is not None or o.par_ratio is not None or o.sandwich_coef is not None:
        return 1
    base = 3 if o.cross_attend and not o.only_cross else 2  # `a f`, `a c f` or `c f`
    return base + (1 if o.macaron else 0)


def check_transforms(transforms: Optional[BlockTransforms], name: str = "transform_block_inputs") -> None:
    """A dict from block depths (from 1) to functions, or one function of `(depth, stream)`."""
    if transforms is None or callable(transforms):
        return
    if not isinstance(transforms, dict) or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 and callable(f) for k, f in transforms.items()):
        raise ValueError(f"{name}: expected a dict from block depths (1, 2, ...) to functions of the stream, "
                         f"or one function fn(depth, stream)")


def transform_block_input(transforms: Optional[BlockTransforms], depth: int, x: Tensor) -> Tensor:
    r"""$f_k(x)$ for block `depth` $= k$, or `x` itself where no function is given for it."""
    if transforms is None:
        return x
    if isinstance(transforms, dict):
        fn = transforms.get(depth)
        return fn(x) if fn is not None else x
    return transforms(depth, x)
