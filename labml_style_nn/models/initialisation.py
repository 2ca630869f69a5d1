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
* **Learned absolute positions**: $\mathcal N(0, 1)$, multiplied by $E^{-1/2}$ in the forward pass, as in
  x-transformers ([absolute positions](../positional/absolute.md)); `pos_emb_init_std=0.02` gives the
  unscaled GPT-2 table this library used before.

$$e_{tk} \sim \mathcal N\!\left(0, \tfrac{2}{E}\right)$$

Shapes: `V` vocabulary size, `E` embedding width.

## Why these defaults: the evidence

Before the [training parity study](../../docs/results.md#defaults-second-look-two-recipes-500-steps)
the token embedding was drawn at std 0.02 (GPT-2's and BERT's choice) and the LayerNorms and the
untied head had biases. Trained under two recipes for 500 steps (`experiments/xtransformers_parity.py`,
x-transformers' small character model, in bits per byte, and `experiments/gpt2_recipe.py`, nanoGPT's
CPU recipe with tied embeddings and no biases, in nats per byte), mean ± std over seeds:

| recipe | this library, before | token draw changed, earlier position table, rotary rows unordered | defaults now | x-transformers 2.31.10 | nanoGPT's initialisation |
|---|---|---|---|---|---|
| A, rotary (val bpc) | 2.776 ± 0.020 (3 seeds) | 2.724 ± 0.021 (8 seeds) | **2.716 ± 0.022** (8 seeds) | **2.716 ± 0.022** (8 seeds) | - |
| A, learned absolute (val bpc) | 3.085 (1 seed) | 2.974 ± 0.017 (3 seeds) | **3.073 ± 0.009** (3 seeds) | **3.073 ± 0.009** (3 seeds) | - |
| B, GPT-2-style (val nats) | 2.358 (1 seed) | 2.278 ± 0.017 (8 seeds) | **2.266 ± 0.012** (8 seeds) | **2.266 ± 0.012** (8 seeds) | 2.285 ± 0.009 (5 seeds) |

**Under one seed the default model is x-transformers' model.** `TransformerWrapper` and its stack
create their parameters in x-transformers' order with x-transformers' distributions (the token table
before the position table), so `torch.manual_seed(s)` followed by either library's constructor draws
the same numbers into the same parameters.  With rotary positions one step follows: the two libraries
pair the rotated query/key features differently ($2p, 2p+1$ in x-transformers, $p, p + r/2$ here, as
in LLaMA), so the drawn rows of $W_Q$ and $W_K$ are reordered into x-transformers' pairing
(`order_rotary_rows_as_x_transformers` below).  Reordering rows drawn independently from one
distribution gives a draw from the same distribution, so this changes no property of the
initialisation, only which number lands where.  The two default models are then the same function
(`tests/models/test_initialisation.py` checks it, with learned absolute positions and with rotary
ones, with and without grouped key/value heads), and train alike step for step: the validation
losses after 500 steps agree to 7 digits on every seed run (recipe A with rotary and with absolute
positions, eight and three seeds; recipe B, eight).  Before the reordering the rotary models were the same
function up to that permutation, and their losses had the same distribution, each seed a
different draw: eight seeds each gave 2.724 ± 0.021 here against 2.716 ± 0.022.

**The position table.**  Until this release the learned table was drawn at std 0.02 and added
unscaled (GPT-2's), where x-transformers draws it from $\mathcal N(0, 1)$ and multiplies it by
$E^{-1/2}$ in the forward pass, so that Adam moves the positions $E^{-1/2}$ as fast.  That was the one
difference left, and it cut both ways: 0.10 bpc *better* on recipe A with absolute positions
(2.974 ± 0.017 against 3.073 ± 0.009) and 0.012 nats *worse* on recipe B (2.278 ± 0.017 against
2.266 ± 0.012, eight seeds, standard error 0.007, behind on 7 of 8 seeds).  The default is now
x-transformers' table: a user who swaps the import gets x-transformers' model and its training, on
both recipes, and x-transformers' weights load without rescaling.  The unscaled table is one keyword
away, `pos_emb_init_std=0.02` (what the GPT-2 conversion passes, and the better choice on recipe A).
The old token draw is one keyword away too: `token_emb_init_std=0.02`.  The runs, their commands and
the per-seed numbers are on the [results page](../../docs/results.md#defaults-second-look-two-recipes-500-steps).

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

None for the token embedding and the learned position table (since this release; before, the table
was drawn at std 0.02 and added unscaled).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn


def token_embedding_std(emb_dim: int, std: Optional[float] = None) -> float:
    r"""The std of the token embedding's draw: `std` if given, else Kaiming's $\sqrt{2 / E}$.

    >>> token_embedding_std(128), token_embedding_std(128, 0.02)
    (0.125, 0.02)
    """
    return math.sqrt(2 / emb_dim) if std is None else std


def init_token_embedding(weight: Tensor, std: Optional[float] = None) -> None:
    r"""Draw the token table `(V, E)` in place: $e_{tk} \sim \mathcal N(0, \sigma^2)$, $\sigma$ from `token_embedding_std`."""
    nn.init.normal_(weight, std=token_embedding_std(weight.shape[-1], std))


def interleaved_rotary_rows(heads: int, dim_head: int, rot: int) -> Tensor:
    r"""Row order taking x-transformers' rotary pairs $(2p, 2p + 1)$ to this library's $(p, p + r/2)$.

    Row `j` of a query or key projection here holds what row `rows[j]` holds in x-transformers, for
    `heads` heads of `dim_head` features whose first `rot` rotate.

    >>> interleaved_rotary_rows(1, 6, 4).tolist()   # our pairs (0, 2), (1, 3) are their (0, 1), (2, 3)
    [0, 2, 1, 3, 4, 5]
    """
    half = rot // 2
    within = [2 * j if j < half else 2 * (j - half) + 1 for j in range(rot)] + list(range(rot, dim_head))
    return torch.tensor([h * dim_head + j for h in range(heads) for j in within])


@torch.no_grad()
def order_rotary_rows_as_x_transformers(blocks, rot: int) -> None:
    r"""Reorder the freshly drawn query and key rows of each self-attention block into x-transformers' pairing.

    A permutation of rows drawn independently from one distribution is a draw from the same
    distribution, so nothing changes but which number lands where: under one seed the rotated
    features then pair exactly as x-transformers pairs the same numbers.
    """
    for block in blocks:
        attn: Any = getattr(block, "fn", None)
        proj = getattr(attn, "to_qkv", None)
        if getattr(block, "kind", None) != "a" or proj is None or getattr(attn, "qk_proj", None) is not None:
            continue
        h, g, d = attn.heads, attn.kv_heads, attn.dim_head
        q_rows, k_rows = interleaved_rotary_rows(h, d, rot), h * d + interleaved_rotary_rows(g, d, rot)
        for p in (proj.weight, proj.bias):
            if p is not None:
                p[: h * d] = p[q_rows]  # (advanced indexing copies first)
                p[h * d: (h + g) * d] = p[k_rows]
