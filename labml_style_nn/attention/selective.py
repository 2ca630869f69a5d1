r"""
# Selective attention

*Paper:* [Selective Attention Improves Transformer](https://arxiv.org/abs/2410.02703)
(Leviathan, Kalman and Matias, 2024)

In a causal language model a token stays visible to every later token, even once it is no longer
useful (a superseded variable assignment, a closed bracket).  Selective attention lets each token
*mask* earlier tokens for all the tokens after it.  Token $i'$ decides how much to mask token $j$
with a non-negative score, taken from the first head's attention logits, and the penalties add up
over time:

$$F_{i'j} = \operatorname{ReLU}(S^{(1)}_{i'j}) \;\; (F_{jj} = 0,\ F_{i'0} = 0), \qquad
\tilde S_{ij} = S_{ij} - \sum_{i' < i} F_{i'j}.$$

A key masked strongly by earlier tokens gets less attention from every later query, in every head.
A token never masks itself, and nobody masks the first token (it often serves as an attention
sink).  The paper finds that a model with selective attention matches one with about twice as many
heads and parameters, and that masked tokens can be dropped from the context, shrinking the cache.

The penalty of query $i$ sums the decisions of the *earlier* queries only, so the layer stays
causal.  Cached decoding keeps the running sum $\sum_{i' < i} F_{i'j}$ of each cached key in the
cache's state (`(b, L)` numbers per layer), so a cached step equals the full pass.

With a Transformer-XL memory the memory's keys can be masked only by the current segment's queries
(the decisions of the memory's own tokens are not carried from segment to segment).

It is a `score_transform` of [attention](attention.md) that reads the first head's masked scores;
layers with it take the explicit path.  It needs a causal stack.

`attn_selective=True`.  Tests: `tests/attention/test_attn_scoring.py` (parity with x-transformers,
causality, cached decoding equals the full pass).

Shapes: `b` batch, `h` heads, `i` queries, `j` keys, `m` persistent slots.

## Differences from the paper

* The paper also evaluates masking only (no context pruning); this is that variant, without the
  memory savings of dropping masked tokens.

## Differences from x-transformers

* A padded query masks nothing (x-transformers lets padded tokens' scores mask later tokens, so
  what a padded token holds would change the real ones on left-padded batches).
* x-transformers cannot decode selective attention with a cache (it falls back to full passes);
  here the running sum is cached.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..keywords import Keyword, declare, rule
from .extension_points import ScoreTransform, masked_fill_value

KEYWORDS = declare(__name__, "attn",
    Keyword("selective", False, "earlier tokens mask keys for every later query (causal stacks only)"))


class SelectiveAttention(ScoreTransform):
    r"""Score transform: subtract from each key the masking decisions of all earlier queries.

    Token 2 masks token 1 with strength 3; token 3 then sees key 1 penalised by 3:

    >>> sel = SelectiveAttention()
    >>> scores = torch.zeros(1, 1, 4, 4)
    >>> scores[0, 0, 2, 1] = 3.0
    >>> sel.bind(num_mem=0, offset=0, query_mask=None, state=None)
    >>> sel.pre_softmax(scores, torch.ones(4, 4).tril().bool())[0, 0, 3].tolist()
    [0.0, -3.0, 0.0, 0.0]
    """

    # The running sums live in the cache's state between steps.
    stateful = True

    def __init__(self):
        super().__init__()
        self._inputs: dict = {}

    def bind(self, **inputs) -> None:
        self._inputs = inputs

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        num_mem, offset = self._inputs.get("num_mem", 0), self._inputs.get("offset", 0)
        query_mask, state = self._inputs.get("query_mask"), self._inputs.get("state")
        i, j = scores.shape[-2:]
        masked = scores if visible is None else scores.masked_fill(~visible, masked_fill_value(scores.dtype))
        # $F_{i'j} = \operatorname{ReLU}(S^{(1)}_{i'j})$ from the first head, hidden keys give 0
        gate = F.relu(masked[:, 0])  # (b, i, j)
        q_pos = torch.arange(i, device=scores.device)[:, None] + offset + num_mem
        k_pos = torch.arange(j, device=scores.device)[None, :]
        # No token masks itself, the first token, or a persistent slot; a padded query masks nothing.
        keep = (k_pos != q_pos) & (k_pos > num_mem)
        gate = gate * keep
        if query_mask is not None:
            gate = gate * query_mask[:, :, None]
        # $\sum_{i' < i} F_{i'j}$: the decisions of earlier queries in this pass, plus those of the cached ones
        earlier = gate.cumsum(dim=-2) - gate  # (b, i, j)
        if state is not None:
            before = state.get("selective")  # (b, keys cached before this step)
            total = gate.sum(dim=-2)  # (b, j)
            if before is not None:
                before = F.pad(before, (0, j - before.shape[-1]))
                earlier = earlier + before[:, None, :]
                total = total + before
            state["selective"] = total
        # $\tilde S_{ij} = S_{ij} - \sum_{i' < i} F_{i'j}$
        return scores - rearrange(earlier, "b i j -> b 1 i j")


@rule("attn")
def _selective_needs_causal(a, prefix: str, layers) -> None:
    if a.selective and not layers.causal:
        raise ValueError(f"{prefix}selective and causal=False: earlier tokens mask keys for later ones, "
                         "which needs a causal stack (Decoder)")
