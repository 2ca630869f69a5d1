r"""
# Value residual learning (ResFormer)

*Paper:* [Value Residual Learning For Alleviating Attention Concentration In Transformers](https://arxiv.org/abs/2410.17897) (Zhou et al., 2024)

The hidden residual stream carries each token's *state* from layer to layer, but the values a layer
attends over are a fresh projection of that state.  Deep layers tend to concentrate their attention
on a few tokens and lose the token-level information the first layer still had.  ResFormer adds a
second, shorter residual path: every later attention layer mixes the **values of the first
attention layer** into its own values before attending,

$$V_l \leftarrow \lambda\, V_l + (1 - \lambda)\, V_1 = V_1 + \lambda\,(V_l - V_1), \qquad l > 1,$$

so each layer can always read the first layer's token information, whatever its attention pattern.
The paper uses a fixed $\lambda = \tfrac12$; x-transformers (and this library by default) learns a
mix per token and head from the layer's input,

$$\lambda_{h,j} = \sigma\!\left(w_h^\top x_j + b_h\right),$$

where $x_j$ is the (normalised) input that produced value $j$.  The values of the first layer are
those of its own projection, before any mixing.

**Caching.**  The mix acts on each value row on its own: row $j$ of $V_l$ depends only on token $j$.
A key/value cache therefore stores the mixed values as they are computed, and a cached step needs
only the first layer's values of its new tokens, which the same step computes: nothing more is
kept.  A Transformer-XL memory holds each layer's inputs over the earlier tokens; the first layer's
values of those tokens come from its own memory and the mix of each later layer from its memory,
so a segment with memory computes what one pass over both segments computes.

`add_value_residual=True` turns it on for self-attention (the first self-attention layer's values
go to the later ones) and, in a stack with cross-attention, separately for cross-attention (the
first cross-attention layer's values go to the later ones).  `learned_value_residual_mix` (default
`True`, as x-transformers) learns the self-attention mix; `False` keeps the paper's $\tfrac12$.
`attn_learned_value_residual_mix` (and `cross_attn_learned_value_residual_mix`) set it per kind of
layer: cross-attention layers mix with $\tfrac12$ unless asked, and a learned cross-attention mix
reads the context token that produced each value.

Tests: `tests/residual/test_res_stream.py` (the mix against a reference, the invariant sweeps,
cached decoding and XL memory, parity with x-transformers).

Shapes: `b` batch, `g` key/value heads, `j` value positions (memory and tokens, or context),
`d` head dim, `D` model width.

## Differences from the paper

* The paper's mix is a fixed $\tfrac12$ (and learned scalars in a variant); the learned per-token,
  per-head mix is x-transformers'.

## Differences from x-transformers

* x-transformers computes the mix from the queries' input.  Here it comes from the input of each
  value: the same in plain self-attention, but with a Transformer-XL memory the memory rows get
  their own mix (x-transformers' shapes do not broadcast there) and a learned cross-attention mix
  reads the context (x-transformers' reads the queries, whose number differs from the keys').
* With hyper-connections' three inputs (`qkv_receive_diff_residuals`) the mix reads the values'
  input, x-transformers' the queries'.
* `attn_learned_value_residual_mix=True` on x-transformers' `AttentionLayers` is a `TypeError` (it
  passes the argument twice); here it sets the self-attention mix, and the cross-attention one too
  unless `cross_attn_learned_value_residual_mix` says otherwise.
* With grouped-query attention the mix is per key/value head (x-transformers' is per query head,
  which only broadcasts when the head counts agree).
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("add_value_residual", False,
            "later attention layers mix the first attention layer's values into theirs (ResFormer)"),
    Keyword("learned_value_residual_mix", True,
            "learn the value residual mix per token and head (False: a fixed 1/2)"))
ATTN_KEYWORDS = declare(__name__, "attn",
    Keyword("learned_value_residual_mix", None,
            "learn the value residual mix of these layers (None: the stack's choice for self-attention, "
            "a fixed 1/2 for cross-attention)", type=bool, example=True))


class ValueResidualMix(nn.Module):
    r"""The learned mix $\lambda_{h,j} = \sigma(w_h^\top x_j + b_h)$, one per value row and head.

    >>> mix = ValueResidualMix(4, 2)
    >>> mix(torch.zeros(1, 3, 4)).shape   # (b, g, j, 1)
    torch.Size([1, 2, 3, 1])
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.proj = nn.Linear(dim, heads)

    def forward(self, x: Tensor) -> Tensor:
        # $\sigma(W x_j + b)$: `(b, j, D)` to `(b, g, j, 1)`
        return rearrange(torch.sigmoid(self.proj(x)), "b j g -> b g j 1")


class ValueResidual:
    r"""The first attention layer's values, carried through one forward pass to the later layers.

    The first call records its values and returns them unchanged; every later call returns
    $V_1 + \lambda (V_l - V_1)$.

    >>> carry, v1, v2 = ValueResidual(), torch.zeros(1, 1, 2, 1), torch.ones(1, 1, 2, 1)
    >>> carry(v1, v1, None).flatten().tolist(), carry(v2, v2, None).flatten().tolist()
    ([0.0, 0.0], [0.5, 0.5])
    """

    def __init__(self, first: Optional[Tensor] = None):
        self.first = first  # $V_1$ `(b, g, j, d)`, `None` before the first layer

    def __call__(self, v: Tensor, kv_input: Tensor, mix: Optional[nn.Module]) -> Tensor:
        """Values `v` `(b, g, j, d)` computed from `kv_input` `(b, j, D)`, mixed with the first layer's."""
        if self.first is None:
            self.first = v
            return v
        if self.first.shape != v.shape:
            raise ValueError(f"add_value_residual: the first layer's values have shape {tuple(self.first.shape)}, "
                             f"this layer's {tuple(v.shape)}; every attention layer of a kind needs the same "
                             "key/value heads, head width and positions")
        weight = mix(kv_input) if mix is not None else 0.5
        # $V_1 + \lambda (V_l - V_1)$
        return self.first.lerp(v, weight)


#
# ## Which layers learn a mix
#
# The first attention layer of each kind is the source of the values and has no mix.  A layer
# shared by several runs (`weight_tie_layers`) is one module, so the first *built* layer of a kind is
# the one without a mix, as in x-transformers.
def attach_value_mixes(o, kinds: tuple[str, ...], blocks: list) -> None:
    """Give every attention block after the first of its kind a learned mix, where asked for."""
    if not o.add_value_residual:
        return
    seen = set()
    for kind, block in zip(kinds, blocks, strict=True):
        if kind == "f":
            continue
        if kind in seen and learns_mix(o, kind):
            attn = block.fn
            block.fn.value_mix = ValueResidualMix(attn.dim if kind == "a" else attn.dim_context, attn.kv_heads)
        seen.add(kind)


def learns_mix(o, kind: str) -> bool:
    """Whether the attention layers of `kind` (`'a'` or `'c'`) learn the value residual mix."""
    a = (o.cross_attn or o.attn) if kind == "c" else o.attn
    if a.learned_value_residual_mix is not None:
        return a.learned_value_residual_mix
    return o.learned_value_residual_mix if kind == "a" else False


@rule("stack")
def _value_residual_keywords(o) -> None:
    if not o.add_value_residual:
        if not o.learned_value_residual_mix:
            raise ValueError("learned_value_residual_mix=False: only meaningful with add_value_residual=True")
        for prefix, a in (("attn_", o.attn), ("cross_attn_", o.cross_attn)):
            if a is not None and a.learned_value_residual_mix is not None:
                raise ValueError(f"{prefix}learned_value_residual_mix: only meaningful with add_value_residual=True")
    elif o.reversible:
        raise ValueError("reversible and add_value_residual cannot be combined: the first layer's values would "
                         "have to be kept for the backward pass")
