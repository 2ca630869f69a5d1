r"""
# Persistent memory: learned key/value slots

*Paper:* [Augmenting Self-attention with Persistent Memory](https://arxiv.org/abs/1907.01470) (Sukhbaatar et al., 2019)

A feed-forward layer $\operatorname{ReLU}(x U) V$ can be read as attention over a fixed set of
learned keys (the columns of $U$) and values (the rows of $V$), with a ReLU in place of the softmax.
Persistent memory makes that explicit: every attention layer gets $N$ learned key/value pairs per
head, prepended to the keys and values computed from the tokens,

$$K' = [M_K; K], \qquad V' = [M_V; V], \qquad
o_i = \operatorname{softmax}\!\left(\frac{q_i K'^\top}{\sqrt d}\right) V'.$$

The slots carry knowledge that does not depend on the input, and every query can fall back on them.
The paper merges the feed-forward sublayer into attention this way (its "all-attention" layer);
x-transformers keeps the feed-forward layers and its README reports that the memory key/values still help.

## Visibility

The memory slots are always visible: no padding mask and no causal mask applies to them, in
encoders, decoders and cross-attention alike.  A query whose every real key is masked still
attends to the memory (a test checks this against the closed form $o_i = \operatorname{softmax}(q_i
M_K^\top/\sqrt d) M_V$).  In a decoder the slots sit before the first position and are the same for
every sequence, so they cannot leak the future.

The attention module takes the slots from its `memory_kv` extension point after the projections,
after any cache update and after the key transform: with qk-norm the memory keys are normalised
too, and with collaborative heads they have the shared key width $\tilde D$.  Position biases (T5,
ALiBi) get zero columns for the slots: they have no position.  The scores are untouched, so the
fused kernel stays in use.

A worked example: one head with $N = 2$ slots and a query whose only real key is masked (the
first token of a padded row, say).  If $q M_K^\top / \sqrt d = (1, 0)$, the query still gets an
output, $0.73\, M_{V,1} + 0.27\, M_{V,2}$, instead of nothing: a learned default answer.

It plugs into the `memory_kv` point of [attention](../attention/attention.md) ([extension points](../attention/extension_points.md)).  Tests: `tests/memory/test_persistent_memory.py` and `test_memory_key_values_attended_when_every_real_key_is_masked` in `tests/attention/test_attn_properties.py`.

Shapes: `b` batch, `h` heads, `N` slots, `d` head dim (`d_k` for keys when it differs).

## Differences from the paper

* The paper replaces the feed-forward sublayers by the memory and uses the relative positions and
  adaptive attention span of its authors' earlier work; here the slots are added to an otherwise
  unchanged layer, with whatever position scheme the stack uses.
* The slots are plain learned vectors drawn from a standard normal, one set per head and per layer,
  shared by every sequence of the batch.
"""

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("num_mem_kv", 0, "learned key/value slots that every query can attend to", example=4))


class PersistentMemory(nn.Module):
    r"""`num_mem` learned key/value pairs per head, shared by every sequence of the batch.

    Args:
        heads: number of heads $h$.
        dim_key: width of the keys, the head dim $d$ (or $\tilde D$ with collaborative heads).
        dim_value: width of the values $d$.
        num_mem: number of slots $N$.
    """

    def __init__(self, heads: int, dim_key: int, dim_value: int, num_mem: int):
        super().__init__()
        self.keys = nn.Parameter(torch.randn(heads, num_mem, dim_key))  # $M_K$, (h, N, d_k)
        self.values = nn.Parameter(torch.randn(heads, num_mem, dim_value))  # $M_V$, (h, N, d)

    def forward(self, batch: int) -> tuple[Tensor, Tensor]:
        """The slots for a batch of `batch` sequences: keys `(b, h, N, d_k)`, values `(b, h, N, d)`."""
        # `expand` is a view: the batch shares one copy of the slots
        def expand(t: Tensor) -> Tensor:
            return t[None].expand(batch, -1, -1, -1)

        return expand(self.keys), expand(self.values)  # (b, h, N, d)
