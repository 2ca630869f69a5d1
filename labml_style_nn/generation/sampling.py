r"""
# Sampling filters

*Paper:* [The Curious Case of Neural Text Degeneration](https://arxiv.org/abs/1904.09751) (Holtzman et al., 2019)

Sampling from the full next-token distribution occasionally picks a very unlikely token, and one bad
token derails the rest of the text.  Filters cut the tail before sampling, by setting the logits
of the discarded tokens to $-\infty$:

* **top-$k$**: keep the $k$ most likely tokens;
* **top-$p$** (nucleus): keep the smallest set of most likely tokens whose probability mass reaches
  $p$ (Holtzman et al.);
* **min-$p$**: keep tokens whose probability is at least $p_{\min}$ times that of the most likely
  token, a threshold that adapts to how confident the model is;
* **top-$a$**: the same with the threshold $r \cdot (\max_j p_j)^a$.

The filters take x-transformers' keyword names too (`top_p(thres=)`, `min_p(min_p=)`,
`top_k(frac_num_tokens=)`), and `filter_logits_fn` may name them (`"top_p"`).  `top_k` keeps
$\lceil 0.1 V \rceil$ tokens unless `k` is given, as x-transformers does.

`temperature` divides the logits before filtering; `temperature = 0` means greedy decoding (the
most likely token).

Shapes: `b` batch, `V` vocabulary.
"""

import math
from collections.abc import Callable
from typing import Optional

from torch import Tensor


def top_k(logits: Tensor, k: Optional[int] = None, frac_num_tokens: float = 0.1) -> Tensor:
    r"""Keep the `k` largest logits of each row (by default $\lceil 0.1 V \rceil$, x-transformers' default).

    >>> top_k(torch.tensor([[1., 3., 2.]]), k=2).tolist()
    [[-inf, 3.0, 2.0]]
    """
    if k is None:
        k = math.ceil(frac_num_tokens * logits.shape[-1])
    k = min(k, logits.shape[-1])
    # $z_{(k)}$, the $k$-th largest logit; keep $z_i \ge z_{(k)}$
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, -math.inf)


def top_p(logits: Tensor, p: float = 0.9, *, thres: Optional[float] = None) -> Tensor:
    r"""Keep the smallest set of most likely tokens with total probability at least `p`.

    `thres` is x-transformers' name for `p`.  The example's probabilities are $(0.09, 0.67, 0.24)$:
    the most likely token alone has mass $0.67 \ge 0.5$, so it is the nucleus.

    >>> top_p(torch.tensor([[0., 2., 1.]]).log_softmax(-1), p=0.5).isinf().tolist()
    [[True, False, True]]
    """
    p = p if thres is None else thres
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Sorted by probability, token $r$ is dropped when the mass before it already reaches $p$:
    # $\sum_{r' < r} p_{(r')} \ge p$
    drop = probs.cumsum(dim=-1) - probs >= p
    drop = drop.scatter(-1, order, drop)
    return logits.masked_fill(drop, -math.inf)


def min_p(logits: Tensor, p: float = 0.1, *, min_p: Optional[float] = None) -> Tensor:
    r"""Keep tokens whose probability is at least `p` (x-transformers: `min_p`) times the largest probability.

    >>> min_p(torch.tensor([[0., 0., -5.]]), p=0.1).isinf().tolist()
    [[False, False, True]]
    """
    p = p if min_p is None else min_p
    probs = logits.softmax(dim=-1)
    # Keep $p_i \ge p_{\min} \cdot \max_j p_j$
    return logits.masked_fill(probs < p * probs.amax(dim=-1, keepdim=True), -math.inf)


def top_a(logits: Tensor, min_p_pow: float = 2.0, min_p_ratio: float = 0.02) -> Tensor:
    r"""Keep tokens with probability at least $r \cdot (\max_j p_j)^a$ (top-$a$, BlinkDL's RWKV sampler).

    A confident model (large $\max p$) cuts a wide tail, an unsure one keeps many tokens.  With
    probabilities $(0.5, 0.5, 0)$ and $a = 2$, $r = 0.02$ the bar is $0.005$:

    >>> top_a(torch.tensor([[0., 0., -9.]])).isinf().tolist()
    [[False, False, True]]
    """
    probs = logits.softmax(dim=-1)
    limit = probs.amax(dim=-1, keepdim=True).pow(min_p_pow) * min_p_ratio
    return logits.masked_fill(probs < limit, -math.inf)


def identity(logits: Tensor) -> Tensor:
    """No filter: sample from the whole distribution (beam search's default)."""
    return logits


#
# Filters by name, for `generate(filter_logits_fn="top_p")`.
FILTERS = {"top_k": top_k, "top_p": top_p, "min_p": min_p, "top_a": top_a}


def resolve_filter(fn) -> Callable:
    """A filter function, given itself or its name in `FILTERS`."""
    if callable(fn):
        return fn
    if fn not in FILTERS:
        raise ValueError(f"filter_logits_fn: expected a callable or one of {sorted(FILTERS)}, got {fn!r}")
    return FILTERS[fn]
