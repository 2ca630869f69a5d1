"""Layer stacks and the wrappers around them."""

from .layers import AttentionLayers, CrossAttender, Decoder, Encoder
from .vit import ViTransformerWrapper
from .wrappers import ContinuousTransformerWrapper, TransformerWrapper
from .xtransformer import XTransformer

__all__ = [
    "AttentionLayers", "CrossAttender", "Decoder", "Encoder", "ViTransformerWrapper",
    "ContinuousTransformerWrapper", "TransformerWrapper", "XTransformer",
]
