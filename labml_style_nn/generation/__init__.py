"""Autoregressive training, sampling and the key/value cache."""

from .attention_sinks import AttentionSinksCache, attention_sinks
from .autoregressive import AutoregressiveWrapper
from .kv_cache import LayersCache
from .rolling_cache import RollingLayersCache
from .sampling import min_p, top_k, top_p

__all__ = ["AttentionSinksCache", "AutoregressiveWrapper", "LayersCache", "RollingLayersCache", "attention_sinks",
           "min_p", "top_k", "top_p"]
