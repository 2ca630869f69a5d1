r"""
# Initialisation: where each parameter starts

*Paper:* [Delving Deep into Rectifiers](https://arxiv.org/abs/1502.01852) (He et al., 2015), the
Kaiming normal initialisation the token embedding uses.

A model's initial weights decide how large each part of the residual stream is before training
moves anything. With pre-norm blocks, token $t$ enters the stack as its embedding row $e_t$, and
each block adds the output of a branch that reads a *normalised* copy of the stream. The sizes
that matter are therefore the embedding's, against the branches' outputs.

What a default model starts from:

* **Token embedding**: $e_{tk} \sim \mathcal N(0, \sigma^2)$ with $\sigma = \sqrt{2 / E}$ for
  embedding width $E$ (Kaiming normal over the row; 0.125 at $E = 128$), as x-transformers draws it.
  `token_emb_init_std=0.02` gives the GPT-2 / BERT draw this library used before (see below).
* **Linear layers** (queries, keys, values, $W^O$, the feed-forward, the output head): PyTorch's
  default, $\mathcal U(-1/\sqrt{D_\text{in}}, 1/\sqrt{D_\text{in}})$, as in x-transformers.
  `zero_init_branch_output` and `depth_scale_residual` change the two that write into the residual
  stream ([their page](../residual/branch_output.md)).
* **Norm gains** start at one, stored as offsets from one (`norm_add_unit_offset`, the
  [LayerNorm page](../norms/layer_norm.md)), so weight decay pulls a gain to one; LayerNorm has
  no bias and the untied output projection none (`norm_bias`, `logits_bias`), as in x-transformers.
* **Learned absolute positions**: $\mathcal N(0, 0.02^2)$ ([absolute positions](../positional/absolute.md)).

$$e_{tk} \sim \mathcal N\!\left(0, \tfrac{2}{E}\right)$$

Shapes: `V` vocabulary size, `E` embedding width.

## Why these defaults: the evidence

Trained under two recipes of 500 steps with three seeds each (`experiments/xtransformers_parity.py`,
x-transformers' small character model, and `experiments/gpt2_recipe.py`, nanoGPT's CPU recipe;
[the numbers](../../docs/results.md#training-parity-with-x-transformers)), the std-0.02 embedding
trained behind x-transformers: the embedding is a sixth of a branch output's size at the start, so
the first blocks see mostly their own noise. The Kaiming draw closes the gap on the first recipe
and keeps the lead over nanoGPT's initialisation on the second.

## Differences from the paper

He et al. derive $\sqrt{2 / D_\text{in}}$ for a ReLU layer's *input* width. An embedding has no
input width; `nn.init.kaiming_normal_` reads the table's second axis as its fan-in, so the std
follows the embedding width $E$, and there is no ReLU after it. It is used here for its size, not
its derivation.

## Differences from x-transformers

None for the token embedding. x-transformers draws learned absolute positions from
$\mathcal N(0, 1)$ and multiplies them by $E^{-1/2}$ in the forward pass; here they are drawn at
std 0.02 and not scaled.
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn


def token_embedding_std(emb_dim: int, std: Optional[float] = None) -> float:
    r"""The std of the token embedding's draw: `std` if given, else Kaiming's $\sqrt{2 / E}$.

    >>> token_embedding_std(128), token_embedding_std(128, 0.02)
    (0.125, 0.02)
    """
    return math.sqrt(2 / emb_dim) if std is None else std


def check_init_std(name: str, std: Optional[float]) -> None:
    """Raise `ValueError` unless `std` is `None` or a positive number."""
    if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0):
        raise ValueError(f"{name}: expected a positive number or None (Kaiming normal), got {std!r}")


def init_token_embedding(weight: Tensor, std: Optional[float] = None) -> None:
    r"""Draw the token table `(V, E)` in place: $e_{tk} \sim \mathcal N(0, \sigma^2)$, $\sigma$ from `token_embedding_std`."""
    nn.init.normal_(weight, std=token_embedding_std(weight.shape[-1], std))
