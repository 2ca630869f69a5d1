"""Residual connections and what happens along them."""

from .gated_residual import GatedResidual
from .residual import Block, Residual
from .reversible import ReversibleCoupling, reversible_pairs, run_reversible
from .rezero import ReZero
from .scale_residual import ScaledResidual
from .token_shift import ShiftTokens, shift_tokens

__all__ = ["GatedResidual", "Block", "Residual", "ReversibleCoupling", "ReZero", "ScaledResidual", "ShiftTokens", "shift_tokens",
           "reversible_pairs", "run_reversible"]
