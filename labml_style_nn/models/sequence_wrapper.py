r"""
# The shared wrapper: positions, memory tokens, memories and the cache

What [`TransformerWrapper`](wrappers.md) and
[`ContinuousTransformerWrapper`](continuous_wrapper.md) have in common once their inputs are
embedded: the techniques that live *around* the stack and do not care whether the inputs were token
ids or vectors.

* **Absolute positions.**  $e_t = x_t + p_t$ for the embedded input $x_t$, with $p_t$ a learned
  table of `max_seq_len` rows (x-transformers' default), fixed sinusoids or scaled sinusoids.  They
  are off by default when the stack already has a relative scheme (rotary, ALiBi, T5), so that such
  models run on sequences longer than `max_seq_len` and memories and caches stay consistent, and
  when it uses position infused attention, whose point is that values carry no position;
  `use_abs_pos_emb=True` turns them back on.  `pos=` gives positions of one's own and
  `seq_start_pos=` starts each left-padded row's positions at its first real token: $p_{t - s_b}$.
* **Memory tokens** ([memory tokens](../memory/memory_tokens.md)): $M$ learned vectors in front of
  every sequence (or before every block of tokens, [interspersed](../memory/interspersed_memory_tokens.md)),
  stripped again from the outputs.
* **Transformer-XL memories** ([XL recurrence](../memory/xl_recurrence.md)): each layer's inputs of
  the previous segments, kept up to `max_mem_len`, optionally routed down the stack
  (`shift_mem_down`, enhanced recurrence).
* **The cache**, in both spellings: this library's `LayersCache` written in place, or
  x-transformers' [intermediates](../generation/intermediates.md) of an earlier call.
* **What comes back**: the output, then the memories, the attention maps or the intermediates, as
  they were asked for (`_finish`).

The wrappers call `_run` with the embeddings of the stack's width `(b, n, D)` and get the final
hidden states `(b, n, D)` back; memory tokens go in and come out inside it, and so do the repeated
passes of [recycling](../wrapping/recycling.md) and the [looped LM](../wrapping/looped.md).

**Differences from x-transformers.**  None in when absolute positions are added: as in
x-transformers 2.31.10, the stack's `disable_abs_pos_emb` decides (off beside rotary, xPos, PoPE
and T5's bias, kept beside ALiBi and the dynamic bias), and `use_abs_pos_emb=False` turns them off.
With `return_mems=True` both wrappers return the previous memories followed by this segment's
streams, cut to the last `max_mem_len` (Transformer-XL's recurrence); x-transformers 2.31.10's
continuous wrapper keeps only this segment's, so there a segment shorter than `max_mem_len` forgets
the ones before it.

Shapes: `b` batch, `n` tokens, `p` prepended embeddings, `D` model width, `E` embedding width, `M`
memory tokens.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..attention.fast_attention import keeps_no_weights
from ..checks import check_int, check_mask, check_probability
from ..generation.intermediates import AttentionRecord, LayerIntermediates, new_shared_cache, resume, snapshot
from ..memory.interspersed_memory_tokens import intersperse, strip_interspersed
from ..memory.memory_tokens import MemoryTokens
from ..memory.xl_recurrence import shift_memories_down, update_memories
from ..positional.absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from ..wrapping.embeddings import ScaledSinusoidalEmbedding, l2norm
from ..wrapping.recycling import recycle
from .layers import AttentionLayers


def cache_started(cache) -> bool:
    """Whether a key/value cache already holds tokens.

    Its `offset` counts them: a Python int, or in a static cache (`generation/static_cache.py`) a
    tensor once it holds any, so that a compiled step reads the count as data.
    """
    if isinstance(cache, LayerIntermediates):  # x-transformers' spelling: a snapshot of some tokens
        return cache.shared_cache is not None and cache.shared_cache.cache.offset > 0
    return cache is not None and not (isinstance(cache.offset, int) and cache.offset == 0)


class _SequenceWrapper(nn.Module):
    """What token and continuous wrappers share: positions, memory tokens, XL memories, pools."""

    def __init__(self, *, max_seq_len: int, attn_layers: AttentionLayers, emb_dropout: float,
                 num_memory_tokens: Optional[int], max_mem_len: int, shift_mem_down: int,
                 use_abs_pos_emb: Optional[bool], sinusoidal_pos_emb: bool, emb_dim: Optional[int] = None,
                 scaled_sinu_pos_emb: bool = False, l2norm_embed: bool = False, post_emb_norm: bool = False,
                 average_pool_embed: bool = False, memory_tokens_interspersed_every: Optional[int] = None,
                 pos_emb_init_std: Optional[float] = None):
        super().__init__()
        if not isinstance(attn_layers, AttentionLayers):
            raise ValueError(f"attn_layers: expected an Encoder, Decoder or AttentionLayers, got {type(attn_layers).__name__}")
        num_memory_tokens = num_memory_tokens or 0
        check_int("max_seq_len", max_seq_len)
        check_int("num_memory_tokens", num_memory_tokens, minimum=0)
        check_int("max_mem_len", max_mem_len, minimum=0)
        check_int("shift_mem_down", shift_mem_down, minimum=0)
        check_probability("emb_dropout", emb_dropout)
        if shift_mem_down and not max_mem_len:
            raise ValueError("shift_mem_down: enhanced recurrence routes memories; it needs max_mem_len > 0")
        if max_mem_len and attn_layers.options.reversible:
            raise ValueError("max_mem_len and reversible cannot be combined: a reversible stack keeps no layer "
                             "inputs, and Transformer-XL memories are those inputs")
        if l2norm_embed and pos_emb_init_std is not None:
            raise ValueError("pos_emb_init_std and l2norm_embed: with unit-length token rows the position table "
                             "is drawn near zero (std 1e-5), as in x-transformers; drop one of them")
        if sinusoidal_pos_emb and scaled_sinu_pos_emb:
            raise ValueError("sinusoidal_pos_emb and scaled_sinu_pos_emb: choose one kind of sinusoids")
        dim = attn_layers.dim
        emb_dim = dim if emb_dim is None else emb_dim
        self.attn_layers, self.dim, self.max_seq_len = attn_layers, dim, max_seq_len
        self.max_mem_len, self.shift_mem_down = max_mem_len, shift_mem_down
        # Absolute positions: off by default when the stack has its own scheme (a relative one, or
        # position infused attention, whose values must stay free of position).
        # `disable_abs_pos_emb` on the stack decides the default, and an explicit True wins over the wrapper.
        if use_abs_pos_emb is None or attn_layers.options.disable_abs_pos_emb:
            use_abs_pos_emb = not attn_layers.disables_abs_pos_emb
        self.pos_emb: Optional[nn.Module] = None
        if use_abs_pos_emb:
            if scaled_sinu_pos_emb:
                self.pos_emb = ScaledSinusoidalEmbedding(emb_dim)
            elif sinusoidal_pos_emb:
                self.pos_emb = SinusoidalPositionalEmbedding(emb_dim)
            else:
                # x-transformers' table by default ($\mathcal N(0, 1)$, times $E^{-1/2}$); with unit-length
                # token rows, a near-zero unscaled one, as x-transformers
                self.pos_emb = LearnedPositionalEmbedding(emb_dim, max_seq_len,
                                                          1e-5 if l2norm_embed else pos_emb_init_std)
        self.learned_positions = use_abs_pos_emb and not (sinusoidal_pos_emb or scaled_sinu_pos_emb)
        self.l2norm_embed = l2norm_embed
        self.post_emb_norm = nn.LayerNorm(emb_dim) if post_emb_norm else nn.Identity()
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.memory_tokens = MemoryTokens(num_memory_tokens, dim) if num_memory_tokens else None
        self.num_memory_tokens = num_memory_tokens
        self.average_pool_embed = average_pool_embed
        check_int("memory_tokens_interspersed_every", memory_tokens_interspersed_every, allow_none=True)
        if memory_tokens_interspersed_every is not None and not (num_memory_tokens and attn_layers.causal):
            raise ValueError("memory_tokens_interspersed_every: needs num_memory_tokens > 0 and a causal stack "
                             "(a Decoder)")
        self.memory_tokens_interspersed_every = memory_tokens_interspersed_every

    @staticmethod
    def _check_mask(mask: Optional[Tensor], x: Tensor) -> None:
        """The padding mask must be boolean, with one entry per input position, `(b, n)`."""
        if mask is not None:  # (no message to format at every decoding step)
            check_mask("mask", mask, tuple(x.shape[:2]), f"{tuple(x.shape[:2])}, one entry per position of x")

    @staticmethod
    def _check_seq_start_pos(seq_start_pos: Optional[Tensor], x: Tensor) -> None:
        """The first real position of each left-padded row, `(b,)`."""
        if seq_start_pos is not None and (not torch.is_tensor(seq_start_pos) or tuple(seq_start_pos.shape) != x.shape[:1]):
            raise ValueError(f"seq_start_pos: expected a tensor of shape ({x.shape[0]},), one start per row")

    @staticmethod
    def _prepend(h: Tensor, prepend_embeds: Tensor, mask: Optional[Tensor],
                 prepend_mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor], int]:
        """Embeddings `(b, p, E)` before the inputs' `(b, n, E)` (PaLI: an image before its caption), with
        the mask grown to match; returns the sequence, its mask and $p$."""
        b, n = h.shape[:2]
        if prepend_embeds.dim() != 3 or prepend_embeds.shape[0] != b or prepend_embeds.shape[-1] != h.shape[-1]:
            raise ValueError(f"prepend_embeds: expected shape ({b}, p, {h.shape[-1]}), got {tuple(prepend_embeds.shape)}")
        prefix = prepend_embeds.shape[1]
        h = torch.cat((prepend_embeds.to(h.dtype), h), dim=1)  # (b, p + n, E)
        if prepend_mask is not None or mask is not None:
            pm = prepend_mask if prepend_mask is not None else h.new_ones(b, prefix, dtype=torch.bool)
            mask = torch.cat((pm, mask if mask is not None else h.new_ones(b, n, dtype=torch.bool)), dim=1)
        return h, mask, prefix

    def _sum_norm_prepend(self, h: Tensor, sum_embeds: Optional[Tensor], prepend_embeds: Optional[Tensor],
                          mask: Optional[Tensor], prepend_mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor], int]:
        """The last steps of embedding, alike in both wrappers: `sum_embeds` added, the norm after the
        embedding, then `prepend_embeds` in front; returns the sequence, its mask and the prefix length."""
        if sum_embeds is not None:
            h = h + sum_embeds
        h = self.post_emb_norm(h)
        if prepend_embeds is None:
            return h, mask, 0
        return self._prepend(h, prepend_embeds, mask, prepend_mask)  # (b, p + n, E)

    def _positions(self, h: Tensor, offset, seq_start_pos: Optional[Tensor] = None,
                   pos: Optional[Tensor] = None) -> Union[Tensor, float]:
        """The absolute position embeddings of `h`'s tokens, `(n, E)` or `(b, n, E)` (0 without them)."""
        if pos is not None and pos.is_floating_point():
            return pos  # x-transformers' external position embedding: added as it is
        if self.pos_emb is None:
            return 0.0
        n = h.shape[1]
        if pos is not None:
            positions = pos.to(h.device)
            if self.learned_positions and (int(positions.max()) >= self.max_seq_len or int(positions.min()) < 0):
                raise ValueError(f"pos: positions must lie in [0, {self.max_seq_len}) of the learned absolute "
                                 f"positional embedding, got [{int(positions.min())}, {int(positions.max())}]")
        elif not isinstance(offset, int):
            # A static cache's position is a 0-d tensor (read as data by a compiled step); its
            # generation loop checked the length.
            positions = offset + torch.arange(n, device=h.device)  # (n,)
        elif self.learned_positions and offset + n > self.max_seq_len:
            raise ValueError(
                f"x: positions up to {offset + n} exceed max_seq_len={self.max_seq_len} of the learned "
                "absolute positional embedding; shorten the input, raise max_seq_len, or use a relative "
                "scheme (rotary_pos_emb, alibi_pos_emb or rel_pos_bias)")
        else:
            positions = torch.arange(offset, offset + n, device=h.device)  # (n,)
        if seq_start_pos is not None:
            # Left-padded rows count positions from their first real token: $t - s_b$ (padding gets 0).
            positions = (positions[None, :] - seq_start_pos[:, None]).clamp(min=0)  # (b, n)
        p = self.pos_emb(positions.flatten()).view(*positions.shape, -1).to(h.dtype)
        return l2norm(p) if self.l2norm_embed else p

    def _add_positions(self, h: Tensor, offset, seq_start_pos: Optional[Tensor] = None) -> Tensor:
        return h + self._positions(h, offset, seq_start_pos)

    #
    # ## The shared forward
    #
    # Stack inputs in, final hidden states out, with memory tokens, XL memories, the cache (either
    # spelling) and recycling handled here.  `prefix` counts the positions before the tokens
    # (prepended embeddings, [CLS] tokens) that a cache holds besides them.
    def _run(self, h: Tensor, *, mask, context, context_mask, mems, return_mems, cache, attn_sink=None,
             prefix: int = 0, keep_cache: bool = False, layer_kwargs: Optional[dict] = None, recycling=None,
             looping=None, detach_mems: bool = True):
        num_mem_tokens = self.memory_tokens.num if self.memory_tokens is not None else 0
        if mems is not None and self.pos_emb is not None:
            raise ValueError(
                "mems: Transformer-XL memories need positions that continue across segments; with the "
                "absolute positional embedding memory and segment would share positions.  Use "
                "rel_pos_bias, rotary_pos_emb or alibi_pos_emb (the absolute embedding then turns off)")
        if return_mems and not self.max_mem_len:
            raise ValueError("return_mems: set max_mem_len > 0 on the wrapper to keep memories")
        shared_kv = None
        if isinstance(cache, LayerIntermediates):
            shared_kv, cache = resume(cache, h.shape[1])
        elif cache is None and keep_cache and self.attn_layers._keeps_cache(mems) and recycling is None \
                and looping is None:
            shared_kv = new_shared_cache(self.attn_layers, h.shape[0], num_mem_tokens + h.shape[1],
                                         num_mem_tokens + prefix)
            cache = shared_kv.cache
        first_step = not cache_started(cache)
        every, n = self.memory_tokens_interspersed_every, h.shape[1]
        if every is not None and (cache is not None or mems is not None):
            raise ValueError("memory_tokens_interspersed_every: the interspersed memory tokens move with the "
                             "block boundaries, so a cache or Transformer-XL memories cannot be used")
        if self.memory_tokens is not None and every is not None:
            h, mask = intersperse(h, mask, self.memory_tokens.tokens, every)
        elif self.memory_tokens is not None and first_step:
            h, mask = self.memory_tokens.prepend(h, mask)
        if mems is not None and self.shift_mem_down:
            mems = shift_memories_down(mems, self.shift_mem_down)

        def run(inp):
            if attn_sink is not None:  # a recycled pass records afresh: the last pass's maps are kept
                attn_sink.clear()
                if getattr(attn_sink, "pre_softmax", None) is not None:
                    attn_sink.pre_softmax.clear()
            return self.attn_layers(inp, mask=mask, context=context, context_mask=context_mask, mems=mems,
                                    cache=cache, return_hiddens=True, attn_sink=attn_sink, keep_intermediates=False,
                                    **(layer_kwargs or {}))

        if recycling is not None:
            out, inter = recycle(run, h, *recycling)
        elif looping is not None:
            out, inter = looping(run, h)  # the looped LM (`wrapping/looped.py`)
        else:
            out, inter = run(h)
        assert isinstance(inter, LayerIntermediates) and out is not None
        h, hiddens, block_hiddens = out, inter.hiddens or [], inter.block_hiddens or []
        memory_inputs = inter.memory_inputs or []
        memory_out = None
        if self.memory_tokens is not None and every is not None:
            h = strip_interspersed(h, n, every, num_mem_tokens)
            hiddens = [strip_interspersed(t, n, every, num_mem_tokens) for t in hiddens]
            memory_inputs = [strip_interspersed(t, n, every, num_mem_tokens) for t in memory_inputs]
            block_hiddens = [strip_interspersed(t, n, every, num_mem_tokens) for t in block_hiddens]
        elif self.memory_tokens is not None and first_step:
            memory_out = h[:, :num_mem_tokens]
            h = self.memory_tokens.strip(h)
            hiddens = [self.memory_tokens.strip(t) for t in hiddens]
            memory_inputs = [self.memory_tokens.strip(t) for t in memory_inputs]
            block_hiddens = [self.memory_tokens.strip(t) for t in block_hiddens]
        # x-transformers builds them from `hiddens`: the same tensors unless the input is reinjected or mixed.
        new_mems = update_memories(mems, memory_inputs, self.max_mem_len, detach=detach_mems) if return_mems else None
        intermediates = snapshot(shared_kv, hiddens=hiddens, last_hidden=inter.last_hidden, mems=new_mems,
                                 memory_tokens=memory_out, block_hiddens=block_hiddens)
        return h, new_mems, intermediates

    def _attn_record(self, return_attn: bool, return_intermediates: bool, z_loss: bool, cache) -> Optional[list]:
        """The list the attention layers append their weights to, when anything asks for them.

        Intermediates record the weights of a first (uncached) call, except in training with
        gradients, where keeping them would cost the fused kernels (ask with `return_attn=True`), and
        with `flash=True` layers, which keep none."""
        if z_loss:
            return AttentionRecord(pre_softmax=True)
        training = self.training and torch.is_grad_enabled()
        if return_attn or (return_intermediates and not training and not cache_started(cache)
                           and not isinstance(cache, LayerIntermediates)
                           and not keeps_no_weights(self.attn_layers)):
            return AttentionRecord()
        return None

    def _finish(self, out, *, intermediates, new_mems, attn_maps, return_mems: bool, return_attn: bool,
                return_intermediates: bool):
        """`out`, then the memories, the attention maps or the intermediates, as they were asked for."""
        if attn_maps is not None:
            intermediates.attn_intermediates = attn_maps.intermediates(self.attn_layers.layer_types)
        if return_intermediates:
            return out, intermediates
        extra = ((new_mems,) if return_mems else ()) + ((list(attn_maps),) if return_attn and attn_maps is not None else ())
        return (out, *extra) if extra else out
