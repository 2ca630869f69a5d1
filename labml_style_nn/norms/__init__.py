"""Normalisation layers."""

from .rms_norm import RMSNorm
from .scale_norm import ScaleNorm

__all__ = ["RMSNorm", "ScaleNorm"]
