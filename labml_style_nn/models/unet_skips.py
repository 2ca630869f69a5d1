r"""
# U-Net skips between the two halves of a stack (U-ViT)

*Paper:* [All are Worth Words: A ViT Backbone for Diffusion Models](https://arxiv.org/abs/2209.12152) (Bao et al., 2023)

A U-Net's decoder half receives, at each resolution, the features its encoder half computed at the
same resolution.  U-ViT brings these long skips to a transformer with no resolutions: the input of
block $l$ in the first half is kept, and block $N - 1 - l$ in the second half receives it,
concatenated with its own input and projected back to the model width,

$$x \leftarrow \big[\,x_{l}\,;\ x\,\big]\, W_{\text{skip}}, \qquad W_{\text{skip}} \in \mathbb R^{2D \times D},$$

before that block runs.  The paper finds the long skips essential for diffusion (they carry the
low-level detail that pixel prediction needs) and the concatenate-and-project form better than
adding the two.

With $N$ blocks (blocks are numbered from 0; a block is the default attention and feed-forward
pair, with cross-attention or macaron's extra feed-forward when present), the pairs are
$(l, N - 1 - l)$ for $l < \lfloor N/2 \rfloor$; with an odd $N$ the middle block has no partner.
For $N = 6$: $0 \to 5$, $1 \to 4$, $2 \to 3$.

Every skip acts token by token, so cached decoding and Transformer-XL memories (which hold each
attention layer's input, taken after the skip) work unchanged.

Tests: `tests/residual/test_res_stream.py` (the pairs, the invariant sweeps, cached decoding, XL
memory, parity with x-transformers).

Shapes: `b` batch, `n` tokens, `D` model width.

## Differences from the paper

* U-ViT also adds a convolution after the last block (for images); that is not part of a layer stack.

## Differences from x-transformers

* x-transformers counts the skips as `depth // len(block)`, which fails (an empty list) for blocks of
  three sublayers (`cross_attend`, `macaron`) at most depths; here every block of the second half has
  a partner, and where x-transformers runs the two agree.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("unet_skips", False, "U-ViT long skips: block N-1-l receives block l's input, concatenated and projected"))


def skip_pairs(depth: int) -> dict[int, int]:
    r"""Target block $\to$ source block of each long skip.

    >>> skip_pairs(6)
    {3: 2, 4: 1, 5: 0}
    >>> skip_pairs(5)
    {3: 1, 4: 0}
    """
    return {depth - 1 - s: s for s in reversed(range(depth // 2))}


class UNetSkips(nn.Module):
    r"""The long skips of a stack whose sublayer $i$ starts block $i / s$ ($s$ sublayers per block).

    Call `keep(i, x)` before sublayer $i$ runs; it returns the (maybe combined) input.
    """

    def __init__(self, dim: int, depth: int, per_block: int):
        super().__init__()
        self.per_block = per_block
        pairs = skip_pairs(depth)
        # Sublayer index of each target block's first sublayer -> that of its source block.
        self.sources = {t * per_block: s * per_block for t, s in pairs.items()}
        self.combine = nn.ModuleDict({str(t): nn.Linear(2 * dim, dim, bias=False) for t in self.sources})

    def keep(self, i: int, x: Tensor, kept: list[Tensor]) -> Tensor:
        """Remember the input of sublayer `i`; combine it with the source's input if it starts a target block."""
        kept.append(x)
        if i not in self.sources:
            return x
        # $[x_l; x]\, W_{\text{skip}}$
        return self.combine[str(i)](torch.cat((kept[self.sources[i]], x), dim=-1))  # (b, n, D)


def make_unet_skips(o, kinds: tuple[str, ...]) -> Optional[UNetSkips]:
    """The skips of a stack with `unet_skips=True`, or `None`."""
    if not o.unet_skips:
        return None
    return UNetSkips(o.dim, o.depth, len(kinds) // o.depth)


@rule("stack")
def _unet_keywords(o) -> None:
    if not o.unet_skips:
        return
    for name in ("custom_layers", "par_ratio", "sandwich_coef", "layers_execute_order"):
        if getattr(o, name) is not None:
            raise ValueError(f"unet_skips and {name} cannot be combined: the skips pair the blocks of the default "
                             "layout")
    for name in ("weight_tie_layers", "only_attn", "reversible"):
        if getattr(o, name):
            raise ValueError(f"unet_skips and {name} cannot be combined: " + (
                "a layer run several times would need one skip per run" if name == "weight_tie_layers" else
                "x-transformers refuses it too; the skips pair attention and feed-forward blocks"
                if name == "only_attn" else "a reversible stack keeps no block inputs"))
    if o.depth < 2:
        raise ValueError(f"unet_skips: expected depth >= 2 (one block in each half), got {o.depth}")
