r"""
# Sliding-window attention

*Papers:* [Longformer: The Long-Document Transformer](https://arxiv.org/abs/2004.05150) (Beltagy et al., 2020),
[Mistral 7B](https://arxiv.org/abs/2310.06825) (Jiang et al., 2023)

Causal attention lets token $i$ see all $i + 1$ tokens up to itself, so its cost grows with the
length of the context.  A sliding window lets it see only the last $W + 1$ of them:

$$\text{query } i \text{ sees key } j \iff 0 \le i - j \le W.$$

Information still travels further than $W$: a layer's output at $i$ already summarises tokens down
to $i - W$, so after $L$ layers a token has been reached by tokens up to $L W$ positions back, like
the receptive field of a stack of convolutions.  Mistral 7B uses a window of 4096 tokens in each of
its 32 layers.  With a window the key/value cache only needs the last $W + 1$ entries: generation
keeps them in a [rolling cache](../generation/rolling_cache.md) of $W + 1$ slots per layer.

In the keyword API `attn_max_attend_past=W`, on a causal stack (`Decoder`).  The
[attention module](attention.md) intersects this band with the causal mask on the explicit and
fused paths; in a one-token cached step it simply attends over the last $W + 1$ cached keys.  Keys
before the window get no weight, as padded keys do, so a padded sequence, a cached generation and a
Transformer-XL memory all agree with one joint pass (tests check each).

Hugging Face's `sliding_window=S` (Mistral, Qwen2) counts the query itself: it is $W = S - 1$.

**In an encoder** (`Encoder(..., attn_max_attend_past=W)`) the window bounds the past only, as in
x-transformers: query $i$ sees the keys $j$ with $i - j \le W$, that is the $W$ keys before it,
itself, and *every* key after it.  (A symmetric Longformer band would also bound the future;
x-transformers' keyword does not.)  An encoder has no cache, so the rolling cache does not apply.

Shapes: `i`/`j` query/key positions.

## Differences from the papers

* Longformer's windows are symmetric (for encoders) and dilated in some heads, with global tokens;
  this is the causal, undilated window of Mistral, with no global tokens; in an encoder it bounds
  the past only (x-transformers' meaning).
"""

from __future__ import annotations

from torch import Tensor

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("max_attend_past", None, "sliding window: query i sees keys j with i - j <= W (and j <= i when causal)",
            type=int, example=16))


def window_mask(i_pos: Tensor, j_pos: Tensor, max_attend_past: int) -> Tensor:
    r"""True where key position $j$ lies in the window of query position $i$: $i - j \le W$.

    Combined with the causal mask ($j \le i$) it gives the band $0 \le i - j \le W$.

    >>> import torch
    >>> window_mask(torch.arange(4)[:, None], torch.arange(4)[None, :], 1).int().tolist()
    [[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]]
    """
    return i_pos - j_pos <= max_attend_past


def last_keys(k: Tensor, v: Tensor, key_mask, max_attend_past: int):
    r"""Keep the last $W + 1$ keys and values `(b, g, j, d)` (and key mask `(b, j)`): a step's window.

    >>> import torch
    >>> k = torch.arange(5.0).view(1, 1, 5, 1)
    >>> last_keys(k, k, None, 2)[0].flatten().tolist()
    [2.0, 3.0, 4.0]
    """
    keep = max_attend_past + 1
    if k.shape[-2] <= keep:
        return k, v, key_mask
    return k[..., -keep:, :], v[..., -keep:, :], None if key_mask is None else key_mask[:, -keep:]
