r"""
# Transformer-XL recurrence and enhanced recurrence

*Paper:* [Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context](https://arxiv.org/abs/1901.02860) (Dai et al., 2019); [ERNIE-Doc: A Retrospective Long-Document Modeling Transformer](https://arxiv.org/abs/2012.15688) (Ding et al., 2021)

A transformer trained on fixed-length segments cannot look past its segment.  Transformer-XL keeps,
for every layer, the hidden states that layer saw on the previous segment, and lets the next segment
attend to them as extra keys and values:

$$\tilde h^{(l-1)}_{\tau+1} = \big[\operatorname{sg}(h^{(l-1)}_\tau);\ h^{(l-1)}_{\tau+1}\big], \qquad
k, v = \tilde h^{(l-1)}_{\tau+1} W_{K,V}, \qquad q = h^{(l-1)}_{\tau+1} W_Q$$

$\operatorname{sg}$ stops gradients: the memory is a constant.  The effective context then grows
with depth, segment after segment.

In `TransformerWrapper(max_mem_len=M)`:

* the memory of a self-attention layer is its **input**, the residual stream as the layer reads it,
  detached and truncated to the last $M$ positions, one tensor per self-attention layer; under
  pre-norm it is kept *before* the norm, and the layer normalises memory and tokens alike when it
  reads them (so $\tilde h$ above is $\operatorname{Norm}([\operatorname{sg}(h_\tau);\ h_{\tau+1}])$,
  as x-transformers keeps it: its `hiddens` are the same tensors).  With the input reinjected
  (`reinject_input`) or the earlier layers mixed in (`attn_aggregated_residuals`), the memory is the
  stream *as the keys read it*, injection or mix included, so that a segment with memory still equals one
  pass over both; x-transformers' memories leave them out (its `hiddens` do here too);
* positions continue across the boundary: the current tokens start at position $m$, the length of
  the memory.  This needs a relative scheme (`rel_pos_bias`, `rotary_pos_emb`, `alibi_pos_emb`); an
  absolute embedding would give memory and segment the same positions, so that combination is
  refused when memories are passed.

The invariant that makes this correct, and that the tests check: with dropout off and $M$ at least
the first segment's length, segment 2 run with the memories of segment 1 gives the same outputs
as one pass over both segments.

**Enhanced recurrence** (ERNIE-Doc, `shift_mem_down=k`): route the memory of layer $l$ to layer
$l - k$ on the next step, so lower layers see higher-level summaries of the past and the effective
context grows faster.  The $k$ lowest memories wrap around to the top $k$ layers.
Layer $l$'s new memory is what it attended to: the memory routed to it, followed by its own
inputs, $[\operatorname{sg}(m^{(l+k)}_\tau);\ h^{(l-1)}_{\tau+1}]$, truncated to $M$.

Tests: `tests/memory/test_xl_recurrence.py` (a segment with memory equals one pass over both, with each relative scheme and with other features; enhanced recurrence equals a manual reordering).  The paper's own model is on the [Transformer-XL](../transformer_xl/transformer_xl.md) page.

Shapes: `b` batch, `n` tokens, `m` memory length, `D` model width.

## Differences from the papers

Transformer-XL introduces its own relative attention for positions; in the keyword API any of the
relative schemes above plays that role.  The paper's relative attention is implemented separately,
in `transformer_xl/`.

## Evidence

* Measured: on segments of 16 bytes with a memory of 64, memory lowers validation bpc with ALiBi
  (3.000 against 3.062) and with the paper's own relative attention (`transformer_xl/`, 2.609 against
  2.837); with the T5 bias the memory makes it 0.38 bpc *worse* (3.340 against 2.965), because its
  attention has not learned to prefer recent keys at 1,500 steps ([results](../../docs/results.md#transformer-xl-recurrence)).
* Invariant: a segment run with the previous segment as memory gives exactly the logits of one pass
  over both, `test_segment_with_memory_equals_full_pass` in `tests/memory/test_xl_recurrence.py`.
"""

from typing import Optional

import torch
from torch import Tensor


def update_memories(mems: Optional[list[Tensor]], hiddens: list[Tensor], max_len: int,
                    detach: bool = True) -> list[Tensor]:
    r"""New memories: $[\operatorname{sg}(\text{old});\ \text{hiddens}]$, last `max_len` positions.

    `detach=False` keeps the graph, so that a loss on a later segment trains this one (truncated
    backpropagation through time over several segments, as the
    [XL autoregressive wrapper](../families/xl_autoregressive.md)'s `tbptt_steps` does)."""
    if mems is not None:
        hiddens = [torch.cat((m, h), dim=1) for m, h in zip(mems, hiddens, strict=True)]
    return [h[:, -max_len:].detach() if detach else h[:, -max_len:] for h in hiddens]  # (b, <= M, D) per layer


def shift_memories_down(mems: list[Tensor], k: int) -> list[Tensor]:
    """Give layer $l$ the memory of layer $l + k$ (enhanced recurrence); the lowest wrap to the top.

    >>> shift_memories_down(['m0', 'm1', 'm2'], 1)
    ['m1', 'm2', 'm0']
    """
    k = k % len(mems) if mems else 0
    return list(mems[k:]) + list(mems[:k])
