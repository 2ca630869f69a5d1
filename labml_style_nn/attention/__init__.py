"""Attention and the techniques that plug into it."""

from .attention import Attention
from .attention_on_attention import AttentionOnAttention
from .collaborative import CollaborativeQK
from .entmax15 import Entmax15
from .extension_points import ScoreTransform, ScoreTransforms, SharedAttentionInputs
from .gate_values import ValueGate
from .head_scale import HeadScale, OutputGates
from .qk_norm import QKNorm
from .residual_attention import ResidualScores
from .sparse_topk import SparseTopK
from .talking_heads import TalkingHeads

__all__ = [
    "Attention", "ScoreTransform", "ScoreTransforms", "SharedAttentionInputs", "AttentionOnAttention",
    "CollaborativeQK", "Entmax15", "ValueGate", "HeadScale", "OutputGates", "QKNorm", "ResidualScores",
    "SparseTopK", "TalkingHeads",
]
