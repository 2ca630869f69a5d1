r"""
# Memory tokens

*Paper:* [Memory Transformer](https://arxiv.org/abs/2006.11527) (Burtsev & Sapunov, 2020)

Memory tokens are learned vectors, like a `[CLS]` token but several of them, prepended to the input
sequence and passed through every layer with it:

$$H^{(0)} = [\,M;\ E(x)\,], \qquad H^{(l)} = \operatorname{Layer}_l\big(H^{(l-1)}\big), \qquad
y = H^{(L)}_{M+1 \dots M+n}.$$

They give the model scratch space: a place to gather and redistribute global information that no
real token has to hold.  Unlike persistent memory (`persistent_memory.py`), whose slots are fixed
keys and values, memory tokens are *updated* by every layer: layer $l$'s memory depends on the input.
At the output they are stripped, so the caller sees exactly one vector per input token.

## Visibility

* In an **encoder** memory tokens see and are seen by every real token; padding masks still hold
  for the real tokens (the mask is extended with `True` for the memory, which is never padding).
* In a **decoder** they sit before the first token, so the causal mask lets every token read them
  while they see only each other: their states never depend on any real token, and they cannot
  leak the future.  The tests check both by the gradient of each output with respect to each input.
* In generation with a key/value cache they are prepended once, at the first step; later steps
  find their keys and values in the cache.
* With Transformer-XL memories (`max_mem_len`) every segment gets the memory tokens afresh, placed
  between the XL memory and the segment, and the stored XL memory holds real tokens only.  The
  memory tokens are then per-segment scratch space, and the equivalence of
  `memory/xl_recurrence.py` (segment with memory = one pass over both segments) does not hold.

Memory tokens are prepended after the absolute position embedding is added to the real tokens, so
they have no absolute position of their own; relative schemes (rotary, ALiBi, T5) count them as the
first $M$ positions.

Tests: `tests/memory/test_memory_tokens.py` (visibility in encoders and decoders by gradients, padding changes nothing, cached generation equals uncached).  Compare [persistent memory](persistent_memory.md) and the [Transformer-XL recurrence](xl_recurrence.md).

Shapes: `b` batch, `n` tokens, `M` memory tokens, `D` model width.

## Differences from the paper

* The paper also studies a memory *bottleneck* (real tokens attend only to memory) and a dedicated
  memory-update layer; here memory tokens are simply part of the sequence, the paper's plain
  "MemTransformer" variant, as in x-transformers.
* The paper evaluates translation and language-understanding models; here the tokens work in any
  stack of the wrappers, decoders included, with the visibility above.
* The tokens are initialised from $\mathcal{N}(0, 0.02^2)$, the scale of the token embeddings.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MemoryTokens(nn.Module):
    r"""`num` learned tokens prepended to every sequence, and stripped again at the output.

    Args:
        num: number of memory tokens $M$.
        dim: model width $D$.
    """

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.num = num
        self.tokens = nn.Parameter(torch.randn(num, dim) * 0.02)  # $M$, (M, D)

    def prepend(self, x: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """`[M; x]` `(b, M + n, D)` for `x` `(b, n, D)`, and the mask `(b, M + n)` extended to match.

        Two memory tokens before four tokens, the last of them padding: the layers see six
        positions, the memory never masked.

        >>> tokens = MemoryTokens(2, 3)
        >>> x, mask = tokens.prepend(torch.zeros(1, 4, 3), torch.tensor([[True, True, True, False]]))
        >>> x.shape, mask.tolist(), tokens.strip(x).shape
        (torch.Size([1, 6, 3]), [[True, True, True, True, True, False]], torch.Size([1, 4, 3]))
        """
        mem = self.tokens[None].expand(x.shape[0], -1, -1).to(x.dtype)  # (b, M, D)
        # $H^{(0)} = [M; E(x)]$
        x = torch.cat((mem, x), dim=1)  # (b, M + n, D)
        if mask is not None:
            # Memory tokens are real tokens for every key mask.
            mask = F.pad(mask, (self.num, 0), value=True)  # (b, M + n)
        return x, mask

    def strip(self, x: Tensor) -> Tensor:
        """Drop the memory positions: `(b, M + n, D)` to `(b, n, D)`."""
        # $y = H^{(L)}_{M+1 \dots M+n}$
        return x[:, self.num:]  # (b, n, D)
