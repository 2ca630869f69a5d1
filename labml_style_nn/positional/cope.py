r"""
# CoPE: contextual position encoding

*Paper:* [Contextual Position Encoding: Learning to Count What's Important](https://arxiv.org/abs/2405.18719)
(Golovneva et al., 2024)

Token positions count tokens.  But what a model needs is often a count of something else: "the
third sentence back", "the previous `if`".  CoPE lets the model decide what to count.  Each query
gates every earlier key with a sigmoid of their score, and a key's position *relative to the query*
is the number of gates that are open between them:

$$g_{ij} = \sigma(S_{ij}), \qquad p_{ij} = \sum_{k = j}^{i} g_{ik}.$$

With every gate open $p_{ij} = i - j + 1$, the usual relative position; with gates open only on
sentence ends, $p_{ij}$ counts sentences.  Positions are fractional, so they index a learned table of
position embeddings $e[0], \dots, e[P - 1]$ by interpolation, and the score gains a position term:

$$S_{ij} \leftarrow S_{ij} + (1 - w)\, q_i^\top e[\lfloor p_{ij} \rfloor] + w\, q_i^\top e[\lceil p_{ij} \rceil],
\qquad w = p_{ij} - \lfloor p_{ij} \rfloor,$$

with $p_{ij}$ clamped at $P - 1$.  The products $q_i^\top e[p]$ for the $P$ integer positions are
computed once per query, so the interpolation is two gathers.  The paper shows CoPE solves counting
and selective copying tasks that absolute and relative positions fail, and improves language
modelling perplexity.

Two variants from x-transformers: `cope_soft_onehot_pos=True` replaces the linear interpolation by a
soft one-hot over the $P$ positions, $\operatorname{softmax}_p(-|p_{ij} - p| / 0.05)$;
`cope_talking_heads=True` mixes the heads' scores (a learned $h \times h$ matrix) before the gates,
so one head can count what another head attends to.

The gates read the masked scores (a hidden key's gate is closed), so the counts see only visible
keys, and each query's positions depend only on its own row: a cached step computes the same
positions as the full pass.  CoPE is designed for causal attention; it is refused elsewhere.

It is a `score_transform` of [attention](attention.md) that reads the queries; layers with it take
the explicit path.  The table starts at zero (x-transformers' initialisation), so CoPE changes
nothing until it is trained.

`attn_use_cope=True`, `attn_cope_max_pos=16`, `attn_cope_soft_onehot_pos=False`,
`attn_cope_talking_heads=False`.  Tests: `tests/positional/test_pos_in_attention.py`.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys, `d` head dim, `P` positions in the table.

## Differences from the paper

* The paper's gates $\sigma(q_i^\top k_j)$ are the raw dot products; here (and in x-transformers)
  they read the scaled, biased scores of the layer.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention.extension_points import ScoreTransform, masked_fill_value
from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("use_cope", False, "contextual positions: count the keys whose gate sigma(S) is open"),
    Keyword("cope_max_pos", 16, "use_cope: size P of the position table (positions clamp at P - 1)", minimum=1,
            example=8),
    Keyword("cope_soft_onehot_pos", False, "use_cope: a soft one-hot over positions instead of interpolation"),
    Keyword("cope_talking_heads", False, "use_cope: mix the heads' scores before the gates"))


def contextual_positions(gates: Tensor, max_pos: int) -> Tensor:
    r"""$p_{ij} = \sum_{k \ge j} g_{ik}$ over the keys of each row, clamped at $P - 1$.

    >>> contextual_positions(torch.tensor([[1.0, 0.0, 1.0, 1.0]]), 16).tolist()
    [[3.0, 2.0, 2.0, 1.0]]
    """
    return gates.flip(-1).cumsum(dim=-1).flip(-1).clamp(max=max_pos - 1)


class CoPE(ScoreTransform):
    """Score transform adding the contextual position term $q_i^top e[p_{ij}]$ to every score."""

    def __init__(self, heads: int, dim_head: int, max_pos: int = 16, soft_onehot: bool = False,
                 talking_heads: bool = False, soft_onehot_temp: float = 5e-2):
        super().__init__()
        self.max_pos, self.soft_onehot, self.soft_onehot_temp = max_pos, soft_onehot, soft_onehot_temp
        # $e[0], \dots, e[P - 1]$, zero at the start
        self.pos_emb = nn.Parameter(torch.zeros(max_pos, dim_head))
        self.talking_heads = nn.Conv2d(heads, heads, 1, bias=False) if talking_heads else None
        self._q: Optional[Tensor] = None

    def bind(self, **inputs) -> None:
        self._q = inputs.get("q")

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        q, self._q = self._q, None
        assert q is not None, "CoPE: the attention module binds the queries before the scores"
        fill = masked_fill_value(scores.dtype)
        masked = scores if visible is None else scores.masked_fill(~visible, fill)
        if self.talking_heads is not None:
            i, j = masked.shape[-2:]
            # Mixed heads, then the future hidden again (the mixing can reopen it).
            future = torch.ones(i, j, dtype=torch.bool, device=scores.device).triu(j - i + 1)
            masked = self.talking_heads(masked).masked_fill(future, fill)
        # $g_{ij} = \sigma(S_{ij})$ and $p_{ij} = \sum_{k \ge j} g_{ik}$
        pos = contextual_positions(masked.sigmoid(), self.max_pos)  # (b, h, i, j)
        # $q_i^\top e[p]$ for each integer position $p$
        logits = torch.einsum("bhid,pd->bhip", q.to(self.pos_emb.dtype), self.pos_emb)  # (b, h, i, P)
        if self.soft_onehot:
            grid = torch.arange(self.max_pos, device=scores.device, dtype=pos.dtype)
            # $\operatorname{softmax}_p(-|p_{ij} - p| / t)$
            onehot = F.softmax(-(pos[..., None] - grid).abs() / self.soft_onehot_temp, dim=-1)  # (b, h, i, j, P)
            term = torch.einsum("bhijp,bhip->bhij", onehot, logits)
        else:
            low, high = pos.floor(), pos.ceil()
            w = pos - low
            # $(1 - w)\, q_i^\top e[\lfloor p \rfloor] + w\, q_i^\top e[\lceil p \rceil]$
            term = logits.gather(-1, high.long()) * w + logits.gather(-1, low.long()) * (1 - w)
        return scores + term.to(scores.dtype)


@rule("attn")
def _cope_settings(a, prefix: str, layers) -> None:
    for name, default in (("cope_max_pos", 16), ("cope_soft_onehot_pos", False), ("cope_talking_heads", False)):
        if getattr(a, name) != default and not a.use_cope:
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}use_cope=True")
    if a.use_cope and not layers.causal:
        raise ValueError(f"{prefix}use_cope and causal=False: contextual positions count the earlier keys; "
                         "CoPE needs a causal stack (Decoder)")
    if a.use_cope and a.l2_distance:
        raise ValueError(f"{prefix}use_cope and {prefix}l2_distance: CoPE reads the queries that l2_distance "
                         "widens; choose one")
