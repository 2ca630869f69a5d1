r"""
# Adaptively sparse attention with entmax-1.5

*Paper:* [Adaptively Sparse Transformers](https://arxiv.org/abs/1909.00015) (Correia et al., 2019); [Sparse Text Generation](https://www.aclweb.org/anthology/2020.emnlp-main.348) (Martins et al., 2020)

Softmax never gives a key exactly zero weight.  $\alpha$-entmax is a family of normalisers that
interpolates between softmax ($\alpha = 1$) and sparsemax ($\alpha = 2$); in between, it assigns
*exact zeros* to low-scoring keys while staying smooth.  For $\alpha = 1.5$:

$$\operatorname{entmax}_{1.5}(s)_j = \left[\tfrac{s_j}{2} - \tau\right]_+^2,$$

with the threshold $\tau$ chosen so that the weights sum to one.  Unlike top-$k$, the number of keys
that survive adapts to each query.

We use the exact sorting-based algorithm of the `entmax` package, in float32.

Shapes: `b` batch, `h` heads, `i` queries, `j` keys.

## Differences from the paper

The paper also learns $\alpha$ per head; the seeds' `attn_use_entmax15` fixes $\alpha = 1.5$.
"""

from entmax import entmax15
from torch import nn, Tensor


class Entmax15(nn.Module):
    """Normaliser: entmax-1.5 over the keys (masked keys hold a huge negative score: weight 0)."""

    def forward(self, scores: Tensor) -> Tensor:
        return entmax15(scores.float(), dim=-1).to(scores.dtype)
