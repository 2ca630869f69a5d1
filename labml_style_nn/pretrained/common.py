r"""
# Renaming a checkpoint's weights

Every architecture page converts a checkpoint the same way: for each weight of our model, take the
tensor of theirs that holds it (transposed, concatenated or sliced where the layouts differ).
`WeightMap` does the bookkeeping: it hands out their tensors by name, remembers which were taken,
and at the end refuses a checkpoint with weights nobody took, so that a converter that forgot a
weight fails loudly instead of returning a model that silently ignores part of the checkpoint.
(Our side is checked by `load_state_dict(strict=True)`.)

Checkpoints on the hub were saved by different versions and classes: the base model's names may or
may not carry a prefix (`transformer.` for GPT-2, `model.` for LLaMA), and some hold buffers that are
not weights (GPT-2's causal mask `attn.bias`).  The prefix is found once; buffers are named and
skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torch import Tensor


class WeightMap:
    """Their weights by name, with a record of what was used.

    >>> import torch
    >>> w = WeightMap({"model.norm.weight": torch.ones(2), "lm_head.weight": torch.ones(3, 2)}, prefix="model.")
    >>> w["norm.weight"].tolist(), w.has("embed_tokens.weight")
    ([1.0, 1.0], False)
    >>> w.unused()
    ['lm_head.weight']
    """

    def __init__(self, state: dict[str, Tensor], *, prefix: str = "", skip: Iterable[str] = ()):
        # Checkpoints saved from the base model have no prefix; those saved from the LM-head class do.
        has_prefix = prefix and any(k.startswith(prefix) for k in state)
        self.prefix = prefix if has_prefix else ""
        patterns = [re.compile(p) for p in skip]
        self.state = {k: v for k, v in state.items() if not any(p.fullmatch(k) for p in patterns)}
        self.used: set[str] = set()

    def _name(self, name: str, top: bool) -> str:
        return name if top else self.prefix + name

    def has(self, name: str, top: bool = False) -> bool:
        """Whether the checkpoint holds `name` (under the base model's prefix unless `top`)."""
        return self._name(name, top) in self.state

    def get(self, name: str, top: bool = False) -> Tensor:
        """Their tensor `name` (under the base model's prefix unless `top`), marked as used."""
        key = self._name(name, top)
        if key not in self.state:
            raise KeyError(f"state: the checkpoint has no weight {key!r}")
        self.used.add(key)
        return self.state[key]

    def __getitem__(self, name: str) -> Tensor:
        return self.get(name)

    def skip(self, name: str, top: bool = False) -> None:
        """Mark `name` as used without converting it (a duplicate of a tied weight)."""
        if self.has(name, top):
            self.used.add(self._name(name, top))

    def unused(self) -> list[str]:
        """Their weights that no converter took."""
        return sorted(set(self.state) - self.used)

    def check_all_used(self, model_type: str) -> None:
        """`ValueError` naming the weights of the checkpoint that the conversion left out."""
        left = self.unused()
        if left:
            shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
            raise ValueError(f"state: the {model_type} converter does not know the weights {shown}; "
                             "the checkpoint has parts this architecture does not have")


def config_value(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first of `names` present (and not `None`) in `config`, else `default`.

    >>> config_value({"n_embd": 8}, "hidden_size", "n_embd")
    8
    """
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def tied_unscaled(tied: bool) -> dict[str, Any]:
    """`tie_embedding_scale=1.0` for a tied checkpoint: Hugging Face's tied heads are `h E^T`, unscaled,
    where the wrapper's default (x-transformers') multiplies `h` by $D^{-1/2}$ first."""
    return {"tie_embedding_scale": 1.0} if tied else {}


def refuse(config: dict[str, Any], name: str, expected: Any, why: str) -> None:
    """`ValueError` naming a config entry whose value this library does not reproduce."""
    value = config.get(name, expected)
    if value != expected and value is not None:
        raise ValueError(f"config: {name}={value!r} is not supported ({why}); expected {expected!r}")
