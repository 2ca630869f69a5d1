r"""
# Absolute positional embeddings

*Paper:* [Attention Is All You Need](https://arxiv.org/abs/1706.03762) (Vaswani et al., 2017)

Attention by itself is blind to order: permuting the tokens permutes its outputs.  The original
transformer adds a position vector $p_t$ to each token embedding before the first layer,

$$h^{(0)}_t = e_{x_t} + p_t,$$

either **learned** (one trainable vector per position, the default of `TransformerWrapper`) or
**fixed sinusoids** of geometrically spaced wavelengths,

$$p_{t, 2k} = \sin\left(t / 10000^{2k/D}\right), \qquad p_{t, 2k+1} = \cos\left(t / 10000^{2k/D}\right).$$

The learned table is x-transformers': its rows are drawn from $\mathcal N(0, 1)$ and scaled in
the forward pass,

$$p_t = D^{-1/2} P_t, \qquad P_t \sim \mathcal N(0, I),$$

so each position starts at std $D^{-1/2}$ (0.088 at $D = 128$) and, because Adam's step on $P_t$
has a fixed size, moves $D^{-1/2}$ times as fast as an unscaled table would.  `pos_emb_init_std=σ`
on the wrapper draws $p_t \sim \mathcal N(0, σ^2)$ and adds it unscaled instead: GPT-2's table
(σ = 0.02), which the [GPT-2 conversion](../pretrained/gpt2.md) uses and this library's default
before.  Which of the two trains better depends on the recipe (0.10 bpc for the unscaled one on a
character model, about 0.01 nats for the scaled one on a GPT-2-style recipe; the evidence is on the
[initialisation page](../models/initialisation.md)); the default follows x-transformers, so that one
seed builds x-transformers' model exactly.

A learned table has `max_seq_len` rows, so longer inputs cannot be embedded: the wrapper refuses
them with a clear error.  The relative schemes (rotary, ALiBi, T5) have no such limit, which is why
the wrapper turns the absolute embedding off beside most of them.

Which stacks turn it off is the stack's keyword `disable_abs_pos_emb`.  `None` (the default) follows
x-transformers 2.31.10: off for a stack that rotates queries and keys (rotary, xPos, PoPE) or has
T5's bias, and for position infused attention (this library's); kept beside ALiBi and the dynamic
bias, as x-transformers keeps it.  `True` turns it off for any stack (the ALiBi paper's model has
no absolute positions: `alibi_pos_bias=True, disable_abs_pos_emb=True`), `False` keeps it even beside
a relative scheme.  The wrapper's `use_abs_pos_emb=False` turns it off whatever the stack says.

Tests: `tests/positional/test_pos_absolute.py` (the sinusoids' closed form, positions make the model order-aware, cached steps continue the positions).  The relative schemes: [rotary](rotary.md), [ALiBi](alibi.md), [T5](t5_bias.md).

Shapes: `n` tokens, `D` model width.

## Differences from the paper

* The sinusoidal table here puts all sines in the first half of the features and all cosines in the
  second half instead of interleaving them; the next linear layer makes the two equivalent.
* The paper scales the token embeddings by $\sqrt D$ before adding positions; here the position
  table is scaled down by $D^{-1/2}$ instead (x-transformers' choice), and the token embedding is not scaled.
* Position infused attention (not an x-transformers keyword) turns absolute positions off too: it
  adds them to queries and keys instead.  Before, this library turned them off beside ALiBi and the
  dynamic bias as well; `disable_abs_pos_emb=True` gives that back.
* Positions continue across a key/value cache: a cached step at position $t$ gets $p_t$, so cached
  generation equals a full pass (a test checks it).

## Differences from x-transformers

None for the learned table since this release (before, it was drawn at std 0.02 and added unscaled:
`pos_emb_init_std=0.02`).  Under one seed the default model draws x-transformers' numbers into both
tables, because the token table is made first, as there (`tests/models/test_initialisation.py`).
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..checks import check_init_std, check_positions
from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("disable_abs_pos_emb", None, "no absolute positions in the wrapper (None: off with rotary, xPos, PoPE "
            "or the T5 bias, kept with ALiBi and the dynamic bias)", type=bool, example=True))


class LearnedPositionalEmbedding(nn.Module):
    r"""One trainable vector per position $0 \dots$ `max_seq_len - 1`.

    `init_std=None` (the default) is x-transformers' table: $P \sim \mathcal N(0, 1)$, added as
    $D^{-1/2} P$.  A number draws $P \sim \mathcal N(0, \sigma^2)$ and adds it unscaled (GPT-2's
    table, $\sigma = 0.02$, this library's default before).

    >>> LearnedPositionalEmbedding(16, 8).emb_scale, LearnedPositionalEmbedding(16, 8, init_std=0.02).emb_scale
    (0.25, 1.0)
    """

    def __init__(self, dim: int, max_seq_len: int, init_std: Optional[float] = None):
        super().__init__()
        check_init_std("pos_emb_init_std", init_std, "x-transformers' N(0, 1) table scaled by dim^-1/2")
        self.max_seq_len = max_seq_len
        self.emb = nn.Embedding(max_seq_len, dim)  # drawn $\mathcal N(0, 1)$ by PyTorch
        if init_std is not None:
            nn.init.normal_(self.emb.weight, std=init_std)
        # The table's multiplier: $D^{-1/2}$, so Adam moves $p_t$ $D^{-1/2}$ times as fast as the raw rows.
        self.emb_scale = dim ** -0.5 if init_std is None else 1.0

    def forward(self, positions: Tensor) -> Tensor:
        """$p_t$ for integer `positions` `(n,)`; the wrapper checks they are below `max_seq_len`."""
        check_positions("positions", positions)
        p = self.emb(positions)  # (n, D)
        return p if self.emb_scale == 1.0 else p * self.emb_scale


class SinusoidalPositionalEmbedding(nn.Module):
    r"""Fixed sinusoids; defined for every position, so it has no maximum length.

    >>> SinusoidalPositionalEmbedding(4)(torch.tensor([0])).tolist()   # sin 0, sin 0, cos 0, cos 0
    [[0.0, 0.0, 1.0, 1.0]]
    """

    inv_freq: Tensor  # buffer `(D/2,)`

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim: sinusoidal positions need an even width, got {dim}")
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # $10000^{-2k/D}$
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """$p_t$ for integer `positions` `(n,)`."""
        check_positions("positions", positions)
        # $t / 10000^{2k/D}$
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (n, D/2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (n, D)
