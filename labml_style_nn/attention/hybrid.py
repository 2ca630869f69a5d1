r"""
# Hybrid heads: a recurrent branch beside attention (Hymba)

*Paper:* [Hymba: A Hybrid-head Architecture for Small Language Models](https://arxiv.org/abs/2411.13676)
(Dong et al., 2024)

Attention recalls any earlier token exactly but costs memory that grows with the context; a
recurrent network (an SSM, a GRU) summarises the whole past in a fixed state but recalls poorly.
Hymba runs both *in parallel* inside one layer, on the same input, and averages their normalised
outputs, head by head:

$$o_i = \tfrac12\big(\operatorname{norm}(o^{\text{attn}}_i) + \operatorname{norm}(o^{\text{rec}}_i)\big)
\quad\text{or, learned,}\quad o_i = \operatorname{norm}(o^{\text{attn}}_i) + \sigma(W x_i) \odot
\big(\operatorname{norm}(o^{\text{rec}}_i) - \operatorname{norm}(o^{\text{attn}}_i)\big),$$

where $\operatorname{norm}$ is an RMS norm of each head's $d$ features with a learned gain (the two
branches' outputs have different scales, hence the norms; the paper uses learned scalar weights
where this uses a per-head sigmoid gate with `hybrid_learned_mix=True`).  Attention heads act as
"snapshot memories", recurrent heads as "fading memories"; the paper's 1.5B model outperforms
larger attention-only models.

The recurrent branch is **any module supplied by the user**, deep-copied into every self-attention
layer: called as `module(x)` on the layer's input `(b, n, D)`, it returns `(b, n, h d)` (or
`(b, h, n, d)`), optionally as `(output, state)`.  A `torch.nn.GRU(D, h * d, batch_first=True)`
fits, as the example below shows.  The output is merged with attention's before the output
projection (`hybrid`, an extension point of [attention](attention.md)); attention keeps its fused path.

* **Cached decoding** passes the state the module returned at the previous step back as its second
  argument, `module(x, state)`, the way `nn.GRU` and `nn.LSTM` take their hidden state, so a
  cached decode equals a full pass.
* **Folding** (`hybrid_fold_axial_dim=A`): the sequence is cut into $A$ interleaved subsequences
  (tokens $a, a + A, a + 2A, \dots$), each run by the module separately: each recurrent step then
  covers $A$ tokens.  A folded branch cannot take one token at a time, so decoding with a cache is
  refused (generate decodes without it).
* **Transformer-XL memories** are not run through the module: each segment starts it afresh.
* **Padding**: with `hybrid_mask_kwarg='mask'` (encoders), the padding mask is passed to the module
  under that name; otherwise padded tokens enter the module as zeros, so what they hold changes
  nothing.

```python
from torch import nn
from labml_style_nn import Decoder

layers = Decoder(dim=32, depth=2, heads=4, attn_dim_head=8,
                 attn_hybrid_module=nn.GRU(32, 4 * 8, batch_first=True))
```

`attn_hybrid_module`, `attn_hybrid_mask_kwarg=None`, `attn_hybrid_fold_axial_dim=None` (no folding),
`attn_hybrid_learned_mix=False`.  Tests: `tests/attention/test_attn_hybrid_values.py`.

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim, `D` model width, `A` folds.

## Differences from the paper

* Hymba's recurrent heads are Mamba SSM heads fed from the same projections as attention, and it
  adds meta tokens and cross-layer key/value sharing; here the recurrent module is the user's, on
  the layer's input.

## Differences from x-transformers

* x-transformers builds the norms only when `hybrid_fold_axial_dim` is given (so it must be); here
  `None` means no folding.
* Padded tokens enter the module as zeros when no mask keyword is given (x-transformers passes them
  as they are, so left padding changes a decoder's real tokens).
* x-transformers passes back only the first tensor of the returned state (which fails for an LSTM's
  `(h, c)`); here the state goes back as the module returned it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("hybrid_module", None, "a recurrent module run beside attention, outputs averaged per head (Hymba)",
            type="module"),
    Keyword("hybrid_mask_kwarg", None, "hybrid_module: the keyword under which it takes the padding mask",
            type=str, example="mask"),
    Keyword("hybrid_fold_axial_dim", None, "hybrid_module: run it on A interleaved subsequences", type=int,
            minimum=1, example=2),
    Keyword("hybrid_learned_mix", False, "hybrid_module: a learned per-head gate instead of the average"))


class MultiheadRMSNorm(nn.Module):
    r"""$\sqrt d\, x / \lVert x \rVert$ per head, with a learned gain (stored as gain $- 1$, starting at 1)."""

    def __init__(self, heads: int, dim_head: int):
        super().__init__()
        self.scale = dim_head ** 0.5
        self.gamma = nn.Parameter(torch.zeros(heads, 1, dim_head))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * (self.gamma + 1.0)


class HybridBranch(nn.Module):
    """`hybrid`: runs `module` on the layer's input and mixes its output with attention's, per head."""

    def __init__(self, module: nn.Module, *, dim: int, heads: int, dim_head: int, causal: bool,
                 fold_axial_dim: Optional[int] = None, learned_mix: bool = False, mask_kwarg: Optional[str] = None):
        super().__init__()
        self.module, self.heads, self.dim_head = module, heads, dim_head
        self.fold = fold_axial_dim or 1
        self.mask_kwarg = mask_kwarg if not causal else None
        self.norms = nn.ModuleList([MultiheadRMSNorm(heads, dim_head), MultiheadRMSNorm(heads, dim_head)])
        self.mix = nn.Linear(dim, heads, bias=False) if learned_mix else None
        # Only a decoder decodes with a cache; its state is the module's.
        self.stateful = causal
        self.cache_blocker = "a folded hybrid module (attn_hybrid_fold_axial_dim > 1) cannot take one token " \
                             "at a time" if causal and self.fold > 1 else None

    def _run(self, x: Tensor, args: tuple, kwargs: dict) -> tuple[Tensor, Any]:
        """The module on `x` `(b, n, D)`, folded into $A$ interleaved subsequences when asked."""
        n, a = x.shape[1], self.fold
        if a > 1:
            x = F.pad(x, (0, 0, 0, math.ceil(n / a) * a - n))
            x = rearrange(x, "b (m a) e -> (b a) m e", a=a)
            if kwargs:
                kwargs = {k: rearrange(F.pad(v, (0, x.shape[1] * a - n)), "b (m a) -> (b a) m", a=a)
                          for k, v in kwargs.items()}
        result = self.module(x, *args, **kwargs)
        out, state = (result[0], result[1] if len(result) > 1 else None) if isinstance(result, (tuple, list)) \
            else (result, None)
        if out.ndim == 4:
            out = rearrange(out, "b h m d -> b m (h d)")
        if a > 1:
            out = rearrange(out, "(b a) m e -> b (m a) e", a=a)[:, :n]
        return out, state

    def forward(self, out: Tensor, x: Tensor, mask: Optional[Tensor], state: Optional[dict]) -> Tensor:
        kwargs = {}
        if mask is not None:
            if self.mask_kwarg is not None:
                kwargs = {self.mask_kwarg: mask}
            else:
                # Padded tokens enter as zeros.
                x = x * mask[..., None].to(x.dtype)
        hidden = state.get("hybrid") if state is not None else None
        recurrent, new_hidden = self._run(x, () if hidden is None else (hidden,), kwargs)
        if state is not None:
            state["hybrid"] = new_hidden
        if recurrent.shape[-1] != self.heads * self.dim_head:
            raise ValueError(f"attn_hybrid_module: expected an output of width heads * dim_head "
                             f"({self.heads * self.dim_head}), got {recurrent.shape[-1]}")
        recurrent = rearrange(recurrent, "b n (h d) -> b h n d", h=self.heads)
        out_norm, recurrent_norm = self.norms
        out, recurrent = out_norm(out), recurrent_norm(recurrent.to(out.dtype))
        if self.mix is None:
            # $\frac12 (\operatorname{norm}(o^{\text{attn}}) + \operatorname{norm}(o^{\text{rec}}))$
            return 0.5 * (out + recurrent)
        gate = rearrange(self.mix(x), "b n h -> b h n 1").sigmoid()
        return out.lerp(recurrent, gate)


@rule("attn")
def _hybrid_settings(a, prefix: str, layers) -> None:
    for name, default in (("hybrid_mask_kwarg", None), ("hybrid_fold_axial_dim", None),
                          ("hybrid_learned_mix", False)):
        if getattr(a, name) != default and a.hybrid_module is None:
            raise ValueError(f"{prefix}{name}: only meaningful with {prefix}hybrid_module")
    if a.hybrid_mask_kwarg is not None and layers.causal:
        raise ValueError(f"{prefix}hybrid_mask_kwarg: a causal stack passes no mask to the hybrid module "
                         "(padded tokens enter it as zeros)")
