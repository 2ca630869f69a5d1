r"""
# Recycling: running the stack again on its own output

*Paper:* [Highly accurate protein structure prediction with AlphaFold](https://www.nature.com/articles/s41586-021-03819-2)
(Jumper et al., 2021), whose network is run several times, each pass fed the previous pass's
output ("recycling").

Recycling buys depth without parameters.  Pass $r$ sees the embeddings plus a projection of the
previous pass's (stop-gradient) output,

$$h^{(1)} = f(e), \qquad h^{(r)} = f\big(e + W\, \operatorname{sg}(h^{(r-1)})\big),$$

and only the last pass is trained (the earlier ones run without gradients, so memory does not grow
with $r$).  In training the number of passes is drawn uniformly from $1 \dots$
`train_max_recycle_steps`, so the model learns to improve any earlier answer; at inference the
caller picks it, `model(x, recycle_steps=3)`.

**Differences from the paper.**  AlphaFold recycles its pair and single representations and the
predicted structure through normalised embeddings; here, as in x-transformers, the final hidden
states go through one linear map $W$ (without bias).  A cache cannot be used: every pass reruns the
whole sequence.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import nullcontext
from typing import Optional

import torch
from torch import Tensor, nn


def recycle(run: Callable[[Tensor], tuple[Tensor, object]], e: Tensor, proj: nn.Module, steps: Optional[int],
            training: bool, train_max_steps: int):
    """Run `run` (embeddings to `(hidden, extra)`) `steps` times, each pass fed the last one's output."""
    if steps is None:
        if not training:
            raise ValueError("recycle_steps: a recycling model needs recycle_steps= at inference (e.g. 3)")
        steps = random.randrange(train_max_steps) + 1
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"recycle_steps: expected a positive integer, got {steps!r}")
    h, out = None, None
    for r in range(steps):
        # Only the last pass is differentiated.
        with nullcontext() if r == steps - 1 else torch.no_grad():
            # $e + W \operatorname{sg}(h^{(r-1)})$
            inp = e if h is None else e + proj(h.detach())
            h, out = run(inp)
    return h, out
