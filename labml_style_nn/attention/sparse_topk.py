r"""
# Explicit sparse attention: keep the top-$k$ scores

*Paper:* [Explicit Sparse Transformer: Concentrated Attention Through Explicit Selection](https://arxiv.org/abs/1912.11637) (Zhao et al., 2019)

Softmax gives every key some weight, so over a long sequence attention spreads thinly over many
irrelevant tokens.  Explicit sparse attention keeps, for each query, only the $k$ largest scores and
gives every other key no weight at all:

$$A_{ij} = \operatorname{softmax}_j\big(\mathcal{M}(S)_{ij}\big), \qquad
\mathcal{M}(S)_{ij} = \begin{cases} S_{ij} & S_{ij} \ge t_i \\ -\infty & \text{otherwise}\end{cases}$$

where $t_i$ is the $k$-th largest score of row $i$.  The gradient flows only through the $k$
selected scores.  The paper recommends $k = 8$ and finds this cheap selection competitive with costlier
sparse normalisers such as sparsemax and entmax; x-transformers exposes it as `attn_sparse_topk=8`.

The selection happens **after** masking: a key that is masked (padding, the future) never takes one
of the $k$ places.  When fewer than $k$ keys are visible, all visible keys keep their scores.  So
every row keeps exactly $\min(k, \text{visible keys})$ non-zero weights (a test checks it).
Persistent memory slots are always visible and compete for the $k$ places like any key.

The technique is a score transform (`pre_softmax`), so layers that use it take the explicit path.
With talking heads the selection happens on the mixed scores.

A worked example, $k = 2$: a query with scores $(2, 1, 0.5, -1)$ gives softmax weights
$(0.61, 0.22, 0.14, 0.03)$; keeping the top two gives $(0.73, 0.27, 0, 0)$, the doctest of
`SparseTopK` below.  The two dropped keys held 17% of the weight.

It plugs into the `score_transform` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_top_k_keeps_exactly_k_weights_per_row` in `tests/attention/test_attn_properties.py`.

## A straight-through gradient

The gradient reaches only the $k$ selected scores, so a key outside the top $k$ never learns that
it should have been chosen.  `attn_sparse_topk_straight_through=True` (after
[Sparse attention with a straight-through gradient](https://arxiv.org/abs/2505.22074), cited by
x-transformers) keeps the top-$k$ weights in the forward pass and takes the gradient of the full
softmax in the backward pass:

$$A_{ij} = \operatorname{sg}\big[A^{(k)}_{ij}\big] + \operatorname{softmax}_j(S_{ij}) -
\operatorname{sg}\big[\operatorname{softmax}_j(S_{ij})\big].$$

Its value is the top-$k$ weights; its gradient is that of softmax attention over every visible key.
With it the selection runs as the `normaliser` (`SparseTopKSoftmax`), since the full softmax is
needed too.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

* Scores below the threshold get the most negative finite value instead of $-\infty$, so a row with
  no visible key cannot become NaN; its weights are zero.
* Ties with the $k$-th score are all kept, so a row may keep more than $k$ keys when scores tie
  exactly (with real-valued scores from learned projections they do not).
"""

from typing import Optional

from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from .extension_points import ScoreTransform, masked_fill_value

KEYWORDS = declare(__name__, "attn",
    Keyword("sparse_topk", None, "keep only the k largest scores of each query", type=int, example=4),
    Keyword("sparse_topk_straight_through", False,
            "sparse_topk: top-k weights forward, the full softmax's gradient backward"))


class SparseTopK(ScoreTransform):
    """Score transform that keeps the `k` largest visible scores of every query.

    Args:
        k: how many keys each query keeps.

    >>> scores = torch.tensor([[[[2.0, 1.0, 0.5, -1.0]]]])   # (b, h, i, j): one query, four keys
    >>> [round(w, 2) for w in SparseTopK(2).pre_softmax(scores, None).softmax(-1).flatten().tolist()]
    [0.73, 0.27, 0.0, 0.0]
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def pre_softmax(self, scores: Tensor, visible: Optional[Tensor]) -> Tensor:
        """`(b, h, i, j)` scores to `(b, h, i, j)` scores with all but the top `k` per row masked."""
        fill = masked_fill_value(scores.dtype)
        # Mask first, so that invisible keys cannot be among the $k$ largest.
        if visible is not None:
            scores = scores.masked_fill(~visible, fill)
        if self.k >= scores.shape[-1]:
            return scores
        # $t_i$: the $k$-th largest score of each row
        threshold = scores.topk(self.k, dim=-1).values[..., -1:]  # (b, h, i, 1)
        # $\mathcal{M}(S)_{ij}$: keep $S_{ij} \ge t_i$
        return scores.masked_fill(scores < threshold, fill)  # (b, h, i, j)


class SparseTopKSoftmax(nn.Module):
    r"""Top-$k$ softmax weights forward, the full softmax's gradient backward (straight through).

    The scores arrive masked (hidden keys hold the most negative finite value).

    >>> w = SparseTopKSoftmax(2)(torch.tensor([[2.0, 1.0, 0.5, -1.0]]))
    >>> [round(x, 2) for x in w.flatten().tolist()]
    [0.73, 0.27, 0.0, 0.0]
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, scores: Tensor) -> Tensor:
        scores = scores.float()
        top_k = SparseTopK(self.k).pre_softmax(scores, None).softmax(dim=-1)
        soft = scores.softmax(dim=-1)
        # $\operatorname{sg}[A^{(k)}] + \operatorname{softmax}(S) - \operatorname{sg}[\operatorname{softmax}(S)]$
        return top_k.detach() + soft - soft.detach()


@rule("attn")
def _straight_through_needs_top_k(a, prefix: str, layers) -> None:
    if a.sparse_topk_straight_through and not a.sparse_topk:
        raise ValueError(f"{prefix}sparse_topk_straight_through: only meaningful with {prefix}sparse_topk=k")
