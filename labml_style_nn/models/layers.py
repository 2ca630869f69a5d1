r"""
# The layer stack: `AttentionLayers`, `Encoder`, `Decoder`, `CrossAttender`

A transformer body is a sequence of blocks, each a sublayer on a residual connection:
self-attention (`a`), cross-attention (`c`) and feed-forward (`f`).  This file runs that sequence.
It does three things per forward pass that no single block can do:

1. **Positions, once.**  Rotary angles, the T5 or ALiBi bias and position-infused sinusoids depend
   only on positions, so they are computed once and shared by every self-attention layer
   ([positions, once per forward pass](stack_positions.md)).
2. **State across layers.**  Residual attention carries scores from one layer to the next.
3. **State across calls.**  A Transformer-XL memory (one tensor per self-attention layer) or a
   key/value cache (one entry per block) makes the current tokens continue an earlier sequence:
   positions start at the number of tokens that came before, $m$.

Everything else (the block order, the norms, the techniques inside attention) is built from the
options by `models/build.py` and `models/layout.py`.  Three pages hold the parts of the forward
pass that are not the loop itself: [the stack's inputs](stack_inputs.md) (the checks of every
argument, and how one given for the whole stack becomes one per layer),
[positions](stack_positions.md) and [one block](run_block.md) (branch input, sublayer, residual:
the body of the loop).

The keyword API is that of x-transformers:

```python
Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True, attn_num_mem_kv=16, ff_glu=True)
```

`Encoder` is bidirectional, `Decoder` causal, `CrossAttender` has only cross-attention and
feed-forward blocks.  `cross_attend=True` adds cross-attention to an encoder or a decoder.  They all
work on embeddings directly: `Encoder(dim=512, depth=6)(x, mask=mask)` with `x` of shape
`(b, n, 512)`.

`verbose` (default `True`, as in x-transformers) is where x-transformers prints its diagnostics.
This library prints nothing; with `verbose=True` the one diagnostic x-transformers' stack logs,
rotary embeddings on fewer than 32 features per head, is a `UserWarning` instead, and
`verbose=False` silences it.  Everything else x-transformers would print about its choices is in
the keyword reference (`help(Decoder)`).

Shapes: `b` batch, `n` tokens, `D` model width, `m` earlier tokens (memory or cache), `j` context
tokens.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .. import keyword_reference
from ..attention.extension_points import SharedAttentionInputs
from ..attention.fast_attention import keeps_no_weights
from ..attention.residual_attention import ResidualScores
from ..checks import check_cache
from ..generation.intermediates import (
    AttentionRecord,
    LayerIntermediates,
    drop_cached,
    left_pad_mask,
    new_shared_cache,
    resume,
    snapshot,
)
from ..generation.lean_step import lean_applies, lean_step
from ..norms.adaptive_norm import ConditionMLP, needs_condition, prepare_condition
from ..options import LayerOptions, parse_layer_options
from ..positional.cross_rotary import cross_rotary_inputs
from ..residual.depth_scale_residual import depth_scaled_init
from ..residual.gated_multi_residual import attach_gated_multi_residual
from ..residual.hyper_connections import attach_hyper_connections, stream_input
from ..residual.input_injection import InputInjection
from ..residual.reversible import StackInputs, reversible_pairs, run_reversible
from ..residual.value_residual import attach_value_mixes
from ..residual.zero_init_branch import zero_init_branches
from .block_inputs import check_transforms, default_block_length, transform_block_input
from .build import make_block, make_norm
from .context_dropout import drop_context_tokens
from .initialisation import order_rotary_rows_as_x_transformers
from .kv_input_residuals import kv_residuals_per_layer
from .layer_dropout import drop_probabilities, skip_block
from .layer_integration import make_layer_integrations
from .layer_sharing import built_depth, execution_order
from .layout import branch_steps, layer_types, shift_amounts
from .run_block import run_block, stream_hidden
from .softclamp_output import softclamp
from .stack_inputs import (
    additional_kvs,
    check_mem_masks,
    check_stack_inputs,
    mask_as_bias,
    per_layer,
    route_to_top,
    with_memory_mask,
)
from .stack_positions import position_inputs, positional_modules
from .unet_skips import make_unet_skips


class AttentionLayers(nn.Module):
    r"""A stack of attention and feed-forward blocks configured by x-transformers' keywords.

    Args:
        dim: model width $D$.
        depth: number of layers $N$.
        heads: attention heads.
        causal: each token sees only itself and earlier tokens.
        cross_attend: add a cross-attention block after each self-attention block.
        only_cross: cross-attention instead of self-attention (`CrossAttender`).
        **kwargs: any keyword of x-transformers (`attn_*`, `ff_*`, `rotary_pos_emb`, ...); see
            `labml_style_nn/options.py`.  Unknown keywords raise `TypeError`.
    """

    def __init__(self, dim: int, depth: Optional[int] = None, heads: int = 8, causal: bool = False,
                 cross_attend: bool = False, only_cross: bool = False, **kwargs):
        super().__init__()
        if kwargs.get("rotary_xpos"):
            # xPos is rotary embeddings with a decay (`positional/xpos.py`), as in x-transformers.
            kwargs["rotary_pos_emb"] = True
        if depth is None and kwargs.get("custom_layers") is not None:
            # A custom sequence gives the depth itself (`models/layout.py`).
            depth = len(kwargs.get("layers_execute_order") or kwargs["custom_layers"])
        o = parse_layer_options(type(self).__name__, dim, depth, dict(  # type: ignore[arg-type]
            heads=heads, causal=causal, cross_attend=cross_attend, only_cross=only_cross, **kwargs))
        self.options: LayerOptions = o
        self.dim, self.causal = dim, o.causal
        # The blocks the layout builds, then the order they run in: a block that runs twice shares its
        # weights (`weight_tie_layers`, `layers_execute_order`: `models/layer_sharing.py`).
        built_types = layer_types(o.replace(depth=built_depth(o)))
        steps = branch_steps(built_types, o.macaron)
        shifts = shift_amounts(o, len(built_types))
        # `ff_index` counts the feed-forward blocks before this one (mixtures of experts may start later).
        built = [make_block(o, kind, step, shift, ff_index=built_types[:i].count("f"))
                 for i, (kind, step, shift) in enumerate(zip(built_types, steps, shifts, strict=True))]
        # The residual stream (layers-b): value residual mixes, branch output initialisation.
        attach_value_mixes(o, built_types, built)
        # Hyper-connections: several residual streams, each block's residual sum a learned mixing.
        self.streams = attach_hyper_connections(o, built)
        # Gated multi residuals: streams read through elementwise gates (`residual/gated_multi_residual.py`).
        self.streams = self.streams or attach_gated_multi_residual(o, built)
        if o.zero_init_branch_output:
            zero_init_branches(built)
        elif o.depth_scale_residual is True:
            depth_scaled_init(o, built_types, built)
        self.execute_order = execution_order(o, len(built))
        self.layer_types = tuple(built_types[i] for i in self.execute_order)
        self.blocks = nn.ModuleList(built[i] for i in self.execute_order)
        # Stochastic depth: the skip probability of each run (`models/layer_dropout.py`).
        probs = drop_probabilities(o, len(built))
        self.layer_dropouts = [probs[i] for i in self.execute_order]
        self.num_self_attn = self.layer_types.count("a")
        self.has_cross = "c" in self.layer_types
        # Pre-norm stacks end with a norm (unless `pre_norm_has_final_norm=False`); post-norm and
        # pre-and-post-norm blocks are already normalised; ReZero has none; gated multi residuals always keep it.
        self.final_norm = make_norm(o) if (o.pre_norm and o.pre_norm_has_final_norm and not o.pre_and_post_norm
                                           and not o.use_rezero) or o.gated_multi_residual else nn.Identity()
        # Adaptive norms and scales read a condition vector passed at call time (`norms/adaptive_norm.py`).
        self.needs_condition, self.dim_condition = needs_condition(o), o.dim_condition or dim
        self.condition_mlp = ConditionMLP(self.dim_condition, o.adaptive_condition_mlp_expansion) \
            if self.needs_condition and o.adaptive_condition_mlp else None

        # Positional modules, shared by every self-attention layer (`models/stack_positions.py`).
        self.rotary, self.rel_pos, self.alibi, self.pia, self.polar = positional_modules(o, dim, heads)
        # Rotated query/key rows drawn in x-transformers' pairing order: the same distribution, and one seed
        # builds x-transformers' model (`models/initialisation.py`).
        if self.rotary is not None:
            order_rotary_rows_as_x_transformers(built, self.rotary.dim)
        # `reversible=True`: the blocks run as couplings $y_1 = x_1 + F(x_2)$, $y_2 = x_2 + G(y_1)$
        # (`residual/reversible.py`); `reversible_recompute = False` keeps their activations instead.
        self.reversible_pairs = reversible_pairs(self.layer_types) if o.reversible else None
        self.reversible_recompute = True
        # The stack's input projected into every branch input (`residual/input_injection.py`) and the
        # U-ViT long skips (`models/unet_skips.py`).
        self.input_injection = InputInjection(dim, o.learned_reinject_input_gate) if o.reinject_input else None
        self.unet_skips = make_unet_skips(o, self.layer_types)
        # LIMe: each sublayer reads a per-token mix of every earlier sublayer's input (`models/layer_integration.py`).
        self.integrations = make_layer_integrations(o, self.layer_types)
        # Sublayers per block, for `transform_block_inputs` and `block_hiddens` (`models/block_inputs.py`).
        self.len_default_block = default_block_length(o)

    @property
    def has_relative_positions(self) -> bool:
        return self.options.has_relative_positions

    @property
    def disables_abs_pos_emb(self) -> bool:
        """Whether a wrapper leaves out absolute positions (`disable_abs_pos_emb`, `positional/absolute.py`).

        By default, as in x-transformers, when the stack rotates queries and keys (rotary, xPos, PoPE) or has
        T5's bias; ALiBi and the dynamic bias keep them (`disable_abs_pos_emb=True` leaves them out)."""
        o = self.options
        if o.disable_abs_pos_emb is not None:
            return o.disable_abs_pos_emb
        return o.rel_pos_bias or o.rotary_pos_emb or o.polar_pos_emb or o.position_infused_attn

    def shared_inputs(self, n: int, offset: int, keys_from_zero: bool, device,
                      positions: Optional[Tensor] = None, batch: int = 1) -> SharedAttentionInputs:
        """Rotary angles, score bias and position-infused sinusoids for this forward pass
        ([positions, once per forward pass](stack_positions.md))."""
        return position_inputs(self, n, offset, keys_from_zero, device, positions, batch)

    #
    # ## Forward
    def forward(self, x: Tensor, *, context: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None, mems: Optional[list[Tensor]] = None,
                cache=None, return_hiddens: bool = False, attn_sink: Optional[list] = None,
                condition: Optional[Tensor] = None,
                pos: Optional[Tensor] = None, seq_start_pos: Optional[Tensor] = None,
                input_not_include_cache: bool = False, keep_intermediates: bool = True,
                ff_deep_embeds: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None,
                self_attn_additional_kv=None, cross_attn_kv_residuals: Optional[Tensor] = None,
                self_attn_kv_residuals: Optional[Tensor] = None, context_pos: Optional[Tensor] = None,
                transform_block_inputs=None, mem_masks: Optional[list[Tensor]] = None):
        r"""Run the stack on embeddings `x` `(b, n, D)`.

        Args:
            context: `(b, j, dim_context)` for cross-attention layers.
            mask: `(b, n)` bool, true for real tokens.
            context_mask: `(b, j)` bool, true for real context tokens.
            mems: Transformer-XL memories, one `(b, m, D)` per self-attention layer.
            mem_masks: with `mems`, one `(b, m)` bool per self-attention layer, true for the memory
                positions its queries may see (x-transformers' spelling; default all visible).
            cache: a `generation.kv_cache.LayersCache` for incremental decoding.
            return_hiddens: also return the residual stream each self-attention layer reads, before its
                pre-norm (x-transformers' `hiddens`, the next memories).
            attn_sink: a list that receives every attention layer's weights `(b, h, i, j)`, in
                order (the explicit path runs, so inspection costs speed).
            condition: `(b, dim_condition)` or `(b, n, dim_condition)`, the vector adaptive norms and
                scales read (`use_adaptive_layernorm`, ...); required by such a stack, refused otherwise.
            pos: `(n,)` integer positions of the tokens for the rotary, ALiBi, T5 and position-infused
                schemes (default $m \dots m + n - 1$); one row per sequence `(b, n)` for rotary and ALiBi,
                or `(b, h, n)` per ALiBi head ([custom positions](../positional/custom_positions.md)).
            seq_start_pos: `(b,)` first real token of each left-padded row; earlier keys are masked.
            input_not_include_cache: with `cache=` intermediates, `x` holds only the new tokens
                (x-transformers' default feeds the whole sequence and the cached part is dropped).
            keep_intermediates: with `return_hiddens`, a new key/value cache and the attention
                weights are kept in the intermediates (wrappers, which build their own, pass False).
            ff_deep_embeds: `(b, n, L, D)` gains of the $L$ feed-forward blocks' outputs
                ([deep embeddings](../wrapping/deep_embed.md)).
            attn_mask: `(i, j)` or `(b, i, j)` bool, which keys each query of self-attention may see
                (true: visible), on top of `mask` and causality (e.g. the prefix decoder's).
            self_attn_additional_kv: `(k, v)` pairs `(b, h_kv, a, d)`, prepended to the keys of the
                top self-attention layers (one pair each, the last pair to the top layer), or the
                intermediates of another causal stack of the same shape, whose cached keys it takes.
            cross_attn_kv_residuals: `(b, j, dim_context)`, or one per cross-attention layer
                `(L, b, j, dim_context)`, added to the context before its key/value projections.
            self_attn_kv_residuals: `(b, n|1, D)`, or `(L', b, n|1, D)` for the first $L'$ layers, added to
                the first self-attention layers' key/value input ([its page](kv_input_residuals.md)).
            context_pos: `(j,)` integer positions of the context: cross-attention then rotates queries
                and keys by their positions ([cross rotary](../positional/cross_rotary.md)).
            transform_block_inputs: functions of the stream at the inputs of blocks 2, 3, ...: a dict
                by block depth or one `fn(depth, stream)` ([block inputs](block_inputs.md)).

        Returns:
            `(b, n, D)`, or `(out, intermediates)` with `return_hiddens=True`: x-transformers'
            `LayerIntermediates` (`generation/intermediates.py`), whose `hiddens` are the memories
            and which, passed back as `cache=`, continues the sequence.
        """
        # x-transformers' cache spelling: intermediates of an earlier call (generation/intermediates.py).
        shared_kv, record = None, None
        if isinstance(cache, LayerIntermediates):
            if not input_not_include_cache:
                x, mask = drop_cached(x, mask, cache.cache_length)
            shared_kv, cache = resume(cache, x.shape[1])
        elif cache is None and return_hiddens and keep_intermediates and self._keeps_cache(mems):
            shared_kv = new_shared_cache(self, x.shape[0], x.shape[1])
            cache = shared_kv.cache
        if return_hiddens and keep_intermediates and attn_sink is None and shared_kv is not None \
                and shared_kv.cache.offset == 0 and not keeps_no_weights(self):
            attn_sink = record = AttentionRecord()
        if seq_start_pos is not None:
            mask = left_pad_mask(x, mask, seq_start_pos, cache.offset if cache is not None else 0)
        check_stack_inputs(self, x, mask, context, context_mask, mems, cache)
        check_mem_masks(mem_masks, mems)
        if not torch.compiler.is_compiling():
            check_cache("cache", cache)
        n = x.shape[1]
        condition = prepare_condition(condition, self.needs_condition, self.dim_condition, x.shape[0], n,
                                      self.condition_mlp)
        # $m$ tokens came before: the memory, or what the cache holds.
        offset = mems[0].shape[1] if mems else (cache.offset if cache is not None else 0)
        self_mask = mask
        if mems and mask is not None:
            self_mask = F.pad(mask, (offset, 0), value=True)  # memory positions are real tokens
        if cache is not None:
            self_mask = cache.extend_mask(mask, n)
        # A cache slices positional tables it computed once, instead of recomputing them per step.
        if pos is not None and (cache is not None or mems):
            raise ValueError("pos: custom positions cannot be combined with a cache or memories, whose positions continue")
        shared = cache.shared_inputs(self, n, x.device) if cache is not None and not mems \
            else self.shared_inputs(n, offset, keys_from_zero=bool(mems), device=x.device, positions=pos,
                                 batch=x.shape[0])
        if self.polar is not None and shared.polar is None:
            raise ValueError(f"cache: {type(cache).__name__} does not carry PoPE's phases (polar_pos_emb); "
                             "decode with a LayersCache")

        if attn_mask is not None:
            if cache is not None or mems:
                raise ValueError("attn_mask: a query-by-key mask cannot be combined with a cache or memories")
            shared = replace(shared, attn_bias=mask_as_bias(attn_mask, shared.attn_bias, n))
        if cache is not None and mems is None and context is None and condition is None and attn_sink is None \
                and self_attn_additional_kv is None and ff_deep_embeds is None and cross_attn_kv_residuals is None \
                and shared.qk_pos is None and shared.polar is None and not torch.compiler.is_compiling() \
                and transform_block_inputs is None and self_attn_kv_residuals is None and context_pos is None \
                and lean_applies(self, cache, n):
            # A plain pre-norm stack's one-token step, without the general loop (`generation/lean_step.py`)
            hiddens, memory_inputs = [], []
            x = lean_step(self, x, self_mask, shared, cache, hiddens, memory_inputs)  # (after the final norm)
            cache.advance(n)
            return (x, self._intermediates(shared_kv, hiddens, memory_inputs, x, record)) if return_hiddens else x
        if self.reversible_pairs is not None and (self_attn_additional_kv is not None or ff_deep_embeds is not None
                                                  or cross_attn_kv_residuals is not None
                                                  or self_attn_kv_residuals is not None or context_pos is not None):
            raise ValueError("reversible: the coupled blocks take no self_attn_additional_kv, ff_deep_embeds, "
                             "cross_attn_kv_residuals, self_attn_kv_residuals or context_pos")
        check_transforms(transform_block_inputs)
        if transform_block_inputs is not None and (self.reversible_pairs is not None or self.streams is not None):
            raise ValueError("transform_block_inputs: a reversible stack or hyper-connections have no single "
                             "stream between blocks")
        kv_res = iter(kv_residuals_per_layer(self_attn_kv_residuals, self.num_self_attn, x.shape[0], n, self.dim))
        cross_shared = None
        if context_pos is not None:
            if not self.has_cross:
                raise ValueError("context_pos: this stack has no cross-attention layers (set cross_attend=True)")
            assert context is not None  # checked with the inputs
            if pos is not None and pos.dim() != 1:
                raise ValueError(f"context_pos: takes query positions pos of shape ({n},), got {tuple(pos.shape)}")
            query_pos = pos if pos is not None else torch.arange(offset, offset + n, device=x.device)
            cross_shared = cross_rotary_inputs(self.rotary, query_pos, context_pos, context.shape[1])
        if self.reversible_pairs is not None:
            # No hiddens: keeping each layer's input is what a reversible stack avoids.
            x = run_reversible(
                self.blocks, self.reversible_pairs, x, StackInputs(self_mask, shared, context, context_mask),
                recompute=self.reversible_recompute, caches=cache.blocks if cache is not None else None,
                attn_sink=attn_sink)
            if self.options.softclamp_output:
                x = softclamp(x, self.options.softclamp_output_value)
            x = self.final_norm(x)
            if cache is not None:
                cache.advance(n)
            return (x, self._intermediates(shared_kv, [], [], x, record)) if return_hiddens else x

        if self.training and self.options.cross_attn_tokens_dropout and context is not None:
            # One subset of the context per forward pass (`models/context_dropout.py`).
            context, context_mask = drop_context_tokens(context, context_mask, self.options.cross_attn_tokens_dropout)

        res_self = ResidualScores(self.options.residual_attn)
        res_cross = ResidualScores(self.options.cross_residual_attn)
        mems_iter = iter(mems) if mems else None
        mem_masks_iter = iter(mem_masks) if mem_masks is not None else None
        extra_kv = iter(route_to_top(additional_kvs(self_attn_additional_kv), self.num_self_attn))
        cross_res = iter(per_layer(cross_attn_kv_residuals, self.layer_types.count("c")))
        deep_iter = iter(ff_deep_embeds.unbind(dim=2)) if ff_deep_embeds is not None else None
        hiddens, block_hiddens, memory_inputs = [], [], []
        # The first self- and cross-attention layer's values, for value residual learning.
        first_values: Optional[dict[str, Optional[Tensor]]] = \
            {"a": None, "c": None} if self.options.add_value_residual else None
        inject = self.input_injection(x) if self.input_injection is not None else None
        kept: list[Tensor] = []
        layer_inputs: list[Tensor] = []
        if self.streams is not None:
            x = self.streams.expand(x)  # (b, n, s, D)
        checkpointing = self.options.gradient_checkpointing and self.training and cache is None \
            and torch.is_grad_enabled() and attn_sink is None
        for i, block in enumerate(self.blocks):
            if i and i % self.len_default_block == 0:
                # Block $k - 1$ ends here; block $k$ receives $f_k(x)$ (`models/block_inputs.py`).
                block_hiddens.append(x)
                x = transform_block_input(transform_block_inputs, i // self.len_default_block + 1, x)
            block_cache = cache.blocks[i] if cache is not None else None
            mem = next(mems_iter) if mems_iter is not None and block.kind == "a" else None
            block_mask = self_mask
            if mem_masks_iter is not None and block.kind == "a":
                block_mask = with_memory_mask(next(mem_masks_iter), mask, n)  # (b, m + n)
            res = res_self if block.kind == "a" else res_cross
            block_context = context
            if block.kind == "c":
                residual = next(cross_res)
                block_context = context if residual is None else context + residual
            # Per-block inputs from the caller, drawn before stochastic depth may skip the block.
            deep = next(deep_iter) if deep_iter is not None and block.kind == "f" else None
            additional = next(extra_kv) if block.kind == "a" else None
            kv_residual = next(kv_res) if block.kind == "a" else None
            if self.unet_skips is not None:
                x = self.unet_skips.keep(i, x, kept)
            if cache is None and skip_block(self.layer_dropouts[i], self.training):
                # Stochastic depth: the stream passes the block unchanged; an XL memory still gets its input.
                if block.kind == "a":
                    x_in = stream_hidden(block, x)
                    hiddens.append(x_in)
                    memory_inputs.append(x_in if inject is None else x_in + inject)
                continue
            if block.kind == "a":
                # The residual stream before the pre-norm: the next segment's memory (the block norms it).
                hiddens.append(stream_hidden(block, x))
            kind = self.layer_types[i]
            values = first_values[kind] if first_values is not None and kind != "f" else None
            integrate = None
            if self.integrations is not None:
                # With several residual streams, what a sublayer reads is its hyper-connection's mix of them
                # (computed again in the block), as x-transformers keeps it.
                layer_inputs.append(x if self.streams is None else stream_input(block, x)[0])
                integrate = (self.integrations[i], tuple(layer_inputs))
            args = (block, x, block_mask, shared, mem, block_cache, block_context, context_mask, res.prev, res.enabled,
                    attn_sink, condition, inject, first_values is not None, values, integrate, deep, additional,
                    kv_residual, cross_shared)
            if checkpointing:
                # A recomputed block must save what it saved the first time, so it builds its own masks.
                x, scores, h, values = checkpoint(run_block, *args, fresh_masks=True, use_reentrant=False)
            else:
                x, scores, h, values = run_block(*args)
            if first_values is not None and kind != "f":
                first_values[kind] = values
            if block.kind == "a":
                memory_inputs.append(h)
                res_self.update(scores)
            elif block.kind == "c":
                res_cross.update(scores)
        if self.options.softclamp_output:
            # $v \tanh(x / v)$ before the final norm (`models/softclamp_output.py`)
            x = softclamp(x, self.options.softclamp_output_value)
        if self.streams is not None:
            x = self.streams.reduce(x)  # $\sum_t h_t$
        x = self.final_norm(x, condition=condition) if self.needs_condition and self.final_norm_reads_condition \
            else self.final_norm(x)
        if cache is not None:
            cache.advance(n)
        if not return_hiddens:
            return x
        intermediates = self._intermediates(shared_kv, hiddens, memory_inputs, x, record)
        intermediates.block_hiddens = block_hiddens + [x]
        return x, intermediates

    @property
    def final_norm_reads_condition(self) -> bool:
        return getattr(self.final_norm, "needs_condition", False)

    def _keeps_cache(self, mems) -> bool:
        """Whether `return_hiddens` keeps keys and values to continue from: a causal stack, at inference."""
        return self.causal and not mems and not (self.training and torch.is_grad_enabled()) \
            and not self.options.mv_split_residual

    def _intermediates(self, shared_kv, hiddens, memory_inputs, x, record) -> LayerIntermediates:
        attn = record.intermediates(self.layer_types) if record is not None else []
        return snapshot(shared_kv, hiddens=hiddens, memory_inputs=memory_inputs, last_hidden=x,
                        attn_intermediates=attn)


class Encoder(AttentionLayers):
    """A bidirectional stack: every token sees every other real token.

    Example: `Encoder(dim=512, depth=6, heads=8)` maps embeddings `(b, n, 512)` to `(b, n, 512)`;
    `TransformerWrapper(num_tokens=..., max_seq_len=..., attn_layers=Encoder(...))` adds the token
    embeddings and the output projection.
    """

    def __init__(self, **kwargs):
        if "causal" in kwargs:
            raise TypeError("Encoder() is always bidirectional and takes no 'causal'; use Decoder for causal attention")
        super().__init__(causal=False, **kwargs)


class Decoder(AttentionLayers):
    r"""A causal stack: token $i$ sees only tokens $j \le i$.

    Example: `Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True)` maps embeddings
    `(b, n, 512)` to `(b, n, 512)`; `TransformerWrapper(num_tokens=..., max_seq_len=...,
    attn_layers=Decoder(...))` makes it a language model.
    """

    def __init__(self, **kwargs):
        if "causal" in kwargs:
            raise TypeError("Decoder() is always causal and takes no 'causal'; use Encoder for bidirectional attention")
        super().__init__(causal=True, **kwargs)


class CrossAttender(AttentionLayers):
    """Cross-attention and feed-forward blocks only: queries from `x`, keys and values from `context`."""

    def __init__(self, **kwargs):
        if "only_cross" in kwargs:
            raise TypeError("CrossAttender() always has only cross-attention and takes no 'only_cross'")
        super().__init__(only_cross=True, **kwargs)


# `help(Decoder)` opens with the class's summary and the keywords most used, then lists every
# keyword with its type, default, page and conflicts, generated from options.py by
# keyword_reference.py (on first use, so importing stays fast).
_MOST_USED = """

Most used keywords (every keyword, with its page and conflicts, is listed after these):

    dim, depth, heads          model width, number of layers, attention heads
    attn_dim_head              width of each head (default 64)
    rotary_pos_emb=True        rotary positions; or alibi_pos_emb=True (ALiBi), rel_pos_bias=True (T5 bias)
    ff_glu=True, ff_mult       gated feed-forward (GLU); feed-forward width as a multiple of dim
    attn_kv_heads              fewer key/value heads than query heads (grouped-query attention)
    use_rmsnorm=True           RMSNorm instead of LayerNorm (use_scalenorm=True: ScaleNorm)
    attn_dropout, ff_dropout   dropout probabilities
    cross_attend=True          a cross-attention block after each self-attention block (context=...)
"""
for _cls in (AttentionLayers, Encoder, Decoder):
    _cls.__doc__ = inspect.cleandoc(_cls.__doc__ or "") + _MOST_USED
keyword_reference.attach(AttentionLayers)
keyword_reference.attach(Encoder, skip=("causal",))
keyword_reference.attach(Decoder, skip=("causal",))
keyword_reference.attach(CrossAttender, skip=("only_cross", "cross_attend"))
