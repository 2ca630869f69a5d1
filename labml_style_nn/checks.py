r"""
# Checking what a user passes in

A module that a user builds and calls on their own should fail at the call, with a message that
names the argument, says what was expected and shows what came in, instead of failing deep inside a
matrix product or, worse, returning a wrong answer.  This file holds the few checks every public
module shares:

* **Keywords.**  A misspelt keyword is a `TypeError` that suggests the closest valid ones
  (`max_seqlen` -> `max_seq_len`), or lists them when none is close.  `suggest_keywords` gives every
  public constructor that behaviour; `check_keywords` does it for functions that forward `**kwargs`,
  such as `generate`.
* **Tensors.**  `check_tensor` checks the number of axes, the dtype family and the sizes that must
  match, and names the layout in its message: `(batch, seq_len, 512)`.
* **Masks are boolean.**  A float mask of 0s and 1s is refused, never guessed at: PyTorch's
  attention reads a float `attn_mask` as an *additive bias*, so a 0/1 float mask would silently
  give neither the masked nor the unmasked answer, and `~` on it is a raw error.  `mask.bool()`
  converts one.

Shapes are written as the modules document them: `b` batch, `n` tokens, `D` model width.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Iterable, Sequence
from typing import Optional

import torch


#
# ## Keywords
def check_keywords(owner: str, given: Iterable[str], valid: Sequence[str]) -> None:
    """`TypeError` for the first keyword of `given` that is not in `valid`, with the closest valid ones."""
    for name in given:
        if name not in valid:
            raise unknown_keyword_error(owner, name, sorted(valid))


def unknown_keyword_error(owner: str, name: str, valid: list[str]) -> TypeError:
    """A `TypeError` that names the unknown keyword and the closest valid ones."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    # Nothing close: a short list of valid keywords is shown whole (`top_p` takes only `p`).
    hint = f"; did you mean {' or '.join(close)}?" if close else \
        f"; it takes {', '.join(valid)}" if 0 < len(valid) <= 8 else ""
    return TypeError(f"{owner}() got an unexpected keyword argument '{name}'{hint}")


def keyword_names(fn, named_only: bool = False) -> Optional[list[str]]:
    """The keywords `fn` accepts, or `None` when it takes `**kwargs` (unless `named_only`)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params) and not named_only:
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


def suggest_keywords(cls: type) -> type:
    """Make `cls(...)` answer an unknown keyword with the closest valid ones (constructors without `**kwargs`)."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_suggests_keywords", False):
        return cls
    valid = keyword_names(init)
    if valid is None:
        return cls  # the class parses its own `**kwargs` (and suggests there)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        check_keywords(cls.__name__, kwargs, valid)
        init(self, *args, **kwargs)

    vars(__init__)["_suggests_keywords"] = True  # a function attribute (the wrapper's type does not declare it)
    cls.__init__ = __init__
    return cls


#
# ## Values
def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """`ValueError` naming `name` unless `value` is an integer >= `minimum` (or `None` if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_number(name: str, value) -> bool:
    """`ValueError` naming `name` unless `value` is an int or a float; `True` otherwise (for `and` chains)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return True


def check_init_std(name: str, std: Optional[float], none_means: str) -> None:
    """Raise `ValueError` unless `std` is `None` (the draw `none_means` names) or a positive number."""
    if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0):
        raise ValueError(f"{name}: expected a positive number or None ({none_means}), got {std!r}")


def check_probability(name: str, value) -> None:
    """`ValueError` naming `name` unless `value` is a dropout probability in [0, 1)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a dropout probability in [0, 1), got {value!r}")


#
# ## Tensors
def _got(value) -> str:
    if torch.is_tensor(value):
        return f"{str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_tensor(name: str, value, layout: str, *, ndim: Optional[int] = None, kind: Optional[str] = None,
                 sizes: Optional[dict[int, int]] = None, hint: str = "") -> None:
    """`ValueError` naming `name` unless `value` is a tensor with `ndim` axes, of dtype `kind`
    (`"float"`, `"int"` or `"bool"`), and `sizes[axis] == size` for every given axis.

    `layout` is how the message writes the expected shape, e.g. `"(batch, seq_len, 512)"`.
    """
    ok = torch.is_tensor(value) and (ndim is None or value.dim() == ndim)
    if ok and kind is not None:
        family = "bool" if value.dtype == torch.bool else "float" if value.is_floating_point() \
            else "complex" if value.is_complex() else "int"
        ok = family == kind
    if ok and sizes:
        ok = all(-value.dim() <= axis < value.dim() and value.shape[axis] == size for axis, size in sizes.items())
    if not ok:
        what = {"float": "a float tensor", "int": "an integer tensor", "bool": "a bool tensor"}.get(kind or "", "a tensor")
        raise ValueError(f"{name}: expected {what} of shape {layout}, got {_got(value)}{hint}")


def check_mask(name: str, mask, shape: Sequence[int], layout: str = "") -> None:
    """A boolean mask (true = keep) of exactly `shape`; a float or integer 0/1 mask is refused."""
    if mask is None:
        return
    if torch.is_tensor(mask) and mask.dtype != torch.bool:
        raise ValueError(f"{name}: expected a bool tensor (True for positions to keep) of shape "
                         f"{layout or tuple(shape)}, got {_got(mask)}; a 0/1 mask converts with {name}.bool()")
    check_tensor(name, mask, layout or str(tuple(shape)), ndim=len(shape), kind="bool",
                 sizes=dict(enumerate(shape)))


def check_positions(name: str, positions) -> None:
    """Positions are a 1-D integer tensor `(n,)` (float positions would be silently rounded or wrong)."""
    check_tensor(name, positions, "(n,) of integer positions", ndim=1, kind="int")


#
# ## Keywords passed through `generate`
#
# `generate` hands its other keywords to the network's `forward` (e.g. `context=`), and
# `filter_kwargs` to the sampling filter.  Both are checked before the first step, so a misspelt
# `temprature` is named as a keyword of `generate`, not of some `forward()` deep inside the loop.
_SET_BY_GENERATE = {"x", "mask", "cache", "seq_start_pos", "mems", "return_mems", "return_embeddings",
                    "return_attn", "memory", "return_memory"}


def check_generate_keywords(generate, forward, kwargs: dict, filter_fn, filter_kwargs: dict) -> None:
    """`TypeError` naming an unknown keyword of `generate` or of the filter, with the closest valid ones.

    A filter's name (`top_p=0.9`) or its setting (`p=0.9`) passed as a keyword of `generate` gets
    the call that means it: `filter_logits_fn="top_p", filter_kwargs={"p": 0.9}`.
    """
    from .generation.sampling import FILTERS  # generation imports this file

    filter_names = keyword_names(filter_fn) if callable(filter_fn) else None
    for name, value in kwargs.items():
        fn = FILTERS.get(name)
        setting = (keyword_names(fn) or [None, None])[1] if fn is not None else \
            name if filter_names is not None and name in filter_names[1:] else None
        if setting is not None:
            chosen = name if fn is not None else getattr(filter_fn, "__name__", "")
            how = f"filter_logits_fn={chosen!r}, " if chosen in FILTERS else ""
            raise TypeError(f"generate() got an unexpected keyword argument '{name}'; a sampling filter is chosen by "
                            f"filter_logits_fn and set by filter_kwargs: generate(..., {how}"
                            f"filter_kwargs={{{setting!r}: {value!r}}})")
    if name_of_cache := next((n for n in ("cache", "kv_cache") if n in kwargs), None):
        raise TypeError(f"generate() got an unexpected keyword argument '{name_of_cache}'; generate makes its own "
                        "key/value cache, chosen by cache_kv: True (the default), False, or a factory such as "
                        "generation.sink_cache(4, 256)")
    forward_names = keyword_names(forward)
    if forward_names is not None:
        generate_names = keyword_names(generate, named_only=True) or []  # never `None` with `named_only`
        valid = [n for n in generate_names + forward_names if n not in _SET_BY_GENERATE]
        check_keywords("generate", kwargs, valid)
    if filter_names is not None:
        name = getattr(filter_fn, "__name__", "filter_logits_fn")
        check_keywords(f"filter_kwargs: {name}", filter_kwargs, filter_names[1:])  # the first is the logits


#
# ## The key/value cache
#
# A cache is passed to `forward` by `generate`, or by a user who decodes step by step.  Anything
# else (a list of past keys, `True`) would fail deep inside a layer; it is named here instead.
_CACHE_PARTS = ("blocks", "offset", "extend_mask", "advance", "shared_inputs")


def check_cache(name: str, cache) -> None:
    """`TypeError` naming `name` unless `cache` is `None` or a cache of `generation/` (anything with
    the parts a stack calls: `blocks`, `offset`, `extend_mask`, `advance`, `shared_inputs`)."""
    if cache is None or all(hasattr(cache, part) for part in _CACHE_PARTS):
        return
    if hasattr(cache, "shared_cache") and hasattr(cache, "cache_length"):
        return  # x-transformers' spelling: the intermediates of an earlier call (generation/intermediates.py)
    raise TypeError(f"{name}: expected a LayersCache from labml_style_nn.generation.kv_cache (or another cache "
                    f"of labml_style_nn.generation: rolling, attention sinks, static), the intermediates of an "
                    f"earlier call (return_intermediates=True), or None; got "
                    f"{type(cache).__name__}. AutoregressiveWrapper.generate makes and passes one itself "
                    "(choose it there with cache_kv=)")


def check_cache_kv(value) -> None:
    """`generate`'s `cache_kv`: `True`, `False`, or a factory `(layers, batch) -> cache`."""
    if not (isinstance(value, bool) or callable(value)):
        raise TypeError(f"cache_kv: expected True, False or a factory (layers, batch) -> cache such as "
                        f"generation.sink_cache(4, 256); got {type(value).__name__}")


#
# ## Attention's inputs
def check_attention_inputs(dim: int, dim_context: Optional[int], x, context, mask, context_mask, mem,
                           cached: bool) -> None:
    """What `Attention.forward` needs: float `x` `(b, n, dim)`, bool masks, a context of the right width."""
    check_tensor("x", x, f"(batch, seq_len, {dim})", ndim=3, kind="float", sizes={2: dim})
    b, n = x.shape[:2]
    if mem is not None:
        check_tensor("mem", mem, f"({b}, mem_len, {dim})", ndim=3, kind="float", sizes={0: b, 2: dim})
    if mask is not None:
        # With a cache the mask covers every cached key, so only its batch size is known here.
        keys = None if cached else n + (mem.shape[1] if mem is not None else 0)
        check_mask("mask", mask, (b, keys if keys is not None else mask.shape[-1] if torch.is_tensor(mask) else 0),
                   f"({b}, {keys if keys is not None else 'keys'})")
    if dim_context is None:
        if context is not None:
            raise ValueError("context: this is a self-attention layer (built without dim_context); "
                             "cross-attention needs Attention(..., dim_context=...)")
        return
    if context is not None:
        check_tensor("context", context, f"({b}, context_len, {dim_context})", ndim=3, kind="float",
                     sizes={0: b, 2: dim_context})
        check_mask("context_mask", context_mask, tuple(context.shape[:2]))
    elif context_mask is not None and not cached:
        raise ValueError("context_mask: given without a context")
