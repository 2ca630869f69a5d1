r"""
# Weight-tied layers and the order blocks run in

*Paper:* [Universal Transformers](https://arxiv.org/abs/1807.03819) (Dehghani et al., 2019); [ALBERT: A Lite BERT for Self-supervised Learning of Language Representations](https://arxiv.org/abs/1909.11942) (Lan et al., 2020)

A [layout](layout.md) says which kind of block comes where; this page says which *weights* each
position uses.  Universal Transformers apply one layer again and again, as a recurrence in depth;
ALBERT shares all parameters across its layers and finds that the shared model loses little
accuracy while having a fraction of the parameters.  With one set of weights $\theta$ applied $N$
times,

$$x^{(l+1)} = \operatorname{Block}_\theta\big(x^{(l)}\big), \qquad l = 0 \dots N - 1,$$

the depth of the computation is $N$ but the parameters are those of one layer.

* `weight_tie_layers=True` builds one layer (an attention and a feed-forward block, or whatever the
  default block is) and runs it `depth` times.
* `layers_execute_order=(0, 1, 0, 1, 2, 3)` runs the built blocks (numbered in the order of the
  layout) in any order, repeating some: the blocks of the layout are built once each, and each
  index runs the block of that number.

A block that runs twice keeps its weights but not its state: the key/value cache and the
Transformer-XL memory have one entry per *run*, so a cached decoding of a tied stack equals its full
pass.  In the module tree the stack's `blocks` list holds the same module at every position it runs
(`named_parameters()` yields each weight once; a state dict names it once per position).

Tests: `tests/models/test_layer_sharing.py` (a tied stack has one layer's parameters and runs it
`depth` times; execution order; parity with x-transformers; cached decoding).

Shapes: `N` runs (the depth of the computation), `B` built blocks.

## Differences from the papers

* Universal Transformers add a timestep embedding at every step and adaptive computation time
  (a learned halting per position); neither is here, as in x-transformers.
* ALBERT also factorises the embedding; that is a wrapper matter (`emb_dim`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..keywords import Keyword, declare, rule

if TYPE_CHECKING:
    from ..options import LayerOptions

KEYWORDS = declare(__name__, "stack",
    Keyword("weight_tie_layers", False, "one layer's weights, run depth times (ALBERT, Universal Transformers)"),
    Keyword("layers_execute_order", None, "indices of the built blocks, in the order they run (repeats share "
            "weights)", type=(tuple, list), example=(1, 0, 1, 0)))


def built_depth(o: LayerOptions) -> int:
    """How many layers the layout builds: one with `weight_tie_layers`, else `depth`."""
    return 1 if o.weight_tie_layers else o.depth


def execution_order(o: LayerOptions, num_built: int) -> tuple[int, ...]:
    r"""Which built block runs at each step.

    >>> from labml_style_nn.options import LayerOptions
    >>> execution_order(LayerOptions(dim=8, depth=3, weight_tie_layers=True), 2)
    (0, 1, 0, 1, 0, 1)
    >>> execution_order(LayerOptions(dim=8, depth=2, layers_execute_order=(2, 3, 0, 1)), 4)
    (2, 3, 0, 1)
    """
    if o.weight_tie_layers:
        return tuple(range(num_built)) * o.depth
    if o.layers_execute_order is not None:
        order = tuple(o.layers_execute_order)
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_built for i in order) or not order:
            raise ValueError(f"layers_execute_order: expected indices of the {num_built} built blocks "
                             f"(0..{num_built - 1}), got {o.layers_execute_order!r}")
        return order
    return tuple(range(num_built))


@rule("stack")
def _sharing_keywords(o) -> None:
    if o.weight_tie_layers:
        for other in ("custom_layers", "par_ratio", "sandwich_coef", "layers_execute_order"):
            if getattr(o, other) is not None:
                raise ValueError(f"weight_tie_layers and {other}: weight tying repeats the default layer; "
                                 f"give the order with layers_execute_order alone instead")
    if o.only_attn and o.layers_execute_order is not None:
        raise ValueError("only_attn and layers_execute_order: the order indexes blocks that only_attn removes; "
                         "use custom_layers instead")
