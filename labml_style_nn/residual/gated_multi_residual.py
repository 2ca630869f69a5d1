r"""
# Gated multi residuals: several streams, elementwise read gates

*Source:* the gated residual that x-transformers 2.31.10 cites from a
[Qwen blog post](https://qwen.ai/blog?id=qwen3.8-flash-next), a variant of
[Hyper-Connections](https://arxiv.org/abs/2409.19606) (Zhu et al., 2024)

Like [hyper-connections](hyper_connections.md), the residual stream is widened into $s$ streams
$h_1, \dots, h_s$, and each block learns how it reads them and how it writes its output back.  The
difference is in the read: instead of one scalar weight per stream, a *gate per feature*, computed
for every token from a low-rank bottleneck of all the streams, and the streams are normalised first,
so the block needs no pre-norm of its own.  The write is one scalar per stream, and the streams are
not mixed with one another:

$$\begin{aligned}
\hat h_t &= \operatorname{RMSNorm}(h_t) \odot g_t, \qquad
z = \epsilon \cdot \operatorname{SiLU}\!\Big(W_{\downarrow}\, \tfrac1s [\hat h_1; \dots; \hat h_s]\Big), \\
x_{\text{in}} &= \tfrac1s \textstyle\sum_t \sigma\big(\bar A_t + (W_A z)_t\big) \odot \hat h_t, \qquad
h'_t = h_t + 2\,\sigma\big(\bar b_t + (W_b z)_t\big)\, F(x_{\text{in}}),
\end{aligned}$$

with $g_t$ a learned per-stream gain, $\bar A$ (one logit per stream and feature) and $\bar b$ static
logits, $W_\downarrow$ the shared bottleneck of rank `read_gate_rank`, and $\epsilon$ a learned
scale (0.01 at first).  At initialisation $W_A = W_b = 0$: layer $l$ leans towards stream
$l \bmod s$ ($\bar A$ is 1 there, 0 elsewhere) and writes to every stream with weight 1.

`gated_multi_residual=True` turns it on, with `residual_fn_kwargs=dict(read_gate_rank=r)` (required)
and `num_residual_streams=s` (1 works too: one gated stream).  With `qkv_receive_diff_residuals=True`
a self-attention block reads three gated mixes, for its queries, keys and values.  As in
x-transformers, the blocks have no pre-norm; each stream is normalised after the residual sum
(post-norm, per stream), and the stack keeps its final norm after summing the streams.  Every
quantity is computed token by token, so causality, padding, cached decoding and Transformer-XL
memories behave as in a plain stack.

Tests: `tests/residual/test_mv_split_and_gated_multi.py` (the read at initialisation, the invariant
sweeps, weight-copied parity with x-transformers).

Shapes: `b` batch, `n` tokens, `s` streams, `v` views (1, or 3 for queries, keys and values), `D` model
width, `r` the bottleneck rank.

## Differences from x-transformers

* None in the computation.  x-transformers ignores `scale_residual` and `scale_residual_constant`
  with this residual; here they are a `ValueError`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from .hyper_connections import ResidualStreams

KEYWORDS = declare(__name__, "stack",
    Keyword("gated_multi_residual", False,
            "residual streams read through elementwise low-rank gates and written with a scalar gate per stream "
            "(needs residual_fn_kwargs=dict(read_gate_rank=...))",
            example=True))


class GatedMultiResidual(nn.Module):
    r"""The read and write gates of one block over `streams` residual streams.

    `prepare(h)` gives the branch input and the state that `forward(F, state)` writes `F` back with.
    """

    def __init__(self, dim: int, streams: int, layer_index: int, read_gate_rank: int, views: int = 1):
        super().__init__()
        self.streams, self.views = streams, views
        self.read_gain = nn.Parameter(torch.ones(streams, dim))  # $g_t$
        # $\bar A$: 1 on the layer's own stream, for every view and feature
        static_read = torch.zeros(views, streams, dim)
        static_read[:, layer_index % streams] = 1.0
        self.static_read_logit = nn.Parameter(static_read)
        self.static_write_logit = nn.Parameter(torch.zeros(streams))  # $\bar b$: $2\sigma(0) = 1$
        self.to_bottleneck = nn.Linear(dim * streams, read_gate_rank, bias=False)
        self.to_read_gate = nn.Linear(read_gate_rank, views * streams * dim, bias=False)
        self.to_write_gate = nn.Linear(read_gate_rank, streams, bias=False)
        nn.init.zeros_(self.to_read_gate.weight)
        nn.init.zeros_(self.to_write_gate.weight)
        self.dynamic_gate_scale = nn.Parameter(torch.tensor(1e-2))  # $\epsilon$

    def prepare(self, h: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, bool]]:
        """Streams `(b, n, s, D)` (or one stream `(b, n, D)`) to the branch input `(b, n, D)` (`(3, b, n, D)`
        with three views) and `(streams, write weights, single)`."""
        single = h.dim() == 3
        h = h[:, :, None] if single else h  # (b, n, s, D)
        s = self.streams
        # $\hat h_t = \operatorname{RMSNorm}(h_t) \odot g_t$
        normed = F.rms_norm(h, h.shape[-1:]) * self.read_gain  # (b, n, s, D)
        # $z = \epsilon \operatorname{SiLU}(W_\downarrow \frac1s [\hat h_1; \dots; \hat h_s])$
        z = F.silu(self.to_bottleneck(rearrange(normed, "b n s d -> b n (s d)") / s)) * self.dynamic_gate_scale
        # $\sigma(\bar A + W_A z)$, one gate per view, stream and feature
        read = self.to_read_gate(z) + rearrange(self.static_read_logit, "v s d -> (v s d)")
        read = rearrange(read.sigmoid(), "b n (v s d) -> v b n s d", v=self.views, s=s)
        # $x_{\text{in}} = \frac1s \sum_t \sigma(\cdot)_t \odot \hat h_t$
        branch_input = einsum(read, normed, "v b n s d, b n s d -> v b n d") / s
        branch_input = branch_input[0] if self.views == 1 else branch_input  # (b, n, D) or (3, b, n, D)
        # $2 \sigma(\bar b + W_b z)$
        write = 2 * (self.to_write_gate(z) + self.static_write_logit).sigmoid()  # (b, n, s)
        return branch_input, (h, write, single)

    def forward(self, branch: Tensor, state: tuple[Tensor, Tensor, bool]) -> Tensor:
        r"""$h'_t = h_t + b_t F$: `(b, n, D)` into `(b, n, s, D)` (or `(b, n, D)` for one stream)."""
        h, write, single = state
        out = h + write[..., None] * branch[:, :, None, :]
        return out[:, :, 0] if single else out


def attach_gated_multi_residual(o, blocks: list) -> Optional[ResidualStreams]:
    """Replace each block's residual sum by its gates; return the stream expansion (`None` for one stream)."""
    if not o.gated_multi_residual:
        return None
    for i, block in enumerate(blocks):
        views = 3 if o.qkv_receive_diff_residuals and block.kind == "a" else 1
        block.residual = GatedMultiResidual(o.dim, o.num_residual_streams, i, o.residual_fn_kwargs["read_gate_rank"],
                                            views)
    return ResidualStreams(o.dim, o.num_residual_streams) if o.num_residual_streams > 1 else None


@rule("stack")
def _gated_multi_keywords(o) -> None:
    if not o.gated_multi_residual:
        return
    rank = o.residual_fn_kwargs.get("read_gate_rank")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError("residual_fn_kwargs: gated_multi_residual needs read_gate_rank, a positive integer (the rank "
                         f"of its gates' bottleneck), e.g. residual_fn_kwargs=dict(read_gate_rank=16); got {rank!r}")
    unknown = sorted(set(o.residual_fn_kwargs) - {"read_gate_rank"})
    if unknown:
        raise ValueError(f"residual_fn_kwargs: gated_multi_residual reads read_gate_rank, got {', '.join(unknown)}")
    for name in ("gate_residual", "orthog_residual", "mv_split_residual", "attn_aggregated_residuals",
                 "integrate_layers", "sandwich_norm", "scale_residual", "reversible", "use_rezero"):
        if getattr(o, name):
            raise ValueError(f"gated_multi_residual and {name} cannot be combined: " + {
                "sandwich_norm": "the blocks have no pre-norm to sandwich with",
                "reversible": "the stream is no longer two halves",
                "use_rezero": "the write gates already scale each branch",
            }.get(name, "each decides how a branch output joins the stream"))
    if o.scale_residual_constant != 1:
        raise ValueError("gated_multi_residual and scale_residual_constant cannot be combined: the write gates "
                         "decide how strongly each stream carries on")
