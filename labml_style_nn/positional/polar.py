r"""
# PoPE: polar coordinate position embeddings

*Paper:* [Decoupling the "What" and "Where" With Polar Coordinate Positional Embeddings](https://arxiv.org/abs/2509.10534) (Gopalakrishnan et al., 2025)

[Rotary embeddings](rotary.md) rotate pairs of a query's features by its position.  But a pair
already has an angle of its own, set by its content, so the rotated angle mixes *what* the token
is with *where* it is, and a score cannot match on one without the other.  PoPE gives content no
angle at all: each of the $d$ features of a head becomes a magnitude $\mu = \operatorname{softplus}(x)
\ge 0$, and the position alone sets its phase,

$$\tilde q_{i,c} = \mu(q_c)\, e^{\mathrm{i}\, i \theta_c}, \qquad
\tilde k_{j,c} = \mu(k_c)\, e^{\mathrm{i}\, (j \theta_c + \delta_{hc})}, \qquad
S_{ij} = \sum_c \mu(q_c)\, \mu(k_c) \cos\big((i - j)\theta_c - \delta_{hc}\big),$$

with one frequency per feature, $\theta_c = 10000^{-c/d}$, $c = 0 \dots d - 1$, and a learned phase
$\delta_{hc} \in [-2\pi, 0]$ per head and feature on the keys.  Content decides how strongly a
pair matches ($\mu$), position decides how that match varies with distance.  The paper reports lower
perplexity than RoPE on music, genome and language data, and length extrapolation without any
rescaling.

In real numbers each complex feature is a (cos, sin) pair: queries and keys become `2 d` wide
(values stay `d` wide), the real part in the first half, the imaginary part in the second.

`polar_pos_emb=True` switches it on for every self-attention layer; `polar_bias_uniform_init=True`
draws $\delta$ from $U(-2\pi, 0)$ instead of starting it at 0.  The phases are functions of a
token's own position, so keys kept in a `LayersCache` stay valid and cached decoding equals the full
pass.  The scores keep the $1/\sqrt d$ scale of a `d`-wide head.

Tests: `tests/positional/test_polar.py` (scores depend on $i - j$ only, content changes only
magnitudes, parity with x-transformers, causal, padding and cached decoding).

Shapes: `b` batch, `h` heads, `n` queries, `j` keys, `d` head width.

## Differences from the paper and x-transformers

* x-transformers 2.31.10 cannot build `polar_bias_uniform_init=True`: it fills the phases in place on a
  parameter that requires a gradient, which PyTorch refuses (a test shows it); here the phases are drawn.
* x-transformers clamps $\delta$ to $[-2\pi, 0]$ in the forward pass (so a clamped phase gets no
  gradient); the same here.
* PoPE is refused, by name, beside rotary or xPos, persistent memory slots (`attn_num_mem_kv`, whose
  keys have no position), fewer key/value heads than heads (one phase per query head), collaborative
  heads, reversible layers and caches other than `LayersCache` (the rolling and static caches do not
  carry its phases).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("polar_pos_emb", False, "PoPE: position sets the phase, content only the magnitude of each query/key feature"),
    Keyword("polar_bias_uniform_init", False, "start PoPE's learned key phases uniform in [-2 pi, 0] instead of 0"))


class PolarEmbedding(nn.Module):
    r"""PoPE's phases: $t\,\theta_c$ per position, and the learned key phases $\delta_{hc}$.

    >>> pope = PolarEmbedding(4, heads=2)
    >>> pope(torch.arange(3)).shape, pope.key_phase().shape   # (n, d) and (h, 1, d)
    (torch.Size([3, 4]), torch.Size([2, 1, 4]))
    """

    inv_freq: Tensor  # buffer `(d,)`

    def __init__(self, dim_head: int, heads: int, bias_uniform_init: bool = False, base: float = 10000.0):
        super().__init__()
        # $\theta_c = \text{base}^{-c/d}$, one frequency per feature
        self.register_buffer("inv_freq", base ** -(torch.arange(dim_head).float() / dim_head), persistent=False)
        self.phase = nn.Parameter(torch.zeros(heads, 1, dim_head))
        if bias_uniform_init:
            nn.init.uniform_(self.phase, -2 * math.pi, 0.0)

    def forward(self, positions: Tensor) -> Tensor:
        r"""$t\,\theta_c$: `(n, d)`."""
        return positions.float()[:, None] * self.inv_freq[None, :]

    def key_phase(self) -> Tensor:
        r"""$\delta_{hc}$, clamped to $[-2\pi, 0]$: `(h, 1, d)`."""
        return self.phase.clamp(-2 * math.pi, 0.0)


def apply_polar(t: Tensor, phases: Tensor) -> Tensor:
    r"""$\operatorname{softplus}(t)\,(\cos\phi, \sin\phi)$: `(b, h, n, d)` to `(b, h, n, 2d)`.

    >>> apply_polar(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1)).flatten().tolist()   # softplus(0) = log 2
    [0.6931471824645996, 0.0]
    """
    mu = F.softplus(t.float())  # $\mu = \operatorname{softplus}(x) \ge 0$: content, no angle
    out = torch.cat((mu * phases.cos(), mu * phases.sin()), dim=-1)  # (b, h, n, 2d)
    return out.to(t.dtype)


@rule("stack")
def _polar_keywords(o) -> None:
    if o.polar_bias_uniform_init and not o.polar_pos_emb:
        raise ValueError("polar_bias_uniform_init: only meaningful with polar_pos_emb=True")
    if not o.polar_pos_emb:
        return
    a = o.attn
    for name, on in (("rotary_pos_emb", o.rotary_pos_emb), ("rotary_xpos", o.rotary_xpos),
                     ("position_infused_attn", o.position_infused_attn), ("attn_num_mem_kv", a.num_mem_kv),
                     ("attn_collab_heads", a.collab_heads), ("reversible", o.reversible)):
        if on:
            raise ValueError(f"polar_pos_emb and {name} cannot be combined: PoPE sets the phases of queries and "
                             "keys itself" if "rotary" in name or "infused" in name else
                             f"polar_pos_emb and {name} cannot be combined (see positional/polar.py)")
    if a.num_kv_heads(o.heads) != o.heads:
        raise ValueError("polar_pos_emb and attn_kv_heads (or attn_one_kv_head): PoPE learns a key phase per head, "
                         "so every query head needs its own key head")
