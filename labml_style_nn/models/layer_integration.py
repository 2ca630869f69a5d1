r"""
# Layer-integrated memory (LIMe): every block reads all earlier layers

*Paper:* [You Do Not Fully Utilize Transformer's Representation Capacity](https://arxiv.org/abs/2502.09245) (Gerasimov et al., 2025)

In a standard transformer each block sees only the current residual stream, a single sum into
which every earlier layer has written.  What an early layer wrote can be overwritten or drowned out
by later layers ("representation collapse").  LIMe lets each block read the inputs of *all* earlier
blocks directly, mixed by weights that every token chooses for itself from its current state:

$$x^{(l)}_{\text{in}} = \sum_{k \le l} w^{(l)}_k\, x^{(k)}, \qquad
w^{(l)} = \operatorname{softmax}\!\big(\operatorname{RMSNorm}(x^{(l)})\, W^{(l)} + c^{(l)}\big),$$

where $x^{(k)}$ is the residual stream at the input of sublayer $k$ (so $x^{(l)}$, the current one,
is among them).  A self-attention block takes three such mixes, one each for its queries, keys and
values (the first self-attention block, which has only the embeddings to read, takes one): keys
and values can then come from the layers that hold the most useful features for matching and
for content.  The residual stream itself is unchanged: each block still adds its output to it.

`integrate_layers=True` turns it on; `layer_integrate_use_softmax=False` replaces the softmax by a
ReLU (weights that need not sum to one).  The weights and the mix are computed token by token, so a
cached step computes them for its new tokens from its own earlier-layer inputs; a Transformer-XL
memory, one input per earlier token, cannot serve three inputs and is refused (as with
`qkv_receive_diff_residuals`, which LIMe implies).

Tests: `tests/residual/test_res_stream.py` (the invariant sweeps, cached decoding, the refusal with
XL memory, weight-copied parity with x-transformers).

Shapes: `b` batch, `n` tokens, `D` model width, `l` sublayers so far, `v` views (1 or 3).

## Differences from the paper

* The paper mixes the keys' and values' inputs only and keeps the queries on the current stream;
  x-transformers (and this library) mix the queries' input too.

## With hyper-connections

With several residual streams (`num_residual_streams > 1`, [hyper-connections](../residual/hyper_connections.md))
there is no single stream to read: $x^{(k)}$ is then what sublayer $k$'s hyper-connection reads from the
streams, its branch input, as in x-transformers 2.31.10.  Each hyper-connection then gives one input
(LIMe makes the three views of self-attention, even with `qkv_receive_diff_residuals=True`), and the
output is written back to the streams by the hyper-connection as usual.  The stack computes each
hyper-connection's read twice, once for the list of earlier inputs and once in the block.  The logits
differ from x-transformers' only by its hyper-connections' stream mixing (all ones, see the differences
on [their page](../residual/hyper_connections.md)); with that mixing put in, the models agree with copied
weights (`test_lime_over_hyper_connections_agrees_with_xtransformers_given_its_stream_mixing`).
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from ..keywords import Keyword, declare, rule
from ..norms.rms_norm import RMSNorm

KEYWORDS = declare(__name__, "stack",
    Keyword("integrate_layers", False, "LIMe: each block reads a learned per-token mix of every earlier "
            "sublayer's input (three mixes for self-attention)"),
    Keyword("layer_integrate_use_softmax", True, "LIMe's mixing weights by a softmax (False: a ReLU)"))


class LayerIntegration(nn.Module):
    r"""The mix $\sum_k w_k x^{(k)}$ over `num_layers` earlier inputs, in `views` versions."""

    def __init__(self, dim: int, num_layers: int, views: int = 1, softmax: bool = True):
        super().__init__()
        self.num_layers, self.views, self.softmax = num_layers, views, softmax
        self.norm = RMSNorm(dim)
        self.to_weights = nn.Linear(dim, views * num_layers)

    def forward(self, x: Tensor, hiddens: tuple[Tensor, ...]) -> Tensor:
        """`x` `(b, n, D)` (the current input, the last of `hiddens`) to `(b, n, D)`, or `(3, b, n, D)`."""
        if len(hiddens) != self.num_layers:
            raise ValueError(f"integrate_layers: expected {self.num_layers} earlier inputs, got {len(hiddens)}")
        # $\operatorname{RMSNorm}(x) W + c$, normalised over the layers
        logits = rearrange(self.to_weights(self.norm(x)), "b n (v l) -> v b n l", v=self.views)
        weights = logits.softmax(dim=-1) if self.softmax else torch.relu(logits)
        # $\sum_k w_k x^{(k)}$
        out = einsum(torch.stack(hiddens), weights, "l b n d, v b n l -> v b n d")
        return out[0] if self.views == 1 else out


def make_layer_integrations(o, kinds: tuple[str, ...]) -> Optional[nn.ModuleList]:
    """One integration per sublayer (three views for self-attention after the first), or `None`; with
    `attn_aggregated_residuals`, the attention residuals ([aggregated residuals](aggregated_residuals.md))."""
    if o.attn_aggregated_residuals:
        from .aggregated_residuals import make_aggregations

        return make_aggregations(o, kinds)
    if not o.integrate_layers:
        return None
    out, first = [], True
    for i, kind in enumerate(kinds):
        views = 3 if kind == "a" and not first else 1
        first = first and kind != "a"
        out.append(LayerIntegration(o.dim, i + 1, views, o.layer_integrate_use_softmax))
    return nn.ModuleList(out)


@rule("stack")
def _integration_keywords(o) -> None:
    if not o.integrate_layers:
        if not o.layer_integrate_use_softmax:
            raise ValueError("layer_integrate_use_softmax=False: only meaningful with integrate_layers=True")
        return
    for name in ("layers_execute_order", "weight_tie_layers", "reversible", "layer_dropout",
                 "shift_tokens", "unet_skips"):
        value = getattr(o, name)
        off = value is None or value is False or (not isinstance(value, (bool, tuple, list)) and value == 0)
        if not off:
            raise ValueError(f"integrate_layers and {name} cannot be combined: " + {
                "layers_execute_order": "each sublayer's integration reads the sublayers before it in built order",
                "weight_tie_layers": "each sublayer's integration reads the sublayers before it in built order",
                "reversible": "a reversible stack keeps no earlier inputs",
                "layer_dropout": "a skipped sublayer leaves no input for the later ones to read",
                "shift_tokens": "token shift acts on one branch input, LIMe gives self-attention three",
                "unet_skips": "both route earlier inputs to later blocks; use one",
            }[name])
    if o.attn.collab_heads:
        raise ValueError("integrate_layers and attn_collab_heads cannot be combined: collaborative heads project "
                         "queries and keys from one input")
