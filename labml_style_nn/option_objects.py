r"""
# Option objects: the keywords' values, typed and complete

The [parser](options.md) turns `Decoder(dim=512, depth=6, heads=8, attn_num_mem_kv=16, ff_glu=True)`
into three objects, one per group of keywords, and the stack's builders read only them:

| group | keywords, as spelt | object | read as |
|---|---|---|---|
| `stack` | `rotary_pos_emb`, `macaron`, ... | `LayerOptions` | `o.rotary_pos_emb` |
| `attn` | `attn_num_mem_kv`, ... (and `cross_attn_*`) | `AttentionOptions` | `o.attn.num_mem_kv` (`o.cross_attn.num_mem_kv`) |
| `ff` | `ff_glu`, ... | `FeedForwardOptions` | `o.ff.glu` |

An object holds a value for *every* keyword its group declares ([keywords](keywords.md)): the
user's, or the declared default.  So a builder never asks whether a keyword was given, and a
misspelt read (`o.attn.num_mem_k`) is an `AttributeError` instead of a silent `None`.  The few
values derived from several keywords (the key/value heads, the key width, the activation) are
methods beside the keywords they read, so that no builder computes them twice.

The objects are not checked here: [validation](option_validation.md) does that once, after parsing.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Optional

from .keywords import declared
from .positional.rope_scaling import RopeScaling


#
# ## Option objects
#
# One object per group holds a value for every declared keyword of the group: the user's, or the
# declared default.  Reading an undeclared name is an `AttributeError`.
class Options:
    """The values of one group of keywords (`stack`, `attn` or `ff`), defaults filled in."""

    group: ClassVar[str] = ""

    def __init__(self, **values: Any):
        keywords = declared(self.group)
        for name in values:
            if name not in keywords:
                raise TypeError(f"{type(self).__name__}() got an unexpected option {name!r}")
        # A mutable default (a dict) is copied, so no two stacks share it.
        self.__dict__.update({name: copy.copy(k.default) for name, k in keywords.items()})
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not set: every declared keyword is.
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")

    def replace(self, **changes: Any):
        """A copy with `changes` applied."""
        new = copy.copy(self)
        new.__dict__.update(changes)
        return new

    def changed(self) -> dict[str, Any]:
        """The options whose values differ from the declared defaults."""
        keywords = declared(self.group)
        return {n: v for n, v in self.__dict__.items() if n in keywords and v != keywords[n].default}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.changed().items())})"


class AttentionOptions(Options):
    """Options of every attention layer (keywords `attn_*`)."""

    group = "attn"

    def num_kv_heads(self, heads: int) -> int:
        """Key/value heads: `kv_heads`, 1 for multi-query, else one per query head."""
        return 1 if self.one_kv_head else (self.kv_heads or heads)

    def key_width(self, dim: int) -> int:
        """Width of queries and keys per head: `dim_head`, or the shared width of collaborative heads."""
        if self.collab_heads:
            return max(1, int((self.collab_compression or 0.3) * dim))
        return self.dim_head


class FeedForwardOptions(Options):
    """Options of every feed-forward layer (keywords `ff_*`)."""

    group = "ff"

    def activation_name(self) -> str:
        """The activation of the hidden layer: `activation`, or the one the older flags choose."""
        if self.activation is not None:
            return self.activation
        return "relu_squared" if self.relu_squared else "silu" if self.swish else "gelu"


class LayerOptions(Options):
    """Options of a stack of attention and feed-forward blocks."""

    group = "stack"
    attn: AttentionOptions
    cross_attn: Optional[AttentionOptions]
    ff: FeedForwardOptions

    def __init__(self, dim: int, depth: int, attn: Optional[AttentionOptions] = None,
                 cross_attn: Optional[AttentionOptions] = None, ff: Optional[FeedForwardOptions] = None,
                 **values: Any):
        super().__init__(dim=dim, depth=depth, **values)
        self.attn = attn if attn is not None else AttentionOptions()
        self.cross_attn = cross_attn
        self.ff = ff if ff is not None else FeedForwardOptions()

    @property
    def has_relative_positions(self) -> bool:
        """True when a scheme gives positions inside attention (the absolute embedding can go)."""
        return self.rel_pos_bias or self.rotary_pos_emb or self.alibi_pos_emb or self.dynamic_pos_bias \
            or self.polar_pos_emb


ROPE_SCALING_DEFAULTS = dict(rotary_interpolation_factor=1.0, rotary_base_rescale_factor=1.0,
                              rotary_yarn_factor=None, rotary_yarn_original_max_len=None)


def rope_scaling(o: LayerOptions) -> RopeScaling:
    """The RoPE scaling settings of a stack (`ValueError` naming the keyword for a bad value)."""
    return RopeScaling(interpolation_factor=o.rotary_interpolation_factor,
                       base_rescale_factor=o.rotary_base_rescale_factor,
                       yarn_factor=o.rotary_yarn_factor, yarn_original_max_len=o.rotary_yarn_original_max_len)
