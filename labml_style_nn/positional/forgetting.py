r"""
# Forgetting attention: data-dependent ALiBi

*Paper:* [Forgetting Transformer: Softmax Attention with a Forget Gate](https://arxiv.org/abs/2503.02130)
(Lin et al., ICLR 2025; [openreview](https://openreview.net/forum?id=q2Lnyegkr8))

Recurrent networks forget through a gate; softmax attention cannot.  The Forgetting Transformer
gives attention the forget gate of a recurrent network: each token $t$ computes a gate
$f_t = \sigma(w_h^\top x_t + b_h) \in (0, 1)$ per head, and a query at $i$ discounts a key at $j$ by
the product of the gates in between, added to the scores in log space:

$$S_{ij} \leftarrow S_{ij} + \sum_{t = j + 1}^{i} \log f_t = S_{ij} + c_i - c_j, \qquad c_t = \sum_{t' \le t} \log f_{t'}.$$

With a constant gate this is [ALiBi](alibi.md)'s linear bias, $-m |i - j|$ with $m = -\log f$; with
a learned, input-dependent gate a token can erase the past (a small $f_t$) or keep it (an $f_t$ near
one).  The paper finds it better than the Transformer at long-context language modelling and length
extrapolation, with no position embeddings at all.  The gate's bias starts at 5, so
$f_t = \sigma(5) = 0.993$: the model starts forgetting slowly.

The cumulative sums make it cheap: one gate per token and head, a cumulative sum, and a difference,
$(b, h, i, j)$, which the fused kernel takes as its bias.  Cached decoding keeps the running sum
$c_t$ of every cached key in the cache's state, so a cached step equals the full pass.

**In an encoder** each head has a second gate for the other direction: keys after the query are
discounted by the reverse gates between them, $\sum_{t = i + 1}^{j} \log f'_t$.

**Per row** (`data_dependent_alibi_per_row=True`, x-transformers' variant): the gate depends on the
query as well as on the token it passes, $\log f_{it} = \log \sigma(a_i^\top b_t / \sqrt{d_f})$, from
small projections $a, b$ of width $d_f$ = `data_dependent_alibi_per_row_dim_head`, and

$$S_{ij} \leftarrow S_{ij} + \sum_{t = j}^{i - 1} \log f_{it}$$

(note the range: the key's own gate counts, the query's does not).  Causal stacks only.

Each attention layer computes its own gates from its own input: this is a `score_bias` of
[attention](attention.md), added to any shared bias.

`attn_data_dependent_alibi=True`, with `attn_data_dependent_alibi_kwargs=dict(bias_init=5.0,
post_log_scale=1.0)` (`post_log_scale` multiplies every $\log f$).  Tests:
`tests/positional/test_pos_in_attention.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `i`/`j` query/key positions, `t` the tokens between.

## Differences from the paper

* The paper's model also has output gates and qk-norm ("FoX (Pro)"); this is the forget gate alone.
* The gates here read the keys' input, which with a Transformer-XL memory includes the memory (x-transformers
  reads the current tokens only and cannot combine the two).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("data_dependent_alibi", False, "a learned forget gate per token and head, summed in log space"),
    Keyword("data_dependent_alibi_per_row", False, "data_dependent_alibi: gates that also depend on the query"),
    Keyword("data_dependent_alibi_per_row_dim_head", 8, "data_dependent_alibi_per_row: width of the gate's "
            "query and key", minimum=1, example=4),
    Keyword("data_dependent_alibi_kwargs", {}, "data_dependent_alibi: bias_init (5.0) and post_log_scale (1.0)",
            example={"post_log_scale": 0.5}))


class ForgetGateBias(nn.Module):
    r"""`score_bias`: $c_i - c_j$ from the cumulative log forget gates (and the reverse ones in an encoder).

    A doctest with the gates' bias alone ($f = \sigma(0) = 1/2$, one head): the bias of a key $k$
    steps back is $k \log \frac12$.

    >>> fg = ForgetGateBias(dim=2, heads=1, causal=True, bias_init=0.0)
    >>> _ = fg.to_gates.weight.data.zero_()
    >>> [round(x, 3) for x in fg(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), 0, None)[0, 0, 2].tolist()]
    [-1.386, -0.693, 0.0]
    """

    def __init__(self, dim: int, heads: int, causal: bool, bias_init: float = 5.0, post_log_scale: float = 1.0):
        super().__init__()
        self.causal, self.heads, self.post_log_scale = causal, heads, post_log_scale
        # $w_h, b_h$ (twice as many heads in an encoder: the forward and the reverse gates)
        self.to_gates = nn.Linear(dim, heads * (1 if causal else 2))
        nn.init.constant_(self.to_gates.bias, bias_init)

    stateful = True

    def forward(self, x: Tensor, keys_input: Tensor, offset: int, state: Optional[dict]) -> Tensor:
        n = x.shape[1]
        # $\log f_t$ for every token of the keys' input
        log_f = F.logsigmoid(rearrange(self.to_gates(keys_input), "b t h -> b h t")) * self.post_log_scale
        # $c_t = \sum_{t' \le t} \log f_{t'}$, continuing the sum of the cached tokens
        c = log_f.cumsum(dim=-1)  # (b, h | 2h, t)
        if state is not None:
            before = state.get("forget")
            if before is not None:
                c = torch.cat((before, c + before[..., -1:]), dim=-1)
            state["forget"] = c
        if self.causal:
            # $c_i - c_j$
            return c[..., -n:, None] - c[..., None, :]  # (b, h, n, j)
        forward_c, reverse_c = c.chunk(2, dim=1)
        before = forward_c[..., -n:, None] - forward_c[..., None, :]
        after = reverse_c[..., None, :] - reverse_c[..., -n:, None]
        # Keys before the query: the forward gates; keys after it: the reverse gates.
        return before.tril() + after.triu()


class PerRowForgetGateBias(nn.Module):
    r"""`score_bias`: $\sum_{t = j}^{i - 1} \log \sigma(a_i^\top b_t / \sqrt{d_f})$ (causal only)."""

    stateful = True

    def __init__(self, dim: int, heads: int, dim_head: int = 8, post_log_scale: float = 1.0):
        super().__init__()
        self.heads, self.post_log_scale, self.scale = heads, post_log_scale, dim_head ** -0.5
        # $a$ and $b$ of each head, one projection
        self.to_gates = nn.Linear(dim, heads * dim_head * 2, bias=False)

    def forward(self, x: Tensor, keys_input: Tensor, offset: int, state: Optional[dict]) -> Tensor:
        n = x.shape[1]
        a = rearrange(self.to_gates(x), "b n (ab h d) -> ab b h n d", ab=2, h=self.heads)[0]  # (b, h, n, d_f)
        b = rearrange(self.to_gates(keys_input), "b t (ab h d) -> ab b h t d", ab=2, h=self.heads)[1]
        if state is not None:
            # The gates' keys $b_t$ of the cached tokens.
            before = state.get("forget_keys")
            b = b if before is None else torch.cat((before, b), dim=-2)
            state["forget_keys"] = b
        # $\log f_{it} = \log \sigma(a_i^\top b_t / \sqrt{d_f})$
        log_f = F.logsigmoid(torch.einsum("bhid,bhtd->bhit", a, b) * self.scale) * self.post_log_scale
        t = b.shape[-2]
        q_pos = torch.arange(n, device=x.device)[:, None] + (t - n)
        # Only the tokens before the query count, $t < i$ ...
        log_f = log_f.masked_fill(torch.arange(t, device=x.device)[None, :] >= q_pos, 0.0)
        # ... summed from the key on: $\sum_{t \ge j}$
        return log_f.flip(-1).cumsum(dim=-1).flip(-1)  # (b, h, n, j)


_KWARGS = {False: ("bias_init", "post_log_scale"), True: ("post_log_scale",)}


def forget_gate_bias(dim: int, heads: int, causal: bool, per_row: bool, per_row_dim_head: int,
                     kwargs: dict) -> nn.Module:
    """The bias module of `data_dependent_alibi`, per token or per row."""
    if per_row:
        return PerRowForgetGateBias(dim, heads, per_row_dim_head, **kwargs)
    return ForgetGateBias(dim, heads, causal, **kwargs)


@rule("attn")
def _forget_gate_settings(a, prefix: str, layers) -> None:
    settings = (("data_dependent_alibi_per_row", False), ("data_dependent_alibi_per_row_dim_head", 8),
                ("data_dependent_alibi_kwargs", {}))
    for name, default in settings:
        if getattr(a, name) != default and not a.data_dependent_alibi:
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}data_dependent_alibi=True")
    if not a.data_dependent_alibi:
        return
    allowed = _KWARGS[a.data_dependent_alibi_per_row]
    for key, value in a.data_dependent_alibi_kwargs.items():
        if key not in allowed:
            raise ValueError(f"{prefix}data_dependent_alibi_kwargs: unknown key {key!r}; expected {', '.join(allowed)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{prefix}data_dependent_alibi_kwargs: {key} expected a number, got {value!r}")
    if a.data_dependent_alibi_per_row and not layers.causal:
        raise ValueError(f"{prefix}data_dependent_alibi_per_row and causal=False: the per-row gates are causal only")
    for other in ("alibi_pos_emb", "rel_pos_bias"):
        if getattr(layers, other):
            raise ValueError(f"{prefix}data_dependent_alibi and {other} are both position biases; choose one")
