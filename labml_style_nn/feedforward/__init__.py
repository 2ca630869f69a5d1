"""Position-wise feed-forward networks."""

from .feedforward import FeedForward
from .glu import GLU
from .relu_squared import ReLUSquared

__all__ = ["FeedForward", "GLU", "ReLUSquared"]
