r"""
# Deep embeddings: a per-token gain on every feed-forward output

*Source:* RWKV-8's "DeepEmbed" (Bo Peng, 2025, [RWKV-8 notes](https://github.com/BlinkDL/RWKV-LM)),
after the value embeddings of the modded-nanoGPT speedrun (Braden Koszarsky).

An embedding table is cheap to store and costs nothing to look up, so it can be far larger than
what a token's single input vector uses.  A deep embedding gives each token one learned vector per
layer, $g_{x_t}^{(l)} \in \mathbb{R}^D$, that multiplies the output of that layer's feed-forward:

$$\operatorname{FF}^{(l)}(h_t) \;\to\; \operatorname{FF}^{(l)}(h_t) \odot g^{(l)}_{x_t}$$

The gains start at 1, so a new model is the plain one; the table has $V \times L \times D$ entries,
which can live off the accelerator since only the rows of the current tokens are read.

`TransformerWrapper(ff_deep_embed=True)` holds the table; the stack applies row $l$ to its $l$-th
feed-forward block (`ff_deep_embeds=` of `AttentionLayers.forward`).  Positions that are not tokens
(memory, [CLS] and prepended embeddings) get the gain 1.

**Differences from RWKV-8.**  RWKV-8 applies the gain inside its channel-mixing block; as in
x-transformers it multiplies the feed-forward output here.

Shapes: `b` batch, `n` tokens, `L` feed-forward blocks, `D` width, `V` vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DeepEmbedding(nn.Module):
    r"""One gain vector per token and feed-forward block, $g \in \mathbb{R}^{V \times L \times D}$, all ones at first."""

    def __init__(self, num_tokens: int, attn_layers):
        super().__init__()
        num_ff = attn_layers.layer_types.count("f")
        if not num_ff:
            raise ValueError("ff_deep_embed: the stack has no feed-forward blocks to scale")
        self.gains = nn.Parameter(torch.ones(num_tokens, num_ff, attn_layers.dim))  # (V, L, D)

    def forward(self, token_ids: Tensor, num_prefix: int = 0) -> Tensor:
        """Gains `(b, p + n, L, D)` for tokens `(b, n)` after `num_prefix` positions whose gain is 1."""
        g = self.gains[token_ids]  # (b, n, L, D)
        return F.pad(g, (0, 0, 0, 0, num_prefix, 0), value=1.0) if num_prefix else g
