r"""
# Transformer-XL

*Paper:* [Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context](https://arxiv.org/abs/1901.02860) (Dai et al., 2019)

A transformer trained on fixed-length segments can only attend within the segment, so the first
tokens of every segment see almost no context. Transformer-XL keeps, for every layer, the hidden
states the previous segment fed into that layer, and lets the current segment attend to them as
extra keys and values. The cached states are not back-propagated through (they are detached),
so backpropagation stays inside the segment: no activation of an earlier segment is kept, however
many segments the memory has carried information across. Its memory cost still grows with the
memory length $m$: the backward pass stores each layer's $n \times (m + n)$ scores and the keys
and values of the $m$ memory slots. The forward pass costs more too: each layer scores $n$ queries against $m + n$ keys instead of
$n$, and the memory's keys and values are projected again in every call. In return the receptive
field grows by one segment per layer.

For layer $l$ and segment $\tau$, with $\mathrm{SG}$ stopping the gradient:

$$
\begin{aligned}
\tilde h^{l-1}_{\tau} &= \big[\mathrm{SG}(h^{l-1}_{\tau-1}) \circ h^{l-1}_{\tau}\big] \\
h^{l}_{\tau} &= \mathrm{Layer}\big(\text{query} = h^{l-1}_{\tau},\ \text{key, value} = \tilde h^{l-1}_{\tau}\big)
\end{aligned}
$$

Reusing states only works because the attention is relative
([relative multi-head attention](relative_mha.md), with its terms (a)-(d)): a cached state carries
no absolute position that would clash with the current segment's.

The invariant, checked by `test_segment_with_memory_equals_joint_pass` in
`tests/transformer_xl/test_xl_transformer_xl.py`: with dropout off, a segment run with the previous
segment as memory gives exactly the outputs of one pass over both.  The library's stacks offer the
same recurrence through the keyword API (`max_mem_len`, [XL recurrence](../memory/xl_recurrence.md)),
and [`experiments/transformer_xl_lm.py`](../../experiments/transformer_xl_lm.py) measures the
recurrence (`--pos xl_relative` runs this module): on segments of 16 bytes the memory helps this
module (2.837 to 2.609 bits per byte) and the stack with ALiBi (3.062 to 3.000), and hurts the
stack with T5's bias at this budget (2.965 to 3.340; the measured reason is on the
[results](../../docs/results.md#transformer-xl-recurrence) page).

Shapes (sequence first): `x` is `[seq_len, batch, d_model]`, each layer's memory
`[mem_len, batch, d_model]`, the mask `[seq_len, mem_len + seq_len, batch or 1]`.

## Differences from the paper

* The layers are pre-norm, $x + \mathrm{Attn}(\mathrm{LN}(x))$, with a final LayerNorm; the
  paper is post-norm. The memory goes through the same LayerNorm as $x$ before it is
  concatenated, so keys from memory and from the segment are on the same footing.
* `TransformerXL` keeps no state between calls: each call returns every layer's input,
  detached, as `new_mem`, and the caller decides what the next call sees, just that segment or a
  longer window built with `update_memory` (as the paper does, with a memory longer than a
  segment at evaluation).

## Evidence

* Measured: with this module's relative attention, carrying a memory of 64 lowers validation bpc from
  2.837 to 2.609 on segments of 16 bytes (1,500 steps, `experiments/transformer_xl_lm.py --pos
  xl_relative`). The model uses all of its memory (2.702 bpc with the last 8 states, 2.621 with
  32) but nothing older: evaluating with 128 or 256 makes it slightly worse (2.613, 2.620), and a
  model trained with a memory of 16 gets worse with 32 to 256 (2.639 to 2.642-2.691), though 11-37%
  of its attention goes to the older states. Only with 4,500 steps does twice the training memory
  help, by 0.0005 and 0.0024 bpc on two seeds ([results](../../docs/results.md#transformer-xl-recurrence)).
* Invariant: a segment run with the previous segment as memory gives the outputs of one pass over
  both, `test_segment_with_memory_equals_joint_pass` in `tests/transformer_xl/test_xl_transformer_xl.py`.
"""

import copy
from typing import Optional

import torch
import torch.nn as nn

from ..checks import check_tensor
from .feed_forward import FeedForward
from .relative_mha import RelativeMultiHeadAttention


def causal_mask_with_memory(seq_len: int, mem_len: int, device=None) -> torch.Tensor:
    """The `[seq_len, mem_len + seq_len, 1]` mask letting query `i` see every memory slot and keys `j <= i`.

    >>> causal_mask_with_memory(2, 1)[:, :, 0]
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    if seq_len < 1 or mem_len < 0:
        raise ValueError(f"seq_len must be >= 1 and mem_len >= 0, got seq_len={seq_len}, mem_len={mem_len}")
    # Query $i$ sits at position $m + i$ of the keys and sees keys $j \le m + i$
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(mem_len + seq_len, device=device)[None, :]
    return (j <= mem_len + i).unsqueeze(-1)


def update_memory(mem: list[torch.Tensor], new_mem: list[torch.Tensor], max_len: int) -> list[torch.Tensor]:
    """Append each layer's `new_mem` to its `mem` (along the sequence) and keep the last `max_len` steps.

    >>> old = [torch.zeros(2, 1, 1)]
    >>> new = [torch.ones(3, 1, 1)]
    >>> update_memory(old, new, 4)[0].flatten()
    tensor([0., 1., 1., 1.])
    >>> update_memory([], new, 2)[0].flatten()
    tensor([1., 1.])
    """
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")
    if mem and len(mem) != len(new_mem):
        raise ValueError(f"mem has {len(mem)} layers but new_mem has {len(new_mem)}")
    if not mem:
        mem = [m[:0] for m in new_mem]
    return [torch.cat([m, n], dim=0)[-max_len:] if max_len > 0 else n[:0]
            for m, n in zip(mem, new_mem, strict=True)]


class TransformerXLLayer(nn.Module):
    """One pre-norm Transformer-XL layer: relative self-attention over memory and segment, then an FFN."""

    def __init__(self, *, d_model: int, self_attn: RelativeMultiHeadAttention, feed_forward: FeedForward,
                 dropout_prob: float):
        """
        * `d_model` the token width; `self_attn` and `feed_forward` the two sub-blocks
        * `dropout_prob` dropout on each sub-block's output before it is added back
        """
        super().__init__()
        attn_d_model = getattr(self_attn, "d_model", d_model)
        if attn_d_model != d_model:
            raise ValueError(f"self_attn has d_model={attn_d_model} but d_model={d_model}")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob!r}")
        self.size = d_model
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.dropout = nn.Dropout(dropout_prob)
        self.norm_self_attn = nn.LayerNorm([d_model])
        self.norm_ff = nn.LayerNorm([d_model])

    def forward(self, *, x: torch.Tensor, mem: Optional[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """`x` `[seq_len, batch, d_model]`, `mem` `[mem_len, batch, d_model]` or `None`, `mask` as in attention."""
        check_tensor("x", x, f"[seq_len, batch, {self.size}] (sequence first)", ndim=3, kind="float", sizes={2: self.size})
        z = self.norm_self_attn(x)
        if mem is not None:
            if mem.dim() != 3 or mem.shape[1:] != x.shape[1:]:
                raise ValueError(f"mem must be [mem_len, {x.shape[1]}, {x.shape[2]}], got {list(mem.shape)}")
            # $\tilde z = [\mathrm{LN}(\text{mem}) \circ \mathrm{LN}(x)]$, the keys and values
            m_z = torch.cat([self.norm_self_attn(mem), z], dim=0)  # (m + i, b, d_model)
        else:
            m_z = z
        # $x \leftarrow x + \mathrm{dropout}(\mathrm{Attn}(z, \tilde z))$
        x = x + self.dropout(self.self_attn(query=z, key=m_z, value=m_z, mask=mask))
        # $x \leftarrow x + \mathrm{dropout}(\mathrm{FFN}(\mathrm{LN}(x)))$
        x = x + self.dropout(self.feed_forward(self.norm_ff(x)))
        return x


class TransformerXL(nn.Module):
    """A stack of `n_layers` copies of a `TransformerXLLayer`, returning the output and the new memories."""

    def __init__(self, layer: TransformerXLLayer, n_layers: int):
        super().__init__()
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        # Independent copies: each layer gets its own parameters
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(n_layers)])
        self.norm = nn.LayerNorm([layer.size])

    def forward(self, x: torch.Tensor, mem: list[torch.Tensor], mask: torch.Tensor):
        """
        * `x` `[seq_len, batch, d_model]`
        * `mem` one `[mem_len, batch, d_model]` tensor per layer, or `[]` for no memory
        * `mask` bool `[seq_len, mem_len + seq_len, batch or 1]`

        Returns the output `[seq_len, batch, d_model]` and the new memories: each layer's input, detached.
        """
        d_model = self.norm.normalized_shape[0]
        check_tensor("x", x, f"[seq_len, batch, {d_model}] (sequence first)", ndim=3, kind="float", sizes={2: d_model})
        check_tensor("mask", mask, "[seq_len, mem_len + seq_len, batch or 1]", ndim=3, kind="bool",
                     hint="; causal_mask_with_memory(seq_len, mem_len) builds one")
        if mask.shape[0] != x.shape[0] and mask.shape[0] == x.shape[1]:
            # The mask's first axis is the sequence: `x` most likely came batch first.
            raise ValueError(f"x: expected sequence-first [seq_len, batch, {d_model}], got {list(x.shape)}, "
                             f"which looks batch-first (the mask is for {mask.shape[0]} tokens); pass x.transpose(0, 1)")
        mem = list(mem) if mem is not None else []
        if mem and len(mem) != len(self.layers):
            raise ValueError(f"mem must hold one tensor per layer ({len(self.layers)}) or be empty, got {len(mem)}")
        mem_len = mem[0].shape[0] if mem else 0
        if mask.dim() != 3 or mask.shape[:2] != (x.shape[0], mem_len + x.shape[0]):
            raise ValueError(f"mask must be [seq_len, mem_len + seq_len, batch or 1] = "
                             f"[{x.shape[0]}, {mem_len + x.shape[0]}, ...], got {list(mask.shape)}")
        new_mem = []
        for i, layer in enumerate(self.layers):
            # $h^{l-1}_\tau$ is what the next segment's layer $l$ will attend to: no gradient through it
            new_mem.append(x.detach())
            x = layer(x=x, mem=mem[i] if mem else None, mask=mask)
        return self.norm(x), new_mem
