r"""
# The Feedback Transformer

*Paper:* [Addressing Some Limitations of Transformers with Feedback Memory](https://arxiv.org/abs/2002.09402) (Fan et al., 2021)

A Transformer computes all positions of a layer in parallel, so the representation of token $t$ at
layer $l$ can only use layers below $l$ of the past.  Its highest-level views of the past are never
fed back into the computation, and the depth of reasoning about a sequence is capped by the number
of layers.  The Feedback Transformer gives up that parallelism: tokens are processed one after the
other, and each step writes one vector into a [memory shared by all layers](feedback_memory.md).
With one token per step (the paper's setting), layer $l$ of step $t$ computes, exactly as the
code below does (pre-norm sublayers, each on its own residual),

$$\begin{aligned}
a^l_t &= x^{l-1}_t + \operatorname{Attn}^l\big(\operatorname{LN}(x^{l-1}_t),\ \{m_{t-M}, \dots, m_{t-1}\}\big)
&& \text{attention, first residual} \\
x^l_t &= a^l_t + \operatorname{FF}^l\big(\operatorname{LN}(a^l_t)\big) && \text{feed-forward, second residual} \\
m_t &= \sum_{l=0}^{L} \operatorname{softmax}(\alpha)_l\, x^l_t && \text{written once all } L \text{ layers are done}
\end{aligned}$$

with $x^0_t$ the token embedding and $\alpha$ the learned layer weights (the paper's $w^l$).  Every
layer of step $t$ reads the complete state of earlier steps, all the way up, so a small, shallow
model can track state that a deep Transformer cannot.

![Information flow in a Transformer and in the Feedback Transformer](../../docs/figures/feedback_flow.png)

*The arrows into token 3's first layer: in a Transformer (left) it attends to layer 0 of tokens 1-3,
itself included, and to no upper layer; in the Feedback Transformer (right) it attends to
$m_1, m_2$, which mix every layer of those tokens, and not to itself: its own $x^0_3$ enters as the
query and through the residual.
`python docs/figures/make_figures.py` draws it.*

## Windows

`seq_len=1` is the paper's recurrence, token by token.  A larger window of $w$ tokens (`seq_len`) trades a little
of it for speed: the window's tokens are computed in parallel; each attends to the memory of all
earlier windows and to the *same-layer* inputs of the tokens before it in its window, but sees the
feedback of those window-mates only through the next window.  Windows are counted from the start
of each call, so a sequence split into calls at multiples of `seq_len` gives the same outputs as one
call (a test checks this).

Per window the work is batched: the memory's keys and values are computed once and shared by all
layers, the position bias once per call, and each layer is a handful of matrix products plus one
fused attention call.

## Memory across calls

`model(x, return_memory=True)` also returns the last `mem_len` memory vectors, `(b, m, D)`;
`model(x, memory=memory)` continues from them, with positions counted on from the memory.  The
memory is detached by default; `detach_memory=False` keeps its graph for truncated backpropagation
through several calls.

The pieces: [attention over the memory](feedback_attention.md), the
[memory itself](feedback_memory.md) and [T5's relative bias](../positional/t5_bias.md).  Compare
[Transformer-XL](../transformer_xl/transformer_xl.md), whose memory is one tensor per layer.
[`experiments/feedback_lm.py`](../../experiments/feedback_lm.py) trains both on the same bytes:
at this small size the paper's claim does not hold; see [the evidence](#evidence) below.  Tests:
`tests/feedback/test_feedback_transformer.py` (windows of one token match a per-token reference
written in the test; causality; two calls with memory equal one call).

Shapes: `b` batch, `n` tokens, `w` window, `m` memory length, `D` model width, `V` vocabulary.

## In practice: what it costs

Training is slower than a Transformer's, and the gap grows with the number of sequential steps.  A
Transformer-XL runs a segment of $n$ tokens through each layer in one parallel pass; the Feedback
Transformer runs $n / w$ windows one after the other, each through all $L$ layers, because window
$t + 1$ needs the memory that window $t$ writes at the top.  The work comes as many small matrix
products instead of a few large ones, which is what a GPU handles worst; with $w = 1$, the paper's
setting, every token is its own step.  Measured here on a CPU as a ratio in one process (2 layers,
width 96, segments of 32, windows of 8; [results](../../docs/results.md#feedback-transformer-vs-transformer-xl)),
a training step costs 1.29 times the CPU time of the parameter-matched Transformer-XL and 1.45 times
that of the T5-biased one; with windows of one token, 5.6 times.  The paper's remedies:

* the memory's keys and values are computed once per step and shared by every layer (the shared
  key/value cache), where a Transformer-XL projects each layer's memory separately; this module
  does the same ([the memory](feedback_memory.md));
* train on shorter sequences first, where fewer sequential steps make training cheap, and move to
  the long ones later;
* start from a trained model instead of from scratch, so that the slow recurrent training only has
  to adapt it.

Two savings of this implementation that change no value: every weight's gradient is summed over
the windows in place ([weight gradients](weight_grads.md)), and a window of one token skips its own,
always hidden, key and value ([attention over the memory](feedback_attention.md)).  What a step
costs against feedback-transformer-pytorch, and where its time goes, is measured in
[the benchmarks](../../docs/benchmarks.md#the-feedback-transformer-equal-work-and-why-2x-is-out-of-reach-here).

Windows of $w > 1$ tokens (`seq_len`) are this library's own trade: $n / w$ sequential steps instead
of $n$, at the price of the feedback between the tokens of a window.

## Differences from the paper

The relative position bias is T5's (shared by all layers), the sublayers are pre-normalised and the
memory is normalised before its keys and values are computed.  The feed-forward layers are the
library's (GELU; `ff_glu=True` for GEGLU).  Windows larger than one token are an approximation the
paper does not use.

## Evidence

* Measured, and the claim does not hold at this size: against the paper's own Transformer-XL
  (relative attention, 328,576 parameters against 328,899, the same segments, memory and steps) the
  Feedback Transformer is behind in each of three seeds, 3.170 ± 0.122 bpc against 2.920 ± 0.019
  (2 layers, 600 steps; [results](../../docs/results.md#feedback-transformer-vs-transformer-xl),
  `experiments/feedback_lm.py`).  It beats only a Transformer-XL with T5's bias (3.240 against 3.402
  at seed 0), a bias that the [Transformer-XL results](../../docs/results.md#transformer-xl-recurrence)
  show is hurt by memory at these budgets.  The paper measures its gains with far larger models and
  budgets, and on tasks that need to track state; neither is tested here.
* Invariant: computing a sequence in windows equals the per-token recurrence of the paper,
  `test_matches_the_per_token_reference` in `tests/feedback/test_feedback_transformer.py`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..attention.extension_points import masked_fill_value
from ..feedforward.feedforward import FeedForward
from ..positional.t5_bias import T5RelativePositionBias
from .feedback_attention import FeedbackAttention
from .feedback_memory import FeedbackMemory, fifo
from .weight_grads import accumulated_weight_grads


class FeedbackLayer(nn.Module):
    """One pre-norm layer: attention over the feedback memory, then a feed-forward network."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, attn_dropout: float, ff_dropout: float,
                 ff_mult: float, ff_glu: bool):
        super().__init__()
        self.attn_norm, self.ff_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = FeedbackAttention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout)
        self.ff = FeedForward(dim, mult=ff_mult, glu=ff_glu, dropout=ff_dropout)

    def forward(self, x: Tensor, memory_kv, bias: Tensor, kv_proj, first_blind: bool) -> Tensor:
        # $a^l = x^{l-1} + \operatorname{Attn}^l\big(\operatorname{LN}(x^{l-1}),\ m\big)$: the first residual
        x = x + self.attn(self.attn_norm(x), memory_kv, bias, kv_proj, first_blind)
        # $x^l = a^l + \operatorname{FF}^l\big(\operatorname{LN}(a^l)\big)$: the second residual
        return x + self.ff(self.ff_norm(x))  # (b, w, D)


def _check_int(name: str, value, minimum: int):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


class FeedbackTransformer(nn.Module):
    r"""Token ids in, logits out, through a memory that every layer reads and all layers write.

    Args:
        num_tokens: vocabulary size $V$.
        dim: model width $D$.
        depth: number of layers $L$.
        seq_len: window length $w$ (1: the paper's token-by-token recurrence).
        mem_len: memory length $M$, in tokens.
        dim_head: head width.
        heads: attention heads.
        attn_dropout: dropout on attention weights.
        ff_dropout: dropout in the feed-forward hidden layer.
        ff_mult: feed-forward hidden width as a multiple of `dim`.
        ff_glu: gated (GEGLU) feed-forward layers.
    """

    def __init__(self, *, num_tokens: int, dim: int, depth: int, seq_len: int, mem_len: int,
                 dim_head: int = 64, heads: int = 8, attn_dropout: float = 0.0, ff_dropout: float = 0.0,
                 ff_mult: float = 4, ff_glu: bool = False):
        super().__init__()
        for name, value, minimum in (("num_tokens", num_tokens, 1), ("dim", dim, 1), ("depth", depth, 1),
                                     ("seq_len", seq_len, 1), ("mem_len", mem_len, 1),
                                     ("dim_head", dim_head, 1), ("heads", heads, 1)):
            _check_int(name, value, minimum)
        for name, p in (("attn_dropout", attn_dropout), ("ff_dropout", ff_dropout)):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ValueError(f"{name}: expected a dropout probability in [0, 1), got {p!r}")
        self.num_tokens, self.dim, self.seq_len, self.mem_len = num_tokens, dim, seq_len, mem_len
        self.token_emb = nn.Embedding(num_tokens, dim)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        self.memory = FeedbackMemory(dim, depth, heads, dim_head)
        self.rel_pos = T5RelativePositionBias(heads, causal=True)
        self.layers = nn.ModuleList(
            FeedbackLayer(dim, heads=heads, dim_head=dim_head, attn_dropout=attn_dropout,
                          ff_dropout=ff_dropout, ff_mult=ff_mult, ff_glu=ff_glu) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, num_tokens)

    #
    # ## The bias of every window, once per call
    #
    # Window queries sit at positions $M \dots M + w - 1$ after a full memory at $0 \dots M - 1$.
    # A window with $s$ memory entries and $n$ tokens takes rows $[0, n)$ and columns
    # $[M - s, M + n)$: relative distances, and so the bias, are unchanged by the slicing.
    def window_bias(self, device) -> Tensor:
        w, M = self.seq_len, self.mem_len
        q_pos = torch.arange(M, M + w, device=device)
        k_pos = torch.arange(M + w, device=device)
        bias = self.rel_pos(q_pos, k_pos)  # (1, h, w, M + w): $b_{i - j}$
        # Key $j$ is visible from query $i$ only when $j < i$: the whole memory, the window's earlier tokens.
        hidden = k_pos[None, :] >= q_pos[:, None]  # (w, M + w)
        return bias.masked_fill(hidden, masked_fill_value(bias.dtype))

    def _check(self, x: Tensor, memory: Optional[Tensor]):
        if not torch.is_tensor(x) or x.dim() != 2 or x.is_floating_point() or x.is_complex():
            got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected an integer tensor of token ids (batch, seq_len), got {got}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_tokens):
            raise ValueError(f"x: token ids must lie in [0, {self.num_tokens}), got values in "
                             f"[{int(x.min())}, {int(x.max())}]")
        if memory is not None and (not torch.is_tensor(memory) or memory.dim() != 3
                                   or memory.shape[0] != x.shape[0] or memory.shape[2] != self.dim
                                   or memory.shape[1] > self.mem_len):
            got = tuple(memory.shape) if torch.is_tensor(memory) else type(memory).__name__
            raise ValueError(f"memory: expected a tensor ({x.shape[0]}, <= mem_len={self.mem_len}, "
                             f"{self.dim}) as returned with return_memory=True, got {got}")

    #
    # ## Forward
    def forward(self, x: Tensor, *, memory: Optional[Tensor] = None, return_memory: bool = False,
                detach_memory: bool = True, return_embeddings: bool = False):
        r"""Logits `(b, n, V)` for token ids `x` `(b, n)`; with `return_memory=True`, `(logits, memory)`.

        Args:
            memory: `(b, m, D)` memory vectors of an earlier call, $m \le M$.
            return_memory: also return the last $M$ memory vectors.
            detach_memory: cut the returned memory from the graph (set `False` to backpropagate
                through it in the next call).
            return_embeddings: the final hidden states `(b, n, D)` (normalised) instead of the logits;
                `logits(h)` projects them (decoding projects the last position only).
        """
        self._check(x, memory)
        # Each weight is used once per window; its gradient is summed in place over the windows
        # ([weight gradients](weight_grads.md)).  The values and the gradients are the plain ones.
        with accumulated_weight_grads(self):
            return self._forward(x, memory, return_memory, detach_memory, return_embeddings)

    def logits(self, h: Tensor) -> Tensor:
        """Final hidden states `(..., D)` to logits `(..., V)`."""
        return self.to_logits(h)

    def _forward(self, x: Tensor, memory: Optional[Tensor], return_memory: bool, detach_memory: bool,
                 return_embeddings: bool):
        M = self.mem_len
        emb: Tensor = self.token_emb(x)  # (b, n, D): $x^0$ for every token at once
        if memory is None:
            memory = emb.new_zeros(x.shape[0], 0, self.dim)
        memory_kv = self.memory.keys_values(memory)  # (b, h, m, d) each, once per call
        bias = self.window_bias(x.device)  # (1, h, w, M + w)
        outputs, entries = [], []
        windows = emb.split(self.seq_len, dim=1)
        for index, h in enumerate(windows):
            s, n = memory_kv[0].shape[2], h.shape[1]
            window_bias = bias[:, :, :n, M - s:M + n]  # (1, h, n, s + n)
            states = [h]
            for layer in self.layers:
                h = layer(h, memory_kv, window_bias, self.memory.project, first_blind=s == 0)
                states.append(h)  # $x^l$ of the window
            outputs.append(h)
            last = index == len(windows) - 1
            if last and not return_memory:
                break
            # $m_t$ for the window's tokens, and their keys/values: computed once, read by all layers
            # of the next windows (the last window's are never read in this call).
            entry = self.memory.aggregate(states)  # (b, n, D)
            entries.append(entry)
            if not last:
                new_k, new_v = self.memory.keys_values(entry)
                memory_kv = (fifo(memory_kv[0], new_k, M, dim=2), fifo(memory_kv[1], new_v, M, dim=2))
        h = self.norm(torch.cat(outputs, dim=1))  # (b, n, D)
        out = h if return_embeddings else self.logits(h)  # (b, n, V)
        if not return_memory:
            return out
        memory = fifo(memory, torch.cat(entries, dim=1), M)  # (b, <= M, D)
        return out, memory.detach() if detach_memory else memory
