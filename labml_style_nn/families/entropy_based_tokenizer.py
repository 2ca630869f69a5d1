r"""
# Entropy-based tokenization (BLT's entropy patching)

*Paper:* [Byte Latent Transformer: Patches Scale Better Than Tokens](https://arxiv.org/abs/2412.09871)
(Pagnoni et al., 2024), §2.3

A byte-level model spends the same compute on every byte, though most bytes are easy to predict
(the rest of a word) and a few are hard (the first byte of the next word).  BLT groups bytes into
*patches* of variable length, cut where a small byte-level language model is unsure: with the
entropy of its next-byte distribution at position $t$,

$$H(x_t) = -\sum_{v} p(v \mid x_{\le t}) \log p(v \mid x_{\le t}),$$

a patch ends at $t$ when $H(x_t) \ge \theta$ (the global threshold), so the next byte starts a new
patch.  A larger model then runs over the patches instead of the bytes.

Two variants from x-transformers: `accumulate_entropy=True` ends a patch once the entropies summed
since its start reach $\theta$ (entropies below `ignore_entropy_below` count as 0), and
`max_token_size` splits patches longer than that.  The last position (or `lens - 1`) always ends
a patch.

```python
tokenizer = EntropyBasedTokenizer(decoder, entropy_threshold=2.5)
lengths = tokenizer(byte_ids)                              # (b, patches): lengths, 0-padded
patches = tokenizer(byte_ids, return_segmented_seq=True)   # per row, the tuple of patches
```

**Differences from the paper.**  BLT also has an "approximate monotonicity" criterion
$H(x_t) - H(x_{t-1}) > \theta_r$; as in x-transformers, only the global threshold is here.  The
accumulated variant is computed with a plain loop per row (x-transformers uses pointer jumping);
the patches are the same.

Shapes: `b` batch, `n` bytes.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence


def entropy_from_logits(logits: Tensor) -> Tensor:
    r"""$-\sum_v p_v \log p_v$ over the last axis.

    >>> round(entropy_from_logits(torch.zeros(4)).item(), 4)   # uniform over 4: log 4
    1.3863
    """
    log_p = logits.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def accumulated_boundaries(entropies: Tensor, threshold: float, ignore_below: float = 0.0) -> Tensor:
    """`(b, n)` bool: a patch ends at `t` once the entropies since its start sum to `threshold`.

    >>> accumulated_boundaries(torch.tensor([[1., 1., 1., 3., 0.5]]), 2.).int().tolist()
    [[0, 1, 0, 1, 0]]
    """
    entropies = entropies.masked_fill(entropies < ignore_below, 0.0) if ignore_below > 0 else entropies
    out = torch.zeros_like(entropies, dtype=torch.bool)
    for row, values in enumerate(entropies.tolist()):
        total = 0.0
        for t, h in enumerate(values):
            total += h
            if total >= threshold:  # $\sum_{t' = s}^{t} H(x_{t'}) \ge \theta$: the patch ends here
                out[row, t], total = True, 0.0
    return out


class EntropyBasedTokenizer(nn.Module):
    """Cut sequences into patches where a small decoder's next-token entropy is high."""

    def __init__(self, decoder: nn.Module, entropy_threshold: float, accumulate_entropy: bool = False,
                 ignore_entropy_below: float = 0.0, max_token_size: Optional[int] = None):
        super().__init__()
        if ignore_entropy_below > entropy_threshold:
            raise ValueError("ignore_entropy_below: must not exceed entropy_threshold")
        self.decoder, self.entropy_threshold = decoder, entropy_threshold
        self.accumulate_entropy, self.ignore_entropy_below = accumulate_entropy, ignore_entropy_below
        self.max_token_size = max_token_size

    @torch.no_grad()
    def forward(self, seq: Tensor, lens: Optional[Tensor] = None, return_segmented_seq: bool = False,
                decoder_forward_kwargs: Optional[dict] = None):
        """Patch lengths `(b, patches)` (0-padded) of `seq` `(b, n)` or `(n,)`; or the patches themselves."""
        no_batch = seq.dim() == 1
        seq = seq[None] if no_batch else seq
        b, n = seq.shape
        self.decoder.eval()
        entropies = entropy_from_logits(self.decoder(seq, **(decoder_forward_kwargs or {})))  # (b, n)
        if self.accumulate_entropy:
            ends = accumulated_boundaries(entropies, self.entropy_threshold, self.ignore_entropy_below)
        else:
            # $H(x_t) \ge \theta$: the next byte starts a new patch
            ends = entropies >= self.entropy_threshold
        lengths_of = torch.full((b,), n, device=seq.device) if lens is None else lens.to(seq.device)
        real = torch.arange(n, device=seq.device)[None] < lengths_of[:, None]  # (b, n)
        ends = ends & real
        ends[torch.arange(b, device=seq.device), lengths_of - 1] = True  # the last real position ends a patch
        patches = []
        for row in range(b):
            stops = (ends[row].nonzero().flatten() + 1).tolist()
            sizes, start = [], 0
            for stop in stops:
                size = stop - start
                if self.max_token_size is not None:
                    # Split a long patch into pieces of at most `max_token_size`.
                    sizes += [self.max_token_size] * (size // self.max_token_size)
                    size %= self.max_token_size
                if size:
                    sizes.append(size)
                start = stop
            patches.append(torch.tensor(sizes, device=seq.device))
        lengths = pad_sequence(patches, batch_first=True)  # (b, patches)
        if not return_segmented_seq:
            return lengths[0] if no_batch else lengths
        segmented = [tuple(seq[row, :int(lengths_of[row])].split(patches[row].tolist())) for row in range(b)]
        return segmented[0] if no_batch else segmented
