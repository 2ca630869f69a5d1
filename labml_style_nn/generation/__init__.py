"""Autoregressive training, sampling and the key/value cache."""

from .attention_sinks import AttentionSinksCache, sink_cache
from .autoregressive import AutoregressiveWrapper
from .kv_cache import LayersCache
from .rolling_cache import RollingLayersCache
from .sampling import min_p, top_k, top_p
from .speculative import SpeculativeStats, accept_draft
from .static_cache import StaticLayersCache

__all__ = ["AttentionSinksCache", "AutoregressiveWrapper", "LayersCache", "RollingLayersCache", "SpeculativeStats",
           "StaticLayersCache", "accept_draft", "min_p", "sink_cache", "top_k", "top_p"]
