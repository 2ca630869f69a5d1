r"""
# Attention over the feedback memory

*Paper:* [Addressing Some Limitations of Transformers with Feedback Memory](https://arxiv.org/abs/2002.09402) (Fan et al., 2021)

A layer of the Feedback Transformer asks its own question of the shared memory: the query is
projected per layer, the keys and values are those of the [feedback memory](feedback_memory.md),
computed once for all layers.  For token $i$ of a window at layer $l$, with $h^l_i$ its
(normalised) input,

$$q_i = h^l_i W^l_Q, \qquad
o_i = \Big(\sum_j \operatorname{softmax}_j\Big(\frac{q_i^\top k_j}{\sqrt{d}} + b_{i-j}\Big) v_j\Big) W^l_O,$$

where $j$ runs over the $m$ memory entries, which all lie in the past, followed by the tokens of the
same window *strictly before* $i$, whose keys and values come from their layer-$l$ inputs with the
shared projection, $k_j = h^l_j W_K$.  $b$ is the T5 relative position bias, shared by all layers.
A token never attends to itself: with windows of one token this is exactly the paper's recurrence,
where step $t$ only reads $m_{<t}$.  The very first token, with an empty memory, sees nothing; its
attention output is zero.

The bias and the visibility are folded into one additive mask for `F.scaled_dot_product_attention`.

A worked example: a window of $n = 3$ tokens after $m = 2$ memory entries.  The keys are
$[m_1, m_2 \mid t_0, t_1, t_2]$ and query $t_i$ sees (1) or does not see (0):

$$\begin{array}{c|cc|ccc} & m_1 & m_2 & t_0 & t_1 & t_2 \\ \hline
t_0 & 1 & 1 & 0 & 0 & 0 \\ t_1 & 1 & 1 & 1 & 0 & 0 \\ t_2 & 1 & 1 & 1 & 1 & 0 \end{array}$$

The diagonal is hidden, unlike causal self-attention: $t_1$ reads $t_0$'s layer-$l$ input, never its
own.  With $n = 1$ only the memory columns remain, the paper's recurrence; the code then skips the
token's own key and value altogether, and with an empty memory returns zero without attending.

Shapes: `b` batch, `n` window tokens, `h` heads, `d` head dim, `m` memory length, `D` model width.

## Why not the library's `Attention`

Its extension points cover learned slots (`memory_kv`) and raw memory vectors (`mem`) projected per
layer.  Here the keys and values are precomputed once per window and shared, the bias covers the
memory slots too, and the diagonal is hidden, so this small module calls the fused kernel itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class FeedbackAttention(nn.Module):
    r"""Per-layer queries against the shared memory keys/values and the window's earlier tokens.

    Args:
        dim: model width $D$.
        heads: attention heads $h$.
        dim_head: head width $d$.
        dropout: dropout on the attention weights.
    """

    def __init__(self, dim: int, *, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.scale, self.dropout = heads, dim_head ** -0.5, dropout
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)  # $W^l_Q$
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)  # $W^l_O$

    def forward(self, h: Tensor, memory_kv: tuple[Tensor, Tensor], bias: Tensor,
                kv_proj: Callable[[Tensor], tuple[Tensor, Tensor]], first_blind: bool) -> Tensor:
        r"""Attend from the normalised window `h` `(b, n, D)`.

        Args:
            memory_kv: the memory's keys and values, `(b, h, m, d)` each.
            bias: `(1, h, n, m + n)` position bias with hidden keys set to a large negative value.
            kv_proj: the shared projection $x \mapsto (x W_K, x W_V)$.
            first_blind: the first query sees no key (empty memory); its output is set to zero.
        """
        if h.shape[1] == 1:
            # A window of one token (the paper's recurrence): its only own key is itself, hidden, so
            # the memory alone is read; with an empty memory nothing is, and the output is zero.
            if first_blind:
                return torch.zeros_like(h)  # (b, 1, D)
            k, v = memory_kv  # (b, h, m, d) each
            bias, first_blind = bias[..., :-1], False  # (1, h, 1, m): the memory's columns
        else:
            k_self, v_self = kv_proj(h)  # (b, h, n, d): the window's own keys, shared $W_K, W_V$
            k = torch.cat((memory_kv[0], k_self), dim=2)  # (b, h, m + n, d)
            v = torch.cat((memory_kv[1], v_self), dim=2)
        q = rearrange(self.to_q(h), "b n (h d) -> b h n d", h=self.heads)
        # $\operatorname{softmax}(q k^\top / \sqrt d + b)\, v$, hidden keys carry $-\infty$-like bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                             dropout_p=self.dropout if self.training else 0.0)
        if first_blind:
            # Query 0 had only hidden keys: the kernel spread its weight evenly over them; drop it.
            keep = torch.ones(out.shape[-2], 1, dtype=out.dtype, device=out.device)
            keep[0] = 0
            out = out * keep  # (b, h, n, d)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))  # (b, n, D)
