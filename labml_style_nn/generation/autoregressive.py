r"""
# Autoregressive training and generation

A causal language model predicts each token from the ones before it.  Training is one forward pass:
feed $x_{1..n-1}$ and score the predictions against $x_{2..n}$,

$$\mathcal{L} = -\frac{1}{|T|} \sum_{t \in T} \log p_\theta(x_{t+1} \mid x_{\le t}),$$

where $T$ are the positions whose target is neither padding (`mask`) nor `ignore_index`.

Generation repeats: run the model on the prefix, turn the last position's logits into a
distribution (temperature, then a filter from `generation/sampling.py`), sample a token, append it.
With `cache_kv=True` (the default) each step after the first feeds only the new token and reuses
the keys and values of everything before it from a preallocated cache
(`generation/kv_cache.py`).

Shapes: `b` batch, `n` tokens, `V` vocabulary.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn, Tensor

from .kv_cache import LayersCache
from .sampling import top_k


class AutoregressiveWrapper(nn.Module):
    """Next-token loss and sampling around a causal `TransformerWrapper`."""

    def __init__(self, net: nn.Module, ignore_index: int = -100, pad_value: int = 0):
        super().__init__()
        self.net, self.ignore_index, self.pad_value = net, ignore_index, pad_value
        self.max_seq_len = net.max_seq_len

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, **kwargs) -> Tensor:
        """The mean next-token cross-entropy of `x` `(b, n)`."""
        inp, target = x[:, :-1], x[:, 1:]
        if mask is not None:
            # A padded target is not predicted.
            target = target.masked_fill(~mask[:, 1:], self.ignore_index)
            mask = mask[:, :-1]
        logits = self.net(inp, mask=mask, **kwargs)  # (b, n - 1, V)
        return F.cross_entropy(logits.transpose(1, 2), target, ignore_index=self.ignore_index)

    @torch.no_grad()
    def generate(self, prompts: Tensor, seq_len: int, temperature: float = 1.0,
                 filter_logits_fn: Callable = top_k, filter_kwargs: Optional[dict] = None,
                 eos_token: Optional[int] = None, cache_kv: bool = True, **kwargs) -> Tensor:
        """Sample `seq_len` tokens after `prompts` `(b, n)`; returns only the new tokens `(b, seq_len)`."""
        was_training = self.net.training
        self.net.eval()
        b, n = prompts.shape
        out = prompts
        cache = LayersCache(self.net.attn_layers, b, n + seq_len + self._num_memory_tokens()) if cache_kv else None
        ended = torch.zeros(b, dtype=torch.bool, device=prompts.device)
        step_input = prompts
        for _ in range(seq_len):
            logits = self.net(step_input if cache_kv else out, cache=cache, **kwargs)[:, -1]  # (b, V)
            if temperature == 0:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                filtered = filter_logits_fn(logits / temperature, **(filter_kwargs or {}))
                token = torch.multinomial(filtered.softmax(dim=-1), 1)
            if eos_token is not None:
                token = token.masked_fill(ended[:, None], self.pad_value)
                ended |= token[:, 0] == eos_token
            out = torch.cat((out, token), dim=-1)
            step_input = token
            if eos_token is not None and ended.all():
                break
        self.net.train(was_training)
        generated = out[:, n:]
        return F.pad(generated, (0, seq_len - generated.shape[1]), value=self.pad_value)

    def _num_memory_tokens(self) -> int:
        mt = getattr(self.net, "memory_tokens", None)
        return mt.num if mt is not None else 0
