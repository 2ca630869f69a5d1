r"""
# Adaptively sparse attention with entmax-1.5

*Paper:* [Adaptively Sparse Transformers](https://arxiv.org/abs/1909.00015) (Correia et al., 2019); [Sparse Text Generation](https://www.aclweb.org/anthology/2020.emnlp-main.348) (Martins et al., 2020)

Softmax never gives a key exactly zero weight, so every query spreads a little attention over every
key, relevant or not.  $\alpha$-entmax is a family of normalisers that interpolates between softmax
($\alpha \to 1$) and sparsemax ($\alpha = 2$).  For $\alpha > 1$ it assigns **exact zeros** to
low-scoring keys while staying differentiable.  For $\alpha = 1.5$:

$$\operatorname{entmax}_{1.5}(s)_j = \left[\tfrac{s_j}{2} - \tau\right]_+^2,
\qquad \text{with } \tau \text{ such that } \sum_j \left[\tfrac{s_j}{2} - \tau\right]_+^2 = 1.$$

Keys whose halved score falls below the threshold $\tau$ get weight zero.  Unlike top-$k$ selection
(`sparse_topk.py`), the number of keys that survive adapts to each query: a peaked row keeps one
key, a flat row keeps many.

$\tau$ has a closed form once the support is known.  Sort the halved scores $z_{(1)} \ge z_{(2)} \ge
\dots$; for a support of the $k$ largest, with mean $\mu_k$ and mean square $\overline{z^2}_k$,

$$\tau_k = \mu_k - \sqrt{\tfrac{1}{k}\big(1 - k(\overline{z^2}_k - \mu_k^2)\big)},$$

and the support is the largest $k$ with $\tau_k \le z_{(k)}$.  The `entmax` package implements this
exact sorting algorithm and the matching backward pass (whose gradient is also zero outside the
support); we call it in float32.

**Masks.**  Masked keys reach the normaliser with the most negative finite score, so they fall below
$\tau$ and get exact zeros.  A query that can see no key at all would get a uniform row; the
attention module zeroes such rows afterwards, as it does for softmax.

Entmax is a different normaliser, so the fused softmax kernel cannot be used: layers with
`attn_use_entmax15=True` take the explicit path.

It plugs into the `normaliser` point of [attention](attention.md) (the protocols are on the
[extension points](extension_points.md) page).  Tested by `test_entmax_rows_sum_to_one_with_exact_zeros` in `tests/attention/test_attn_properties.py`.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

* Correia et al. also *learn* $\alpha$ per head ($\alpha$-entmax with $\alpha \in (1, 2]$); the
  x-transformers' `attn_use_entmax15` fixes $\alpha = 1.5$ for every head, as in their baseline.
* Combined with `attn_sparse_topk` it is refused: both decide which keys get zero weight.
"""

from entmax import entmax15
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("use_entmax15", False, "entmax-1.5 instead of softmax (sparse weights)", xtransformers=False))


class Entmax15(nn.Module):
    r"""Normaliser: entmax-1.5 over the keys, plugged in as the attention's `normaliser`.

    For scores $(1, 0, -1)$ the halved scores are $(0.5, 0, -0.5)$; the two largest give
    $\tau = 0.25 - \sqrt{0.4375} \approx -0.411$, and the third falls below it.  Softmax would give
    $(0.665, 0.245, 0.090)$.

    >>> import torch
    >>> Entmax15()(torch.tensor([1.0, 0.0, -1.0]))
    tensor([0.8307, 0.1693, 0.0000])
    """

    def forward(self, scores: Tensor) -> Tensor:
        """Scores `(b, h, i, j)` to weights `(b, h, i, j)`: each row sums to 1, with exact zeros."""
        # $[s_j / 2 - \tau]_+^2$ in float32 (the sort and the threshold lose precision in half)
        return entmax15(scores.float(), dim=-1).to(scores.dtype)  # (b, h, i, j)
