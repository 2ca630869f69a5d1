r"""
# Grouped-query and multi-query attention

*Papers:* [Fast Transformer Decoding: One Write-Head is All You Need](https://arxiv.org/abs/1911.02150) (Shazeer, 2019),
[GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints](https://arxiv.org/abs/2305.13245) (Ainslie et al., 2023)

When a decoder generates token by token, each step reads the cached keys and values of every earlier
token, in every layer and every head.  At batch size one that memory traffic, not arithmetic, sets
the speed, and the cache's size sets how long a context fits.  **Multi-query attention** keeps the
$h$ query heads but gives them a single key head and a single value head to share: the cache
shrinks $h$-fold.  **Grouped-query attention** interpolates: $g$ key/value heads, each shared by a
group of $h / g$ query heads,

$$o^{(i)} = \operatorname{softmax}\left(\frac{q^{(i)} {k^{(\lfloor i / r \rfloor)}}^\top}{\sqrt d}\right)
v^{(\lfloor i / r \rfloor)}, \qquad r = h / g,$$

so query head $i$ reads key/value head $\lfloor i / r \rfloor$.  $g = h$ is ordinary multi-head
attention, $g = 1$ multi-query.  Ainslie et al. find that $g = 8$ keeps nearly all of the quality of
multi-head attention at close to the speed of multi-query; LLaMA 2 70B, Mistral and Qwen2 use it.

In the keyword API, `attn_kv_heads=g` (it must divide `heads`) or `attn_one_kv_head=True` ($g = 1$).
The [attention module](attention.md) projects $h$ query heads and $g$ key and value heads, rotates
and caches only the $g$ key heads, and shares them at the last moment:

* the fused kernel takes the $g$ heads as they are (`enable_gqa`);
* the explicit path repeats each key/value head $r$ times (`repeat_kv`), so that score transforms
  and biases still see one score matrix per query head;
* a one-token cached step regroups instead: the $r$ query heads of a group become $r$ queries of
  one head (`group_queries`), one matrix multiply per key/value head and no copy of the cache.

Shapes: `b` batch, `h` query heads, `g` key/value heads, `r = h / g`, `n` tokens, `j` keys,
`d` head dim.

## Differences from the papers

* Ainslie et al. convert multi-head checkpoints by mean-pooling the key and value heads of each
  group, then train a little more ("uptraining"); here the grouped model is trained (or loaded) as
  it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "attn",
    Keyword("kv_heads", None, "grouped-query attention: key/value heads (must divide heads)", type=int, example=2),
    Keyword("one_kv_head", False, "multi-query attention: one key/value head shared by all heads"))

# `scaled_dot_product_attention(..., enable_gqa=True)` shares key/value heads itself (PyTorch 2.5).
FUSED_GQA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)


def split_heads(qkv: Tensor, heads: int, kv_heads: int, dim_head: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""Split one fused projection `(b, n, (h + 2g) d)` into $q$ `(b, h, n, d)` and $k, v$ `(b, g, n, d)`.

    >>> q, k, v = split_heads(torch.zeros(2, 5, (4 + 2 * 2) * 3), heads=4, kv_heads=2, dim_head=3)
    >>> q.shape, k.shape, v.shape
    (torch.Size([2, 4, 5, 3]), torch.Size([2, 2, 5, 3]), torch.Size([2, 2, 5, 3]))
    """
    b, n = qkv.shape[:2]
    # One `split` (not three slices) before the transpose: its backward concatenates the three
    # gradients into the `(b, n, (h + 2g) d)` layout in one pass, where slices would each fill a
    # zero tensor of the full size, then add the three and copy the sum back to that layout
    # (1.7 ms of a 7 ms attention block's forward and backward at nanoGPT's CPU size).
    q, k, v = qkv.view(b, n, heads + 2 * kv_heads, dim_head).split((heads, kv_heads, kv_heads), dim=2)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, h, n, d), (b, g, n, d) twice


def repeat_kv(t: Tensor, groups: int) -> Tensor:
    r"""Repeat each of $g$ key/value heads `(b, g, j, d)` $r$ = `groups` times: `(b, g r, j, d)`.

    Head $i$ of the result is head $\lfloor i / r \rfloor$ of the input.

    >>> repeat_kv(torch.tensor([[[[1.0]], [[2.0]]]]), 2).flatten().tolist()
    [1.0, 1.0, 2.0, 2.0]
    """
    if groups == 1:
        return t
    b, g, j, d = t.shape
    return t[:, :, None].expand(b, g, groups, j, d).reshape(b, g * groups, j, d)


def group_queries(q: Tensor, kv_heads: int) -> Tensor:
    r"""One query token `(b, h, 1, d)` as $r$ queries of each key/value head: `(b, g, r, d)`.

    >>> group_queries(torch.arange(4.0).view(1, 4, 1, 1), 2).flatten(2).tolist()   # heads 0,1 | 2,3
    [[[0.0, 1.0], [2.0, 3.0]]]
    """
    b, h, _, d = q.shape
    return q.reshape(b, kv_heads, h // kv_heads, d)


def fused_attention(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    r"""`F.scaled_dot_product_attention` with $g \le h$ key/value heads; `kwargs` go to the kernel."""
    groups = q.shape[1] // k.shape[1]
    if groups == 1:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    if FUSED_GQA:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
    return F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), **kwargs)
