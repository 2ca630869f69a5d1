r"""
# One block of the stack: branch input, sublayer, residual

The [layer stack](layers.md) is a loop over blocks; this page is the body of that loop.  A block
(`residual/residual.py`, built by `models/build.py`) holds a sublayer $f$ (self-attention,
cross-attention or feed-forward) and the residual plumbing around it.  In the plain pre-norm case,
one step of the residual stream is

$$x \leftarrow x + f\big(\operatorname{Norm}(x)\big),$$

and every technique of the residual stream changes one of its three parts:

* **what the branch reads**: a mix of several streams (hyper-connections), a mix of every earlier
  sublayer's input (LIMe), the stack's input added to it (input injection), then the block's
  pre-norm and token shift (`block.branch_input`);
* **the sublayer**, with what it needs from the caller: a Transformer-XL memory and the shared
  positions for self-attention, the context for cross-attention, deep-embedding gains for
  feed-forward, the first layer's values for value residual learning;
* **how the output rejoins the stream**: LayerScale, sandwich norm, ReZero, then a sum, a gate or a
  scaled sum, then a post-norm (`block.join`, `residual/residual.py`).

The block also returns the stream it read before its pre-norm: the memory of the next
Transformer-XL segment (x-transformers' `hiddens`).

Shapes: `b` batch, `n` tokens, `D` model width, `s` residual streams, `m` memory tokens.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor

from ..residual.hyper_connections import stream_input
from ..residual.value_residual import ValueResidual


def branch_input(block, x, inject, mask, block_cache, condition):
    """What the sublayer of `block` sees, with the reinjected input added (`residual/input_injection.py`)."""
    return block.branch_input(x if inject is None else x + inject, mask=mask,
                              shift_state=block_cache.shift if block_cache is not None else None, condition=condition)


def stream_hidden(block, x: Tensor) -> Tensor:
    """The residual stream a self-attention block reads, before its pre-norm `(b, n, D)`: x-transformers'
    `hiddens` (with hyper-connections, the mix its queries read)."""
    h = stream_input(block, x)[0]
    return h[0] if h.dim() == 4 else h


def run_block(block, x, mask, shared, mem, block_cache, context, context_mask, prev_scores, keep_scores,
              attn_sink=None, condition=None, inject=None, value_residual=False, first_values=None,
              integrate=None, deep_embed=None, additional_kv=None, kv_residual=None, cross_shared=None,
              fresh_masks=False):
    """One block: branch input, sublayer, residual.  Returns `(x, scores, memory_input, first_values)`, where
    `memory_input` is what the queries' branch read from the stream before the pre-norm (an XL memory).

    `inject` is added to the branch input only (input injection); with `value_residual`, `first_values`
    are the values of the first attention layer of the block's kind so far (`None` before it), and the
    returned ones are those after this block."""
    if fresh_masks:
        shared = replace(shared, masks={})
    # With hyper-connections the branch reads a mix of the streams (`residual/hyper_connections.py`).
    x_in, residual = stream_input(block, x)
    if integrate is not None:
        # LIMe: $\sum_k w_k x^{(k)}$ over the earlier sublayers' inputs (three mixes for self-attention)
        integration, earlier = integrate
        x_in = integration(x_in, earlier)
    memory_input = x_in if inject is None else x_in + inject
    h = branch_input(block, x_in, inject, mask, block_cache, condition)
    scores = None
    # A fresh carrier per call, so that a block recomputed for gradient checkpointing mixes the same values.
    carrier = ValueResidual(first_values) if value_residual and block.kind != "f" else None
    if block.kind == "f":
        out = block.fn(h)
        if deep_embed is not None:
            # $\operatorname{FF}^{(l)}(h_t) \odot g^{(l)}_{x_t}$: the token's gain for this block
            out = out * deep_embed[:, -out.shape[1]:].to(out.dtype)
    else:
        attn_cache = block_cache.attn if block_cache is not None else None
        if block.kind == "a":
            # Three inputs, for queries, keys and values (hyper-connections' `qkv_receive_diff_residuals`)
            q_in, views = (h[0], (h[1], h[2])) if h.dim() == 4 else (h, None)
            if kv_residual is not None:
                # $k = W_k(\bar h + r)$, $v = W_v(\bar h + r)$ (`models/kv_input_residuals.py`)
                k_in, v_in = views if views is not None else (q_in, q_in)
                views = (k_in + kv_residual, v_in + kv_residual)
            if mem is not None:
                mem = block.memory_input(mem, condition)  # the memory holds the stream before the pre-norm
            out, scores = block.fn(q_in, mask=mask, shared=shared, mem=mem, cache=attn_cache,
                                   prev_scores=prev_scores, return_scores=keep_scores, attn_sink=attn_sink,
                                   value_residual=carrier, kv_views=views,
                                   **({} if additional_kv is None else {"additional_kv": additional_kv}))
            memory_input = memory_input[0] if memory_input.dim() == 4 else memory_input
        else:
            # The queries' own padding too (inverted attention lets the queries compete for each key).
            query_mask = None if mask is None else mask[:, -h.shape[1]:]
            out, scores = block.fn(h, context=context, context_mask=context_mask, cache=attn_cache, mask=query_mask,
                                   prev_scores=prev_scores, return_scores=keep_scores, attn_sink=attn_sink,
                                   value_residual=carrier,
                                   shared=None if cross_shared is None else replace(cross_shared, masks={}))
    # MV-Split's token means leave out padding (`residual/mv_split_residual.py`).
    reads = {"mask": mask} if getattr(block.residual, "reads_mask", False) else {}
    return (block.join(out, residual, condition, **reads), scores, memory_input,
            carrier.first if carrier is not None else None)
