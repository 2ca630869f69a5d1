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

Before the [training parity study](../../docs/results.md#defaults-second-look-two-recipes-500-steps)
the token embedding was drawn at std 0.02 (GPT-2's and BERT's choice) and the LayerNorms and the
untied head had biases. Trained under two recipes for 500 steps (`experiments/xtransformers_parity.py`,
x-transformers' small character model, in bits per byte, and `experiments/gpt2_recipe.py`, nanoGPT's
CPU recipe with tied embeddings and no biases, in nats per byte), mean ± std over the random seeds that
finished:

| recipe | this library, before | this library, after (defaults now) | x-transformers 2.31.10 | nanoGPT's initialisation |
|---|---|---|---|---|
| A, rotary (val bpc) | **2.776 ± 0.020** (2.797, 2.775, 2.757) | **2.731 ± 0.014** (2.736, 2.715, 2.741) | **2.714 ± 0.002** (2.715, 2.711, 2.715) | - |
| A, learned absolute (val bpc) | 3.085 (seed 0 only) | **2.974 ± 0.024** (2.991, 2.957) (seeds 0, 2) | **3.071 ± 0.012** (3.080, 3.063) (seeds 0, 1) | - |
| B, GPT-2-style (val nats) | 2.358 (seed 0 only) | **2.283 ± 0.008** (2.289, 2.277) (seeds 0, 2) | 2.811 (seed 0 only) | 2.289 (seed 0 only) |

The change helps on both recipes, but it does not close the whole gap (on A the three choices
were changed together; on B only the embedding's draw differs). On A with rotary positions it takes this library's model from 0.062 bpc behind x-transformers'
(mean over three seeds) to 0.017 behind: still behind on every seed (by 0.021, 0.004 and 0.026),
about two standard errors, so the defaults are *not yet* shown to train at least as well there. With
learned absolute positions (whose table x-transformers draws and scales differently, see below) it
is 0.10 bpc ahead (two seeds of each). On B, where the embedding is tied and nothing has a bias, the
draw is the only difference from before, and it takes this library from 0.069 nats behind nanoGPT's
initialisation to level with it (seed 0: 2.289 and 2.289); x-transformers itself, whose tied Kaiming
table is combined with its larger, slower position table, is far behind there (one seed). The old
draw stays one keyword away: `token_emb_init_std=0.02`.

Why a larger draw helps: with pre-norm blocks each branch reads a normalised copy of the stream, so
at std 0.02 the embedding is small next to what the first branch adds (PyTorch's default linear
layers give outputs of std about $0.6$ times their input's), and the first blocks see mostly their
own output. At $\sqrt{2/E}$ the embedding is of the same order as what the branches add.

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
