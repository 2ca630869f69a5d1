r"""
# Hyper-connections: several residual streams

*Papers:* [Hyper-Connections](https://arxiv.org/abs/2409.19606) (Zhu et al., 2024);
[mHC: Manifold-Constrained Hyper-Connections](https://arxiv.org/abs/2512.24880) (2025)

A residual connection has one fixed strength: $x + F(x)$.  Pre-norm makes late layers' updates small
next to the stream; post-norm lets the stream be rewritten at every layer; neither is learned.
Hyper-connections widen the stream into $s$ copies $H = (h_1, \dots, h_s)$ and learn, per layer and
per token, how the copies feed the branch, how they mix with one another, and how the branch output
is written back:

$$\begin{aligned}
x_{\text{in}} &= \textstyle\sum_t a_t\, h_t, & a &= \sigma(\bar a + \epsilon_a\, \hat H W_a) \in \mathbb R^s, \\
h'_u &= \textstyle\sum_t M_{tu}\, h_t + b_u\, F(x_{\text{in}}), & b &= 2\,\sigma\big(\bar b + 2\epsilon_b\, \sigma(\hat H w_b)\big) \in \mathbb R^s,
\end{aligned}$$

with $\hat H$ the streams after a LayerNorm, $\bar a, \bar b$ static (per-layer) parameters and the
rest dynamic (per token).  The stream-to-stream matrix $M$ is the mHC form: a softmax over the source
streams followed by Sinkhorn-Knopp iterations that alternately normalise its rows and columns,

$$M = \operatorname{Sinkhorn}_k\big(\operatorname{softmax}_t(\bar M + \epsilon_a\, \hat H W_M)\big),$$

which keeps $M$ close to doubly stochastic, so mixing neither grows nor shrinks the streams however
deep the stack.  At initialisation layer $l$ reads stream $l \bmod s$ ($\bar a$ is one-hot) and
$\bar M$ is the identity.  The stack starts from $s$ copies of its input (plus a learned per-stream
embedding, zero at first) and sums the streams at the end, before the final norm.

`num_residual_streams=s` ($s > 1$) turns it on; `hyper_conn_sinkhorn_iters` is $k$ (default 5).

**Three inputs for attention.**  With `qkv_receive_diff_residuals=True` (or its `Attention`-level
spelling `attn_qkv_receive_diff_residuals`) each self-attention block reads three mixes of the
streams, $x_Q, x_K, x_V$, each with its own read weights $a^{Q}, a^{K}, a^{V}$, and projects its
queries, keys and values from them: $q = \operatorname{Norm}(x_Q) W_Q$, $k = \operatorname{Norm}(x_K)
W_K$, $v = \operatorname{Norm}(x_V) W_V$.  Queries, keys and values can then come from what
different earlier layers wrote.  A key/value cache keeps the keys and values as computed; a
Transformer-XL memory, one input per earlier token, cannot serve two inputs and is refused.
Every quantity above is computed token by token, so a cached step computes it for its new tokens,
and a Transformer-XL memory, which holds each attention layer's branch input (after the mixing), is
what the full pass computes for those tokens.

Tests: `tests/residual/test_res_hyper_connections.py` (a doubly stochastic $M$, the invariant sweeps,
cached decoding, XL memory, and the comparison with x-transformers below).

Shapes: `b` batch, `n` tokens, `s` streams, `D` model width.

## Differences from the papers

* The dynamic parts use one projection of the normalised streams for the read weights and $M$ (the
  paper's Algorithm 2, "dynamic only"); the write weights have their own.

## Differences from x-transformers

* In x-transformers 2.31.10 the Sinkhorn step receives the stream-to-stream logits reshaped to
  `(..., 1, s)`, so the softmax runs over an axis of length one and every entry of $M$ comes out
  as 1: each new stream is the *sum* of all streams, whatever the parameters (the stream grows $s$-fold
  per layer, and $\bar M$ and the part of $W$ for $M$ get no gradient).  Here $M$ is the doubly
  stochastic matrix the mHC paper describes, so the outputs differ; the read weights $a$, the write
  weights $b$ and the branch inputs agree with x-transformers' given the same parameters, and a test
  shows both.
* `attn_qkv_receive_diff_residuals=True` on x-transformers' `AttentionLayers` is a `TypeError` (the
  stack passes the argument itself); here it is another spelling of `qkv_receive_diff_residuals`.
* x-transformers keeps Transformer-XL memories as the multi-stream state, which fails against the
  single-stream branch input; here memories are branch inputs, as for every other stack.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "stack",
    Keyword("num_residual_streams", 1, "hyper-connections: the number of residual streams (1: a plain residual)",
            minimum=1, example=3),
    Keyword("hyper_conn_sinkhorn_iters", 5, "Sinkhorn iterations that keep the stream mixing doubly stochastic",
            minimum=0, example=3),
    Keyword("qkv_receive_diff_residuals", False,
            "hyper-connections read three inputs for self-attention: one each for queries, keys and values"))


def sinkhorn(logits: Tensor, iters: int) -> Tensor:
    r"""Softmax over the source axis (`-2`), then `iters` rounds of normalising rows and columns to sum 1.

    >>> m = sinkhorn(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), 20)
    >>> [round(v, 3) for v in m.sum(0).tolist() + m.sum(1).tolist()]
    [1.0, 1.0, 1.0, 1.0]
    """
    m = logits.float().softmax(dim=-2)
    for _ in range(iters):
        m = F.normalize(m, p=1, dim=-1)
        m = F.normalize(m, p=1, dim=-2)
    return m.to(logits.dtype)


class HyperConnection(nn.Module):
    r"""The width and depth connections of one block over `streams` residual streams.

    `prepare(H)` gives the branch input and the state that `forward(F, state)` writes the branch
    output `F` back with.
    """

    def __init__(self, dim: int, streams: int, layer_index: int, sinkhorn_iters: int, views: int = 1):
        super().__init__()
        self.streams, self.sinkhorn_iters, self.views = streams, sinkhorn_iters, views
        self.norm = nn.LayerNorm(dim, bias=False)
        # $\bar a$: layer $l$ reads stream $l \bmod s$ (into each of its `views` inputs); $\bar M = I$
        read = torch.zeros(streams, views)
        read[layer_index % streams] = 1.0
        self.static_alpha = nn.Parameter(torch.cat((read, torch.eye(streams)), dim=1))  # (s, v + s)
        self.dynamic_alpha_fn = nn.Parameter(torch.zeros(dim, views + streams))
        self.dynamic_alpha_scale = nn.Parameter(torch.tensor(1e-2))
        self.static_beta = nn.Parameter(torch.ones(streams))
        self.dynamic_beta_fn = nn.Parameter(torch.zeros(dim))
        self.dynamic_beta_scale = nn.Parameter(torch.tensor(1e-2))

    def prepare(self, h: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Streams `h` `(b, n, s, D)` to the branch input `(b, n, D)` (`(3, b, n, D)` with three views) and
        `(mixed streams, write weights)`."""
        v = self.views
        normed = self.norm(h)
        # $\bar a + \epsilon_a \hat H W$: the read logits and the logits of $M$, per token and source stream
        alpha = normed @ self.dynamic_alpha_fn * self.dynamic_alpha_scale + self.static_alpha  # (b, n, s, v + s)
        read = torch.sigmoid(alpha[..., :v])  # (b, n, s, v)
        mix = sinkhorn(alpha[..., v:], self.sinkhorn_iters)  # (b, n, s, s): source t, target u
        # $b = 2 \sigma(\bar b + 2 \epsilon_b \sigma(\hat H w_b))$
        write = 2 * torch.sigmoid(self.static_beta + 2 * torch.sigmoid(normed @ self.dynamic_beta_fn)
                                  * self.dynamic_beta_scale)  # (b, n, s)
        # $x_{\text{in}} = \sum_t a_t h_t$ and $\sum_t M_{tu} h_t$
        branch_input = einsum(read, h, "b n s v, b n s d -> v b n d")
        branch_input = branch_input[0] if v == 1 else branch_input  # (b, n, D) or (v, b, n, D)
        mixed = einsum(mix, h, "b n t u, b n t d -> b n u d")
        return branch_input, (mixed, write)

    def forward(self, branch: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
        r"""$h'_u = \sum_t M_{tu} h_t + b_u F$: `(b, n, D)` into `(b, n, s, D)`."""
        mixed, write = state
        return mixed + write[..., None] * branch[..., None, :]


class ResidualStreams(nn.Module):
    r"""Copies the stack's input into $s$ streams (plus a learned per-stream embedding) and sums them at the end.

    >>> streams = ResidualStreams(4, 3)
    >>> streams.expand(torch.ones(2, 5, 4)).shape, streams.reduce(torch.ones(2, 5, 3, 4))[0, 0].tolist()
    (torch.Size([2, 5, 3, 4]), [3.0, 3.0, 3.0, 3.0])
    """

    def __init__(self, dim: int, streams: int):
        super().__init__()
        self.stream_emb = nn.Parameter(torch.zeros(streams, dim))

    def expand(self, x: Tensor) -> Tensor:
        # $h_t = x + e_t$
        return x[:, :, None, :] + self.stream_emb  # (b, n, s, D)

    def reduce(self, h: Tensor) -> Tensor:
        # $\sum_t h_t$
        return h.sum(dim=-2)  # (b, n, D)


def attach_hyper_connections(o, blocks: list) -> Optional[ResidualStreams]:
    """Replace each block's residual sum by a hyper-connection; return the stream expansion, or `None`."""
    if o.num_residual_streams == 1 or o.gated_multi_residual:
        return None  # gated multi residuals widen the stream themselves (`gated_multi_residual.py`)
    for i, block in enumerate(blocks):
        # LIMe makes the three views itself (`models/layer_integration.py`), from one read per sublayer.
        views = 3 if o.qkv_receive_diff_residuals and block.kind == "a" and not o.integrate_layers else 1
        block.residual = HyperConnection(o.dim, o.num_residual_streams, i, o.hyper_conn_sinkhorn_iters, views)
    return ResidualStreams(o.dim, o.num_residual_streams)


def stream_input(block, x: Tensor):
    """The branch input of `block` from the stream `x`, and what its residual sum needs (`x` itself when plain)."""
    if hasattr(block.residual, "prepare"):  # hyper-connections, gated multi residuals
        return block.residual.prepare(x)
    return x, x


@rule("stack")
def _hyper_connection_keywords(o) -> None:
    if o.num_residual_streams == 1:
        if o.hyper_conn_sinkhorn_iters != 5:
            raise ValueError("hyper_conn_sinkhorn_iters: only meaningful with num_residual_streams > 1")
        if o.qkv_receive_diff_residuals:
            raise ValueError("qkv_receive_diff_residuals: needs num_residual_streams > 1 (the three inputs are "
                             "three mixes of the residual streams)")
        return
    if o.qkv_receive_diff_residuals:
        if o.shift_tokens:
            raise ValueError("qkv_receive_diff_residuals and shift_tokens cannot be combined: token shift acts on one "
                             "branch input")
        if o.attn.collab_heads:
            raise ValueError("qkv_receive_diff_residuals and attn_collab_heads cannot be combined: collaborative "
                             "heads project queries and keys from one input")
    for name in ("gate_residual", "scale_residual", "reversible"):
        if getattr(o, name):
            raise ValueError(f"num_residual_streams and {name} cannot be combined: hyper-connections replace the "
                             "residual sum" + (" and the stream is no longer two halves" if name == "reversible"
                                               else ""))
    if o.scale_residual_constant != 1:
        raise ValueError("num_residual_streams and scale_residual_constant cannot be combined: hyper-connections "
                         "learn how strongly each stream carries on")
