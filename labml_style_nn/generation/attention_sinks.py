r"""
# Attention sinks: streaming past the training length

*Paper:* [Efficient Streaming Language Models with Attention Sinks](https://arxiv.org/abs/2309.17453) (Xiao et al., 2023)

A model trained with full attention on sequences of $L$ tokens cannot simply keep generating: its
cache grows without bound, and its positions leave the range it was trained on.  The obvious fix,
keeping only the last $C$ keys (window eviction), fails as soon as the first token is evicted:
perplexity explodes.  The paper's explanation is that softmax must put its weight *somewhere*, and
trained models park the weight they do not need on the first few tokens, which every later token
has seen.  These **attention sinks** carry almost no information, but removing them shifts a large
part of the attention mass onto other keys.

So the cache keeps the first $k$ tokens (the sinks, $k = 4$ in the paper) forever and the most
recent $C - k$ ones in a [rolling buffer](rolling_cache.md).  Positions are assigned **within the
cache**, not in the original text: with $c$ tokens evicted, the cached keys sit at $0 \dots C - 1$
(sinks first, then the recent tokens in order) and the newest query at $C - 1$.  So the model never
sees a distance larger than $C - 1 < L$.

Rotary embeddings only see differences of positions, so the cache does not rotate every key at
every step as the paper's code does.  Shifting all positions by $c$ changes nothing; with that
shift the recent tokens are exactly at their true positions (where they were rotated when computed),
and only the sinks move: sink $j$ sits at $c + j$ instead of $j$.  As $R_{c+j} = R_c R_j$, a stored
sink key $R_j k$ is brought there by one more rotation,

$$\tilde k_j = R_c\,(R_j k_j), \qquad c = \max(0,\; t + 1 - C),$$

which costs $k$ rotations per layer and step instead of $C$.  Bias schemes (ALiBi, T5) get the same
positions from the layout.

Shapes: `b` batch, `g` key/value heads, `k` sinks, `C` cached tokens, `d` head dim.

## Differences from the paper

* The paper stores keys before rotation and rotates the whole cache at each step with positions
  $0 \dots C - 1$; we store rotated keys and re-rotate only the sinks, which is the same up to a
  common shift of all positions (rotary and relative biases cannot see it; tests check the scores
  against the paper's positions).
* A multi-token step (the prompt) attends to what the cache holds and causally within itself, at
  positions continuing the cache's; token-by-token steps follow the paper's rule exactly.
* The paper also pre-trains with a dedicated learnable sink token; that is not done here (the
  experiment begins every training window with a fixed start byte instead).

## Evidence

* `tests/generation/test_attention_sinks.py`: with one layer (where a cached key depends on its
  token alone) every streaming step equals a plain pass over [sinks, recent tokens, new token],
  which puts them at positions $0 \dots C - 1$, for rotary (full, and partial with YaRN), ALiBi, T5
  and grouped-query heads with qk-norm; the cache positions are checked against the paper's rule
  step by step; leaving the sinks unrotated, or evicting them, gives other outputs.
* [`experiments/long_context.py`](../../experiments/long_context.md): a character model trained on
  64 bytes streams 2,048 with 64 cached keys per layer at 2.135 bpc past the training length,
  within 0.002 of recomputing a 64-byte window for every byte, where keeping every key blows up to
  6.4 bpc.  Plain window eviction stays flat too at this scale (2.146): this small model forms no
  sink (its deeper layers give the first token 0.002 of their attention, less than uniform
  attention's 0.021), so losing its first tokens costs little (see the
  [results](../../docs/results.md#long-context-attention-sinks-rope-scaling-the-rolling-cache)).
* The same experiment on a model that does form a sink: one rotary layer trained on the
  Bigram-Backcopy task of [Guo et al. (2024)](https://arxiv.org/abs/2410.13835) (bigram tokens,
  except that after a trigger token the next one repeats the token before it), whose copying head
  gives the start token 0.227 of its attention where it has nothing to copy (0.000 on triggers;
  uniform attention: 0.021).  Streaming 2,048 tokens with 64 cached keys, the sink cache stays
  0.030 bits per token above the task's exact entropy floor past the training length, equal to
  recomputing a 64-token window for every token, while window eviction rises to 0.212 as soon as
  the start token leaves the cache.  The extra loss is all after ordinary tokens, where the head
  should be dormant (0.259 there against the sinks' 0.029; after triggers both give 0.036).  A
  degradation, not the explosion of LLMs: the same head keeps most of the rest of its weight
  (0.703) on its own token, a second harmless place in a one-layer model, so only the start
  token's share is displaced.

![bits per byte by position while streaming 2,048 bytes](../../docs/results/long_context_streaming.png)

![bits per token above the floor while streaming the Bigram-Backcopy model](../../docs/results/long_context_backcopy_streaming.png)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..positional.rotary import apply_rotary
from .rolling_cache import RollingAttentionCache, RollingLayersCache, RollingLayout


def _check_sizes(sinks, cache_len) -> None:
    if isinstance(sinks, bool) or not isinstance(sinks, int) or sinks < 0:
        raise ValueError(f"sinks: expected an integer >= 0, got {sinks!r}")
    if isinstance(cache_len, bool) or not isinstance(cache_len, int) or cache_len <= sinks + 1:
        raise ValueError(f"cache_len: expected an integer larger than sinks + 1 ({sinks + 1}), got {cache_len!r}")


class SinkLayout(RollingLayout):
    """A rolling layout whose pinned tokens are the sinks, with the rotation that moves them."""

    # $(\cos, \sin)$ of $c\,\theta$ `(2, 1, r)` for the current step, set by the stack's cache.
    rotation: Optional[Tensor] = None

    def cache_positions(self) -> Tensor:
        r"""The paper's positions of the keys a one-token step sees, in slot order: $0 \dots C - 1$.

        The newest key (the query's own) is the largest.

        >>> lay = SinkLayout(window=3, pinned=2); lay.seen = 9   # tokens 0, 1 kept; 7, 8, 9 recent
        >>> lay.cache_positions().tolist()    # slots: the sinks, then tokens 8, 9, 7 (rolled)
        [0, 1, 3, 4, 2]
        """
        return self.slot_positions(1) - self.shift()


class SinkAttentionCache(RollingAttentionCache):
    """A rolling cache whose first slots hold the sink keys, re-rotated to follow the window."""

    layout: SinkLayout

    def __init__(self, layout: SinkLayout):
        super().__init__(layout)
        self.sink_k: Optional[Tensor] = None  # the sinks as computed, rotated by their own positions $j$
        self._shift = 0  # the shift $c$ the sink slots are rotated to

    def written(self, positions, k: Tensor) -> None:
        lay, t0 = self.layout, self.layout.seen
        for p in positions:
            if p < lay.pinned:
                if self.sink_k is None:
                    self.sink_k = k.new_zeros(*k.shape[:2], lay.pinned, k.shape[-1])  # (b, g, k, d)
                self.sink_k[:, :, p] = k[:, :, p - t0]

    def refresh_pinned(self) -> None:
        lay = self.layout
        c = lay.shift()
        if c == self._shift or lay.rotation is None or self.sink_k is None or self.k is None:
            return
        # $\tilde k_j = R_c (R_j k_j)$: sink $j$ moves to position $c + j$, next to the oldest recent key
        self.k[:, :, :lay.pinned] = apply_rotary(self.sink_k, lay.rotation)
        self._shift = c


class AttentionSinksCache(RollingLayersCache):
    r"""The StreamingLLM cache of a stack: `sinks` first tokens plus the most recent, `cache_len` in all.

    Args:
        layers: the `AttentionLayers` stack (full attention, relative positions).
        batch: number of sequences.
        sinks: first tokens kept forever ($k$; the paper uses 4).
        cache_len: tokens cached per layer, sinks included ($C$; keep it at most the training length).
    """

    attention_cache = SinkAttentionCache
    layout_class = SinkLayout
    layout: SinkLayout

    def __init__(self, layers, batch: int, sinks: int = 4, cache_len: int = 256):
        _check_sizes(sinks, cache_len)
        if layers.options.attn.max_attend_past is not None:
            raise ValueError("layers: attention sinks are for full-attention models; a sliding-window stack "
                             "(attn_max_attend_past) uses RollingLayersCache.for_window")
        if layers.options.attn.use_latent_kv:
            raise ValueError("layers: attention sinks re-rotate cached keys, and attn_use_latent_kv caches "
                             "latents instead (latent attention); use the growing or rolling cache")
        super().__init__(layers, batch, window=cache_len - sinks, pinned=sinks)

    def shared_inputs(self, layers, n: int, device):
        # The rotation by $c$ that takes the stored sinks to this step's positions (a pure
        # rotation: YaRN's temperature is already in the stored keys).
        if layers.rotary is not None:
            shift = torch.tensor([self.layout.shift()], device=device)
            self.layout.rotation = layers.rotary.angles(shift, magnitude=False)  # (2, 1, r)
        return super().shared_inputs(layers, n, device)


def sink_cache(sinks: int = 4, cache_len: int = 256):
    """A cache factory for `generate(..., cache_kv=sink_cache(4, 256))`: streams past `max_seq_len`."""
    _check_sizes(sinks, cache_len)

    def make(layers, batch: int) -> AttentionSinksCache:
        return AttentionSinksCache(layers, batch, sinks=sinks, cache_len=cache_len)
    return make
