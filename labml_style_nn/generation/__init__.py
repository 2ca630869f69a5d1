"""Autoregressive training, sampling and the key/value cache."""

from .autoregressive import AutoregressiveWrapper
from .kv_cache import LayersCache
from .sampling import min_p, top_k, top_p

__all__ = ["AutoregressiveWrapper", "LayersCache", "min_p", "top_k", "top_p"]
