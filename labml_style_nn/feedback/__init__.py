"""The Feedback Transformer: a memory shared by all layers, attention over it, and the model."""

from .feedback_attention import FeedbackAttention
from .feedback_memory import FeedbackMemory, fifo
from .feedback_transformer import FeedbackLayer, FeedbackTransformer

__all__ = ["FeedbackAttention", "FeedbackLayer", "FeedbackMemory", "FeedbackTransformer", "fifo"]
