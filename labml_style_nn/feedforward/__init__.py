"""Position-wise feed-forward networks."""

from .activations import ACTIVATIONS, GELUTanh, activation
from .feedforward import FeedForward
from .glu import GLU, VARIANTS, GatedLinearUnit
from .relu_squared import ReLUSquared

__all__ = ["ACTIVATIONS", "FeedForward", "GELUTanh", "GLU", "GatedLinearUnit", "ReLUSquared", "VARIANTS", "activation"]
