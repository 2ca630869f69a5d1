r"""
# The output layer on the positions that are read

The output layer maps every final hidden state $h_t \in \mathbb{R}^D$ to logits over the vocabulary,
$z_t = h_t W^\top$ with $W \in \mathbb{R}^{V \times D}$: $D \cdot V$ multiply-adds per position, which
at $V = 32000$ and $D = 256$ is as much as ten layers of the stack ($12 D^2$ each).  Decoding reads few
of those positions: sampling and beam search the last one, speculative decoding the $k + 1$
positions of its guesses.  A head that works position by position commutes with taking positions,

$$\big(\operatorname{head}(h)\big)_{t} = \operatorname{head}(h_t), \qquad
z_{n-k+1 \dots n} = \operatorname{head}\big(h_{n-k+1 \dots n}\big),$$

so the network returns its final hidden states (`return_embeddings=True`), they are cut to the
last $k$ positions, and only those go through the head: a `(b, k, V)` tensor where the whole
pass would make a `(b, n, V)` one.  This is what `transformers`' `generate` does
(`logits_to_keep`).

The decoding paths (all but the last two through `last_logits`), and the positions their output
layer sees:

| path | positions fed | positions projected |
|---|---|---|
| `generate`, the prompt pass with a cache (eager or [compiled](compiled_decoding.md)) | $n$ | 1 |
| `generate` without a cache, Transformer-XL rolling, [contrastive](contrastive.md) (each step reruns the prefix) | $t$ | 1 |
| [beam search](beam_search.md): the prompt pass, and every step without a cache | $n$ or $t$ | 1 |
| [speculative decoding](speculative.md): the target's first pass over prompt and guesses | $n + k$ | $k + 1$ |
| speculative decoding: the draft's first pass, and its steps that feed two tokens | $n$ or 2 | 1 |
| the [Feedback Transformer](../feedback/feedback_transformer.md): the prompt pass, or each rerun with windows | $n$ or $t$ | 1 |
| [`XLAutoregressiveWrapper`](../families/xl_autoregressive.md): each rerun of the current segment | up to $L$ | 1 |

Where a pass only builds state (a Transformer-XL segment committed to the memories), no position
is projected.

**Where the whole pass stays.**  The head must be one the wrapper applies position by position
and that this module can name: a linear or tied output layer (`position_head`).  A custom
`to_logits` module, several output heads, a mixture of softmaxes, summary (CLS) tokens or pooling
keep the full pass, and so do keywords that ask for other outputs (`return_attn`,
`return_intermediates`, `to_logits_kwargs`, ...), since those read every position.  The prompt
segments of an `XLAutoregressiveWrapper` with test-time training keep their logits too: the fast
weights learn from every position.  The Feedback Transformer is not a `TransformerWrapper`:
`generate` asks it for its hidden states and projects the last one itself.

**Equality.**  The head's rows are the same numbers either way, but a product over one row may
take another kernel than one over $n$ rows (matrix-vector instead of matrix-matrix), so the logits
agree to rounding, and the tokens are the same except where two logits tie to rounding
(`tests/generation/test_head_positions.py` checks the tokens of every path, and counts the rows
the head sees).

**Measured** against the library before this change, in alternating runs (vocabulary 32000, a
96-token prompt, 8 new tokens, `dim=64, depth=2`, batch 1, one thread, CPU): generation without a
cache 3.2x as fast, beam search (4 beams) 1.3x with its cache and 7.0x without, speculative
decoding ($k = 4$) 1.2x, contrastive decoding 10x, the compiled path's prompt 1.3x, Transformer-XL
rolling 1.6x, the Feedback Transformer with windows of 4 1.65x; cached `generate`, which already
projected only its prompt's last position, is unchanged.

Shapes: `b` batch, `n` positions fed (`t` with the tokens generated so far), `k` positions kept,
`D` width, `V` vocabulary, `L` segment length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from torch import Tensor, nn


def position_head(net: nn.Module, kwargs: dict) -> Optional[Callable[[Tensor], Any]]:
    """The network's `logits` (final hidden states to logits) when they apply its output layer to
    each position on its own (a linear or tied head; no summary tokens, pooling or custom head) and
    the call's keywords ask for nothing else; else `None`."""
    logits = getattr(net, "logits", None)
    if not callable(logits) or getattr(net, "cls_token", True) is not None:
        return None
    if getattr(net, "mixture", None) is not None or getattr(net, "return_only_embed", True) \
            or getattr(net, "average_pool_embed", True) or getattr(net, "attn_pool", True) is not None:
        return None
    head = getattr(net, "to_logits", None)
    if not (type(head) is nn.Linear or (head is None and getattr(net, "tie_embedding", False))):
        return None
    # Keywords that ask for other outputs, or give the head arguments, keep the whole pass.
    if any(key.startswith("return_") or key in ("to_logits_kwargs", "looped_pred_all_logits") for key in kwargs):
        return None
    return logits


def last_logits(net: nn.Module, x: Tensor, keep: int = 1, **kwargs: Any) -> Tensor:
    """The logits `(b, keep, V)` of the last `keep` positions of `net(x, **kwargs)`, the output layer
    run on those positions alone where `position_head` allows it.

    A network with a `last_logits(x, keep, **kwargs)` method of its own (the contrastive scores of
    an expert and its amateurs) is asked through it.
    """
    own = getattr(net, "last_logits", None)
    if own is not None:
        return own(x, keep, **kwargs)
    # (A call that feeds no more positions than it keeps, e.g. a cached one-token step, has nothing to save.)
    fed = x.shape[1] + (0 if kwargs.get("prepend_embeds") is None else kwargs["prepend_embeds"].shape[1])
    head = position_head(net, kwargs) if fed > keep else None
    if head is None:
        return net(x, **kwargs)[:, -keep:]  # (b, keep, V), the head having seen every position
    # $h_{n-k+1 \dots n}$: the final hidden states of the positions read
    h = net(x, return_embeddings=True, **kwargs)[:, -keep:]  # (b, keep, D)
    return head(h)  # (b, keep, V)
