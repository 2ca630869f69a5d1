"""The labml-style Transformer-XL: relative attention, its FFN, the layer and the stack (sequence-first)."""

from .feed_forward import FeedForward
from .relative_mha import RelativeMultiHeadAttention, relative_shift, sinusoidal_embeddings
from .transformer_xl import TransformerXL, TransformerXLLayer, causal_mask_with_memory, update_memory

__all__ = [
    "FeedForward",
    "RelativeMultiHeadAttention",
    "TransformerXL",
    "TransformerXLLayer",
    "causal_mask_with_memory",
    "relative_shift",
    "sinusoidal_embeddings",
    "update_memory",
]
