r"""
# xPos: rotary embeddings with an exponential decay

*Paper:* [A Length-Extrapolatable Transformer](https://arxiv.org/abs/2212.10554) (Sun et al., 2022)

[Rotary embeddings](rotary.md) make a score depend on the distance $j - i$ through waves
$\cos((j - i)\theta_k)$ that never decay: a far key's contribution oscillates as strongly as a near
one's, and attention resolves distances it never saw in training badly.  xPos multiplies each
rotated pair by a factor that grows with the query's position and shrinks with the key's, so their
product decays with the distance:

$$\tilde q_i = \zeta_k^{\,i/B}\, R_i q, \qquad \tilde k_j = \zeta_k^{-j/B}\, R_j k, \qquad
\langle \tilde q_i, \tilde k_j \rangle_k = \zeta_k^{\,(i - j)/B}\, \langle R_i q, R_j k \rangle_k,$$

with $\zeta_k = \frac{2k/r + 0.4}{1.4} \in [\tfrac27, 1)$ for pair $k$ and a scale base $B$
(`rotary_xpos_scale_base`, 512).  For a causal query $i \ge j$, so the factor is at most one and falls
geometrically with the distance; fast pairs (small $k$, small $\zeta_k$) decay fastest, slow pairs
hardly at all.  The score still depends on $i - j$ alone: xPos is a relative scheme.

`rotary_xpos=True` turns rotary embeddings on with this decay; it needs a causal stack (for a key
after the query, $i - j < 0$, the factor would grow).

Implementation: the scale is folded into the rotation tables, $(\cos, \sin)\,\zeta^{t/B}$ for queries
and $(\cos, \sin)\,\zeta^{-t/B}$ for keys, a `(4, n, r)` tensor whose first two rows turn queries and
last two turn keys; attention applies them exactly like plain rotary angles.  Because each factor is
a function of a token's own absolute position, keys kept in a cache stay valid and a cached
decoding equals the full pass.

Tests: `tests/positional/test_stack_positions.py` (the decay, relative positions, causal only, parity
with x-transformers, cached decoding).

Shapes: `n` positions, `r` rotated features.

## Differences from the paper and x-transformers

* Both measure positions from the middle of the current sequence, $\zeta^{(t - c)/B}$ with
  $c = \lfloor n/2 \rfloor$, to keep the factors near one.  The centre cancels in every score
  ($\zeta^{(i-c)/B}\zeta^{-(j-c)/B} = \zeta^{(i-j)/B}$), but it must be the same for a query and every key
  it meets, which a cache that keeps keys from earlier calls cannot guarantee.  Here $c = 0$: the
  same scores (x-transformers' within float32 rounding, tested), valid caches, and factors of
  $\zeta_0^{\pm t/B}$, about $10^{\pm 9}$ at $t = 8192$: fine in float32 and bfloat16, which keep
  float32's exponent range, but past float16's range beyond about 4,000 tokens.
* The paper also uses blockwise causal attention at inference; that is not part of xPos here.
"""

import torch
from torch import Tensor

from ..keywords import Keyword, declare, rule
from .rotary import RotaryEmbedding

KEYWORDS = declare(__name__, "stack",
    Keyword("rotary_xpos", False, "xPos: rotary embeddings whose scores decay with distance (causal only)"),
    Keyword("rotary_xpos_scale_base", 512, "xPos scale base B of the decay zeta^((i-j)/B)", example=64, minimum=1))


class XPosEmbedding(RotaryEmbedding):
    r"""Rotary angles with xPos' scale folded in: `(4, n, r)`, query rows then key rows.

    >>> t = XPosEmbedding(4, scale_base=1)(torch.tensor([0, 1]))
    >>> t.shape, [round(v, 4) for v in (t[0, 1] * t[2, 1] + t[1, 1] * t[3, 1]).tolist()]   # cos^2 + sin^2 = 1
    (torch.Size([4, 2, 4]), [1.0, 1.0, 1.0, 1.0])
    """

    zeta: Tensor  # buffer `(r,)`

    def __init__(self, dim: int, base: float = 10000.0, *, scale_base: int = 512, scaling=None):
        super().__init__(dim, base, scaling=scaling)
        self.scale_base = scale_base
        # $\zeta_k = (2k/r + 0.4) / 1.4$, the same for both members of pair $k$ ("rotate half" layout)
        zeta = (torch.arange(0, dim, 2).float() / dim + 0.4) / 1.4  # (r/2,)
        self.register_buffer("zeta", torch.cat((zeta, zeta)), persistent=False)

    def scales(self, positions: Tensor) -> Tensor:
        r"""$\zeta_k^{t/B}$ for every position $t$: `(n, r)` (or `(b, n, r)` for per-row positions)."""
        return self.zeta ** (positions.float()[..., None] / self.scale_base)

    def angles(self, positions: Tensor, magnitude: bool = True) -> Tensor:
        r"""`(4, n, r)`: $(\cos, \sin)\,\zeta^{t/B}$ for queries and $(\cos, \sin)\,\zeta^{-t/B}$ for keys.

        `magnitude=False` returns the key rows alone, `(2, n, r)`: what moves a stored key by `positions`
        (its rotation and its xPos factor compose), as attention sinks need.
        """
        rotation = super().angles(positions, magnitude)  # (2, n, r)
        s = self.scales(positions)  # (n, r)
        if not magnitude:
            return rotation / s
        # $\zeta^{t/B} R_t$ for queries, $\zeta^{-t/B} R_t$ for keys
        return torch.cat((rotation * s, rotation / s))


@rule("stack")
def _xpos_needs_causal(o) -> None:
    if o.rotary_xpos and not o.causal:
        raise ValueError("rotary_xpos and causal=False: xPos decays with i - j >= 0 and would grow for keys after "
                         "the query; use a causal stack (Decoder)")
    if o.rotary_xpos_scale_base != 512 and not o.rotary_xpos:
        raise ValueError("rotary_xpos_scale_base: only meaningful with rotary_xpos=True")
