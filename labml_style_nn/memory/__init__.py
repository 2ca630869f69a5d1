"""Memory: persistent key/values, memory tokens, Transformer-XL recurrence."""

from .memory_tokens import MemoryTokens
from .persistent_memory import PersistentMemory
from .xl_recurrence import shift_memories_down, update_memories

__all__ = ["MemoryTokens", "PersistentMemory", "shift_memories_down", "update_memories"]
