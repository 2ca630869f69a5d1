r"""
# Relative multi-head attention

*Paper:* [Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context](https://arxiv.org/abs/1901.02860) (Dai et al., 2019)

Relative attention scores a query against a key using only *how far apart* they are, never
where they are in absolute terms. That is what lets Transformer-XL reuse the hidden states of
the previous segment as memory: a cached state keeps meaning the same thing however far the
window has moved.

Query $i$ sits at absolute position $m + i$ (the $m$ memory slots come first), key $j$ at
position $j$.

## From absolute to relative: the four terms (a)-(d)

In a standard transformer the input of token $i$ is its content $e_i$ plus an absolute position
encoding $p_i$, so the score of one head expands into four terms:

$$
\begin{aligned}
q_i^\top k_j &= (e_i + p_i)^\top W_Q^\top W_K\, (e_j + p_j) \\
&= \underbrace{\textcolor{#1f77b4}{e_i^\top W_Q^\top W_K\, e_j}}_{\text{(a)}}
 + \underbrace{\textcolor{#d95f02}{e_i^\top W_Q^\top W_K\, p_j}}_{\text{(b)}}
 + \underbrace{\textcolor{#1b9e77}{p_i^\top W_Q^\top W_K\, e_j}}_{\text{(c)}}
 + \underbrace{\textcolor{#7570b3}{p_i^\top W_Q^\top W_K\, p_j}}_{\text{(d)}}.
\end{aligned}
$$

Transformer-XL makes three substitutions, each removing an absolute position:

1. the key's absolute position $p_j$ becomes an encoding $r_{m+i-j}$ of the *distance*, with its own
   projection, $W_K\, p_j \to W_R\, r_{m+i-j} = R_{m+i-j}$ (in (b) and (d));
2. in (c), the query's position part $p_i^\top W_Q^\top$ becomes a learned vector $u^\top$: what a
   query looks for in content should not depend on where the query is;
3. in (d), likewise, $p_i^\top W_Q^\top$ becomes a second learned vector $v^\top$.

With $q_i = W_Q e_i$ and $k_j = W_K e_j$ (the hidden states carry no absolute position), the score is

$$
\begin{aligned}
S_{ij} &= \underbrace{\textcolor{#1f77b4}{q_i^\top k_j}}_{\text{(a) content}}
 + \underbrace{\textcolor{#d95f02}{q_i^\top R_{m+i-j}}}_{\text{(b) content-position}}
 + \underbrace{\textcolor{#1b9e77}{u^\top k_j}}_{\text{(c) global content bias}}
 + \underbrace{\textcolor{#7570b3}{v^\top R_{m+i-j}}}_{\text{(d) global position bias}} \\
&= (\textcolor{#1f77b4}{q_i} + \textcolor{#1b9e77}{u})^\top k_j + (\textcolor{#d95f02}{q_i} + \textcolor{#7570b3}{v})^\top R_{m+i-j},
\end{aligned}
$$

the grouping the code computes: (a) + (c) in one product with the query $q_i + u$, (b) + (d) in one
with $q_i + v$ (the same colours mark each term at the lines below).  $u$ and $v$ are learned
vectors per head; $R_\delta = W_R\, r_\delta$ projects a sinusoidal encoding $r_\delta$ of the
distance $\delta$, with a projection of its own for every head (one `Linear` whose output is split
into heads).  The values are written $V_j$ below, to keep $v$ for the paper's bias.

Where this sits: [the Transformer-XL layer](transformer_xl.md) calls this module with the memory
prepended to the keys and values.  The library's stacks reach the same relative positions through
the attention module's extension points instead: [T5's bias](../positional/t5_bias.md) is a learned
(d) with no (b), [ALiBi](../positional/alibi.md) a fixed (d), and [rotary](../positional/rotary.md)
folds the distance into (a) itself by rotating $q$ and $k$.  Tests:
`tests/transformer_xl/test_xl_relative_mha.py` (the shift's worked example, the shift equals the
direct relative scores, fused equals explicit, a reference written in the test).

Shapes: `i` query, `j` key (memory then current), `b` batch, `h` heads, `d` head dim,
`m` memory length, `p` relative distances.

## The relative shift

Computing (b) with a gather would build a `[i, j, b, h, d]` tensor of embeddings. Instead we
multiply every query with *every* distance, $X_{ip} = q_i^\top R_{\delta_p}$ with the distances
listed from largest to smallest, and then slide row $i$ left by $n - 1 - i$ ($n$ queries) so
that column $j$ holds distance $m + i - j$. The slide is a reshape: pad a zero column on the
left, view the $n \times (P+1)$ matrix as $(P + 1) \times n$, drop the first row and view it
back as $n \times P$. For $n = 3$ queries and $P = 4$ distances, padding gives

$$
\begin{bmatrix} a_0 & a_1 & a_2 & a_3 \\ b_0 & b_1 & b_2 & b_3 \\ c_0 & c_1 & c_2 & c_3 \end{bmatrix}
\;\longrightarrow\;
\begin{bmatrix} 0 & a_0 & a_1 & a_2 & a_3 \\ 0 & b_0 & b_1 & b_2 & b_3 \\ 0 & c_0 & c_1 & c_2 & c_3 \end{bmatrix}
$$

and viewing that as $5 \times 3$, dropping its first row and viewing the rest as $3 \times 4$ gives

$$
\longrightarrow\;
\begin{bmatrix} a_2 & a_3 & \overline{0} & \overline{b_0} \\ b_1 & b_2 & b_3 & \overline{0} \\ c_0 & c_1 & c_2 & c_3 \end{bmatrix}
$$

With $m = 1$ and distances $3, 2, 1, 0$, query $0$ (absolute position $1$) now reads
$a_2, a_3$ = distances $1, 0$ for keys $0, 1$: correct. The overlined entries wrapped around from the
next row; they sit exactly where $j > m + i$, the future keys a causal mask hides.

## Differences from the paper

* We list the $n - 1$ negative distances too ($P = m + 2n - 1$ instead of $m + n$) and keep the
  first $m + n$ columns after the shift. Nothing wraps around then, so every score is exact and
  any mask (not only a causal one) is supported, at the cost of $n - 1$ extra columns.
* Not a difference, but a choice worth stating: positions are sinusoidal with a learned
  projection $W_R$ (one slice per head), as in the paper, rather than a learned table of
  distances, so the model can score distances longer than any seen in training, which is the point
  of evaluating with a long memory.
* $u$ and $v$ start at zero, so the terms (c) and (d) start off and are learned from nothing; the
  paper's code draws them at random like its other weights ($\mathcal{N}(0, 0.02^2)$).
* A query with no visible key returns zeros instead of NaN.

## Explicit and fused paths

The explicit path below spells out the scores, the masked softmax and the weighted sum. By
default the module takes the fused path instead: the position terms (b) + (d) and the mask
become an additive bias for `F.scaled_dot_product_attention`, which computes (a) + (c) with
the query $q + u$. The position matrix is built either way; the fused kernel saves the content
score matrix and the softmax buffers. A test checks that the two paths agree.

## Evidence

* Measured: as the attention of a Transformer-XL language model it makes the memory pay off
  (2.609 against 2.837 bpc without memory, segments of 16 bytes, 1,500 steps), where the same memory
  makes the T5 bias 0.38 bpc worse (3.340 against 2.965;
  [results](../../docs/results.md#transformer-xl-recurrence)).
* Invariant: the relative shift gives exactly the directly computed relative scores,
  `test_shift_equals_direct_relative_scores` in `tests/transformer_xl/test_xl_relative_mha.py`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..checks import check_tensor


def sinusoidal_embeddings(distances: torch.Tensor, d_model: int) -> torch.Tensor:
    r"""Sinusoidal encodings $r_\delta = [\sin(\delta \omega_k), \cos(\delta \omega_k)]$ of distances.

    $\omega_k = 10000^{-2k / d_{model}}$; the result has shape `[len(distances), d_model]`.

    >>> sinusoidal_embeddings(torch.tensor([0.0, 1.0]), 4)
    tensor([[0.0000, 0.0000, 1.0000, 1.0000],
            [0.8415, 0.0100, 0.5403, 0.9999]])
    """
    n_freq = (d_model + 1) // 2
    omega = 10_000 ** (-torch.arange(n_freq, dtype=torch.float32, device=distances.device) * 2 / d_model)
    angles = distances.float()[:, None] * omega[None, :]  # (p, d_model / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :d_model]


def relative_shift(x: torch.Tensor) -> torch.Tensor:
    r"""Slide row `i` of `x[i, p, ...]` left by `n - 1 - i`, where `n = x.shape[0]`.

    Entry `[i, c]` of the result is `x[i, c + n - 1 - i]` whenever that index exists; the
    entries past the end of a row wrap to the next row (zero or junk).

    >>> relative_shift(torch.arange(1, 13).view(3, 4))
    tensor([[ 3,  4,  0,  5],
            [ 6,  7,  8,  0],
            [ 9, 10, 11, 12]])
    """
    n, p = x.shape[0], x.shape[1]
    # A zero column on the left: `[n, p + 1, ...]`
    zero_pad = x.new_zeros((n, 1, *x.shape[2:]))
    x_padded = torch.cat([zero_pad, x], dim=1)
    # Read the same memory as `[p + 1, n, ...]` and drop the first row, i.e. the first `n`
    # elements; each later row then starts one element further left.
    x_padded = x_padded.view(p + 1, n, *x.shape[2:])[1:]
    return x_padded.reshape(n, p, *x.shape[2:])


class RelativeMultiHeadAttention(nn.Module):
    r"""Multi-head attention with Transformer-XL relative positions (sequence-first)."""

    def __init__(self, heads: int, d_model: int, dropout_prob: float = 0.1, *, fused: bool = True):
        """
        * `heads` number of heads, `d_model` model width (a multiple of `heads`)
        * `dropout_prob` dropout on the attention probabilities
        * `fused` use `F.scaled_dot_product_attention` for the softmax and the weighted sum
        """
        super().__init__()
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive int, got {heads!r}")
        if not isinstance(d_model, int) or d_model < 1 or d_model % heads != 0:
            raise ValueError(f"d_model must be a positive multiple of heads={heads}, got {d_model!r}")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob!r}")
        self.heads, self.d_model, self.d_k = heads, d_model, d_model // heads
        self.dropout_prob, self.fused = dropout_prob, fused
        self.scale = 1 / math.sqrt(self.d_k)
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        # $W_R$, projecting the sinusoidal $r_\delta$ into every head's key space (each head its own
        # $d \times d_{model}$ slice of the output)
        self.pos_proj = nn.Linear(d_model, d_model, bias=False)
        # The global biases $u$ and $v$, one vector per head; zero makes (c) and (d) start off
        self.u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.v = nn.Parameter(torch.zeros(heads, self.d_k))
        self.dropout = nn.Dropout(dropout_prob)
        self.output = nn.Linear(d_model, d_model)

    def _check(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor):
        for name, t in (("query", query), ("key", key), ("value", value)):
            check_tensor(name, t, f"[seq_len, batch, {self.d_model}] (sequence first)", ndim=3, kind="float")
        check_tensor("mask", mask, "[seq_len, mem_len + seq_len, batch or 1]", ndim=3, kind="bool",
                     hint="; causal_mask_with_memory(seq_len, mem_len) builds one")
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query must be [seq_len, batch, {self.d_model}], got {list(query.shape)}")
        n, b, _ = query.shape
        if key.dim() != 3 or key.shape[0] < n or key.shape[1:] != query.shape[1:]:
            raise ValueError(f"key must be [mem_len + {n}, {b}, {self.d_model}], got {list(key.shape)}")
        if value.shape != key.shape:
            raise ValueError(f"value must have the shape of key {list(key.shape)}, got {list(value.shape)}")
        if mask.dtype != torch.bool or mask.dim() != 3 or mask.shape[:2] != (n, key.shape[0]) \
                or mask.shape[2] not in (1, b):
            raise ValueError(f"mask must be a bool tensor [{n}, {key.shape[0]}, {b} or 1] "
                             f"(seq_len, mem_len + seq_len, batch or 1), got {mask.dtype} {list(mask.shape)}")

    def position_scores(self, q: torch.Tensor, klen: int) -> torch.Tensor:
        r"""Terms $\textcolor{#d95f02}{\text{(b)}} + \textcolor{#7570b3}{\text{(d)}}$: the `[i, j, b, h]` scores $(\textcolor{#d95f02}{q_i} + \textcolor{#7570b3}{v})^\top R_{m+i-j}$, by the relative shift."""
        n = q.shape[0]
        # Distances from the farthest memory slot down to the last future key, $m + n - 1, \dots, -(n - 1)$
        distances = torch.arange(klen - 1, -n, -1, device=q.device)
        # $R_\delta = W_R\, r_\delta$, split into heads
        r = rearrange(self.pos_proj(sinusoidal_embeddings(distances, self.d_model).to(q.dtype)),
                      "p (h d) -> p h d", h=self.heads)
        # $X_{ipbh} = (\textcolor{#d95f02}{q_{ibh}} + \textcolor{#7570b3}{v_h})^\top R_{ph}$: terms $\textcolor{#d95f02}{\text{(b)}} + \textcolor{#7570b3}{\text{(d)}}$ for every query and every distance
        x = torch.einsum("ibhd,phd->ipbh", q + self.v, r)
        # Column $j$ of row $i$ now holds distance $m + i - j$; keep the `klen` real keys
        return relative_shift(x)[:, :klen]  # (i, j, b, h)

    def forward(self, *, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor):
        """
        * `query` `[seq_len, batch, d_model]`; `key`, `value` `[mem_len + seq_len, batch, d_model]`
        * `mask` bool `[seq_len, mem_len + seq_len, batch or 1]`, true where query `i` may see key `j`
        """
        self._check(query, key, value, mask)
        klen = key.shape[0]
        q = rearrange(self.query(query), "i b (h d) -> i b h d", h=self.heads)
        k = rearrange(self.key(key), "j b (h d) -> j b h d", h=self.heads)
        # $V_j$: the values (not the paper's $v$, which is the bias `self.v`)
        values = rearrange(self.value(value), "j b (h d) -> j b h d", h=self.heads)
        # $\textcolor{#d95f02}{\text{(b)}} + \textcolor{#7570b3}{\text{(d)}}$, scaled like the content term
        pos = self.position_scores(q, klen) * self.scale  # (i, j, b, h)
        # The mask gets a head axis; a query that sees nothing is routed to every key and zeroed
        # at the end, so no row of the softmax is all $-\infty$
        mask = mask.unsqueeze(-1)  # (i, j, b or 1, 1)
        empty = ~mask.any(dim=1, keepdim=True)  # (i, 1, b or 1, 1)
        visible = mask | empty
        if self.fused:
            out = self._attend_fused(q, k, values, pos, visible)
        else:
            out = self._attend_explicit(q, k, values, pos, visible)
        out = out.masked_fill(empty.squeeze(1).unsqueeze(-1), 0.0)  # (i, b, h, d)
        return self.output(rearrange(out, "i b h d -> i b (h d)"))

    def _attend_explicit(self, q, k, values, pos, visible):
        # $S_{ijbh} = (\textcolor{#1f77b4}{q_{ibh}} + \textcolor{#1b9e77}{u_h})^\top k_{jbh} / \sqrt{d}$ + `pos`: terms $\textcolor{#1f77b4}{\text{(a)}} + \textcolor{#1b9e77}{\text{(c)}}$ here, $\textcolor{#d95f02}{\text{(b)}} + \textcolor{#7570b3}{\text{(d)}}$ in `pos`
        scores = torch.einsum("ibhd,jbhd->ijbh", q + self.u, k) * self.scale + pos
        scores = scores.masked_fill(~visible, float("-inf"))
        # Softmax over the keys $j$
        attn = self.dropout(scores.softmax(dim=1))
        # $\sum_j a_{ijbh} V_{jbh}$
        return torch.einsum("ijbh,jbhd->ibhd", attn, values)

    def _attend_fused(self, q, k, values, pos, visible):
        # The same sum with the position terms and the mask passed as an additive bias;
        # `F.scaled_dot_product_attention` wants `[b, h, i, d]` and a `[b, h, i, j]` bias
        bias = rearrange(pos.masked_fill(~visible, float("-inf")), "i j b h -> b h i j")
        out = F.scaled_dot_product_attention(
            rearrange(q + self.u, "i b h d -> b h i d"), rearrange(k, "j b h d -> b h j d"),
            rearrange(values, "j b h d -> b h j d"), attn_mask=bias,
            dropout_p=self.dropout_prob if self.training else 0.0)
        return rearrange(out, "b h i d -> i b h d")
