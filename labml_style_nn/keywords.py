r"""
# Keywords, declared beside their techniques

x-transformers configures a whole stack with flat keywords:
`Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True, attn_num_mem_kv=16, ff_glu=True)`.
With two hundred of them, one long list in one file would be the only thing a reader could not read.
So each technique declares its own keywords in its own file, next to the code they switch on:

```python
KEYWORDS = declare(__name__, "attn",
    Keyword("talking_heads", False, "mix the heads' scores before and after the softmax"),
)
```

and one parser ([options.py](options.md)), the type checks, the suggestions for a misspelt keyword and
the generated [keyword reference](keyword_reference.md) all read these declarations.  A declaration
says

* the name, without its group's prefix (`talking_heads` for `attn_talking_heads`),
* the default, which also gives the type unless `type` is given (`None` defaults need one),
* one line saying what it does,
* and, when they apply: the accepted `choices`, a `minimum`, an `example` value (used to find which
  keywords exclude each other), and whether x-transformers 2.31 has the keyword (`xtransformers`).

The page that explains a keyword is the file that declares it.  Groups: `attn` keywords configure
every attention layer (spelt `attn_<name>`, and `cross_attn_<name>` for the cross-attention layers
only), `ff` every feed-forward layer (`ff_<name>`), `stack` the stack itself (no prefix).

This module imports nothing from the package, so any technique can declare without an import circle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

GROUPS = ("stack", "attn", "ff")
PREFIXES = {"stack": "", "attn": "attn_", "ff": "ff_"}

# The types a declaration may name, and how the reference writes them.
_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict", tuple: "tuple", list: "list"}


@dataclass(frozen=True)
class Keyword:
    """One keyword of the API, declared by the technique it configures."""

    name: str
    default: Any
    doc: str
    # Accepted types: one or a tuple of `bool`, `int`, `float`, `str`, `dict`, `tuple`, `list`, or
    # "module" (an `nn.Module`) or "callable".  `None` takes the default's type.
    type: Any = None
    # `None` is accepted (always, when the default is `None`).
    optional: bool = False
    choices: tuple = ()
    minimum: Optional[float] = None
    # A value that switches the keyword on, for probing which keywords exclude each other
    # (booleans are probed with `not default` without one).
    example: Any = None
    # x-transformers 2.31 has a keyword of this name and meaning.
    xtransformers: bool = True
    # The user must give it (`dim`, `depth`).
    required: bool = False
    # Filled by `declare`.
    group: str = ""
    page: str = ""
    # Extra checks of the value alone: `check(spelt_name, value)` raises `ValueError`.
    check: Optional[Callable[[str, Any], None]] = field(default=None, compare=False)

    @property
    def types(self) -> tuple:
        t = self.type if self.type is not None else type(self.default)
        return t if isinstance(t, tuple) else (t,)

    @property
    def accepts_none(self) -> bool:
        return self.optional or self.default is None

    def spelt(self, prefix: Optional[str] = None) -> str:
        """The keyword as a user writes it (`attn_talking_heads`)."""
        return (PREFIXES[self.group] if prefix is None else prefix) + self.name

    def type_name(self) -> str:
        names = [_TYPE_NAMES.get(t, t if isinstance(t, str) else getattr(t, "__name__", str(t))) for t in self.types]
        if self.choices:
            names = [" or ".join(repr(c) for c in self.choices)]
        return " | ".join(names + (["None"] if self.accepts_none else []))

    #
    # ### Checking a value
    #
    # Every value is checked against its declaration before any module is built: `rotary_pos_emb='yes'`
    # is a `ValueError` naming `rotary_pos_emb`, never a truthy string that silently switches it on.
    def validate(self, value: Any, prefix: Optional[str] = None) -> None:
        """`ValueError` naming the keyword unless `value` fits the declaration."""
        name = self.spelt(prefix)
        if value is None and self.accepts_none:
            return
        if self.choices:
            if value not in self.choices or isinstance(value, bool) != any(isinstance(c, bool) for c in self.choices):
                raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in self.choices)}"
                                 f"{' (or None)' if self.accepts_none else ''}, got {value!r}")
        elif not any(_is(value, t) for t in self.types):
            expected = "True or False" if self.types == (bool,) and not self.accepts_none else self.type_name()
            raise ValueError(f"{name}: expected {expected}, got {value!r}")
        minimum = self.minimum
        if minimum is not None and isinstance(value, (int, float)) and value < minimum:
            raise ValueError(f"{name}: expected a value >= {minimum:g}, got {value!r}")
        if self.check is not None:
            self.check(name, value)


def _is(value: Any, t: Any) -> bool:
    """`value` is of declared type `t` (a bool is no int, an int is a float, a float is finite)."""
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if t == "module":
        return hasattr(value, "parameters") and callable(value)
    if t == "callable":
        return callable(value)
    return isinstance(value, t)


#
# ## The registry
#
# `group -> name -> Keyword`, filled as the technique modules are imported; `options.py` imports them all.
REGISTRY: dict[str, dict[str, Keyword]] = {g: {} for g in GROUPS}


def page_of(module: str) -> str:
    """`labml_style_nn.attention.talking_heads` -> `attention/talking_heads`, the page of that file."""
    return module.removeprefix("labml_style_nn.").replace(".", "/")


def declare(module: str, group: str, *keywords: Keyword) -> tuple[Keyword, ...]:
    """Register `keywords` of `group`, explained on the page of `module` (pass `__name__`)."""
    if group not in GROUPS:
        raise ValueError(f"group: expected one of {', '.join(GROUPS)}, got {group!r}")
    out = []
    for k in keywords:
        k = Keyword(**{**k.__dict__, "group": group, "page": k.page or page_of(module)})
        known = REGISTRY[group].get(k.name)
        if known is not None and known.page != k.page:
            raise ValueError(f"keyword {k.spelt()} is declared twice: on {known.page} and on {k.page}")
        if k.type is None and k.default is None:
            raise ValueError(f"keyword {k.spelt()}: a None default needs a declared type")
        REGISTRY[group][k.name] = k
        out.append(k)
    return tuple(out)


def declared(group: str) -> dict[str, Keyword]:
    """The keywords of `group`, by name (without the prefix)."""
    return REGISTRY[group]


#
# ## Rules between keywords
#
# A value can be fine alone and meaningless with another keyword (`use_rezero` with `use_rmsnorm`).
# A technique states such rules beside its code too, as a function that raises `ValueError` naming
# both keywords.  `attn` rules are called as `rule(attention_options, prefix, layer_options)`, once
# for `attn_*` and once for `cross_attn_*`; `ff` rules as `rule(feedforward_options, layer_options)`;
# `stack` rules as `rule(layer_options)`.
RULES: dict[str, list[Callable[..., None]]] = {g: [] for g in GROUPS}


def rule(group: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: register a check between keywords of `group` (see above for its arguments)."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        if fn not in RULES[group]:
            RULES[group].append(fn)
        return fn
    return register
