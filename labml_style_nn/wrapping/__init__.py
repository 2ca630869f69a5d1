"""Techniques around the stack that the wrappers' keywords turn on: embeddings, pools, heads, losses."""

from .pooling import AttentionPool

__all__ = ["AttentionPool"]
