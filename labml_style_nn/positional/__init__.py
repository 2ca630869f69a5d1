"""Ways of telling the model where each token is."""

from .absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from .alibi import AlibiPositionalBias, alibi_slopes
from .position_infused import PositionInfusedAttention
from .rope_scaling import RopeScaling
from .rotary import RotaryEmbedding, apply_rotary
from .t5_bias import T5RelativePositionBias, relative_position_bucket

__all__ = [
    "LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding", "AlibiPositionalBias", "alibi_slopes",
    "PositionInfusedAttention", "RopeScaling", "RotaryEmbedding", "apply_rotary", "T5RelativePositionBias",
    "relative_position_bucket",
]
