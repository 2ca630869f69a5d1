r"""
# Wrappers: from tokens (or vectors) to a stack and back

A layer stack maps embeddings to embeddings.  The wrappers put it to work:

* `TransformerWrapper` embeds token ids, adds absolute positions (learned by default), runs the
  stack and projects to logits over the vocabulary, or returns the final embeddings.
* `ContinuousTransformerWrapper` does the same for real-valued inputs: a linear layer in, a linear
  layer out.

Both hold the techniques that live *around* the stack: memory tokens, Transformer-XL memories with
enhanced recurrence, and the absolute position embedding, which is turned off by default when the
stack already has a relative scheme (rotary, ALiBi, T5), so that such models run on sequences longer
than `max_seq_len` and memories and caches stay consistent, and when it uses position infused
attention, whose point is that values carry no position.  `use_abs_pos_emb=True` turns it back on.

They also speak x-transformers' calling conventions: `return_intermediates=True` returns the
[intermediates](../generation/intermediates.md) of the pass, which `cache=` accepts to continue the
sequence; `return_logits_and_embeddings`, `prepend_embeds` (e.g. image embeddings before the text, as
in PaLI; the continuous wrapper keeps their positions in its output, as x-transformers' does),
`prepend_mask=`, `pos=` (`(n,)`, one row per sequence `(b, n)`, or per ALiBi head `(b, h, n)`:
[custom positions](../positional/custom_positions.md)), `seq_start_pos=` (with prepended embeddings it
counts from the first of them),
`embed_ids=`, `sum_embeds=`, `mem_masks=` (one per Transformer-XL memory), and `token_emb_kwargs=` and
`to_logits_kwargs=` for custom embedding and output modules.  The techniques of its
`TransformerWrapper` keywords each have a page of their own under `wrapping/`:
[embeddings](../wrapping/embeddings.md) (`l2norm_embed`, `scaled_sinu_pos_emb`, `emb_frac_gradient`,
`embed_num_tokens`), [pooling](../wrapping/pooling.md) (`use_cls_token`, `average_pool_embed`,
`attn_pool`), [output heads](../wrapping/output_heads.md) (`mixture_of_softmax`, `sigsoftmax_logits`,
`num_output_heads`, `add_continuous_pred_head`), the [attention z-loss](../wrapping/z_loss.md),
[recycling](../wrapping/recycling.md) and the [deep embedding](../wrapping/deep_embed.md)
(`ff_deep_embed`).  `post_emb_norm` is a LayerNorm on the embeddings (before the projection to the
stack's width), `return_only_embed=True` builds no output layer, `token_emb=` and `to_logits=` replace
the embedding and the head with modules of one's own.

The order of a forward pass, as in x-transformers: token embedding $+$ positions $+$ extra
embeddings $\to$ `post_emb_norm` $\to$ prepended embeddings $\to$ gradient shrink $\to$ dropout
$\to$ projection $\to$ [CLS] and memory tokens $\to$ the stack (recycled) $\to$ pools $\to$ the head.

**Differences from x-transformers.**  None in when absolute positions are added: as in x-transformers
2.31.10, the stack's `disable_abs_pos_emb` decides (off beside rotary, xPos, PoPE and T5's bias, kept
beside ALiBi and the dynamic bias), and `use_abs_pos_emb=False` turns them off.  `seq_start_pos`
masks the keys before each row's start on `TransformerWrapper` and only shifts the positions on the
continuous wrapper, as in x-transformers; it counts from the first prepended embedding but leaves
memory and [CLS] tokens visible (x-transformers counts them too); `logits_bias=True` adds a bias to the untied head
(none by default, as in x-transformers; this library had one before the [training parity
study](initialisation.md)); `ContinuousTransformerWrapper`'s projections in and out have biases.
With `return_mems=True` both wrappers return the previous memories followed by this segment's
streams, cut to the last `max_mem_len` (Transformer-XL's recurrence); x-transformers 2.31.10's
continuous wrapper keeps only this segment's, so there a segment shorter than `max_mem_len` forgets
the ones before it.
`ContinuousTransformerWrapper(probabilistic=True)` returns a mean and a variance,
`(2, b, n, dim_out)`, for the [continuous autoregressive wrapper](../families/continuous_autoregressive.md).  The
[looped LM](../wrapping/looped.md) (`looped`, `max_looped_steps`) needs `pre_and_post_norm` in the stack.

Shapes: `b` batch, `n` tokens, `D` model width, `E` embedding width, `V` vocabulary size, `M` memory
tokens.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..attention.fast_attention import keeps_no_weights
from ..checks import check_cache, check_init_std, check_int, check_mask, check_probability
from ..generation.intermediates import (
    AttentionRecord,
    LayerIntermediates,
    drop_cached,
    left_pad_mask,
    new_shared_cache,
    resume,
    snapshot,
)
from ..generation.kv_cache import LayersCache
from ..memory.interspersed_memory_tokens import intersperse, strip_interspersed
from ..memory.memory_tokens import MemoryTokens
from ..memory.xl_recurrence import shift_memories_down, update_memories
from ..positional.absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from ..wrapping.deep_embed import DeepEmbedding
from ..wrapping.embeddings import ExtraEmbeddings, L2NormEmbedding, ScaledSinusoidalEmbedding, l2norm, shrink_gradient
from ..wrapping.looped import check_looped, loop_count, run_loops
from ..wrapping.output_heads import MixtureOfSoftmaxes, NextEmbeddingHead, sigsoftmax_logits
from ..wrapping.pooling import AttentionPool, masked_mean
from ..wrapping.recycling import recycle
from ..wrapping.z_loss import attn_z_loss
from .block_inputs import check_transforms, transform_block_input
from .initialisation import init_token_embedding
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



class TransformerWrapper(_SequenceWrapper):
    r"""Token ids in, logits (or embeddings) out.

    Args:
        num_tokens: vocabulary size $V$.
        max_seq_len: longest sequence the learned absolute positions cover.
        attn_layers: an `Encoder`, `Decoder` or `AttentionLayers`.
        embed_num_tokens: extra embedding tables by name (e.g. `{"type": 2}`), fed with `embed_ids=`.
        emb_dim: token embedding width, projected to the stack's width if different.
        emb_dropout: dropout after the embedding.
        post_emb_norm: a LayerNorm on the embeddings.
        num_memory_tokens: learned memory tokens prepended to every sequence.
        memory_tokens_interspersed_every: a copy of the memory tokens before every block of this many
            tokens (a decoder; no cache).
        max_mem_len: Transformer-XL memory length (0: no memory).
        shift_mem_down: enhanced recurrence, route layer $l$'s memory to layer $l - k$.
        tie_embedding: use the token embedding matrix as the output projection.
        tie_embedding_scale: with `tie_embedding`, multiply the final hidden states by this before
            the tied projection; `None` is x-transformers' default $D^{-1/2}$ (T5's too); `1.0` leaves
            them as they are (GPT-2; on the GPT-2-style recipe of the results page the default scale
            trained 0.53 nats worse in 500 steps).
        logits_dim: output width, `num_tokens` by default.
        return_only_embed: no output layer; the forward returns the final hidden states.
        num_output_heads: that many independent linear heads (a tuple of logits).
        use_abs_pos_emb: absolute positions; `None` turns them off when the stack has relative ones.
        scaled_sinu_pos_emb: sinusoids times a learned scale as the absolute positions.
        l2norm_embed: token and position embeddings at unit length.
        recycling: rerun the stack on its own output (AlphaFold); `recycle_steps=` at inference.
        train_max_recycle_steps: in training the passes are drawn from $1 \dots$ this.
        looped: the looped LM, the stack run up to `max_looped_steps` times with a learned exit
            ([looped](../wrapping/looped.md); needs `pre_and_post_norm=True` on the stack).
        max_looped_steps: the most loops (4).
        emb_frac_gradient: the fraction of the gradient that reaches the embeddings.
        attn_z_loss_weight: default weight of the attention z-loss (`return_attn_z_loss=True`).
        average_pool_embed: return the mean of the outputs over the real tokens, `(b, ...)`.
        use_cls_token: prepend a learned [CLS] token and return its output, `(b, ...)`.
        num_cls_tokens: how many [CLS] tokens.
        attn_pool: learned queries attend to the outputs (an encoder returns the pooled tokens).
        num_pooled_tokens: queries of the attention pool.
        attn_pool_depth: cross-attention layers of the attention pool.
        dim_pooled_tokens: width of the pooled tokens (default: the model width).
        squeeze_out_last_dim: drop a last axis of size 1 from the logits.
        token_emb: a module of one's own from token ids `(b, n)` to `(b, n, emb_dim)`.
        mixture_of_softmax: the head is a mixture of softmaxes (returns log-probabilities).
        mixture_of_softmax_k: components of the mixture.
        sigsoftmax_logits: logits $z + \log \sigma(z)$.
        ff_deep_embed: each feed-forward output is multiplied by a learned vector per token and layer.
        to_logits: a module of one's own from hidden states to logits.
        add_continuous_pred_head: a head predicting the next input embedding.
        input_not_include_cache: with `cache=` intermediates, `x` holds only the new tokens.
        sinusoidal_pos_emb: fixed sinusoids instead of learned absolute positions.
        logits_bias: a bias on the untied output projection (none by default, as in x-transformers).
        token_emb_init_std: std of the token embedding's normal draw; `None` is x-transformers'
            Kaiming normal, $\sqrt{2 / E}$ ([initialisation](initialisation.md)).
        pos_emb_init_std: std of the learned position table's draw, added unscaled; `None` is
            x-transformers' table, $\mathcal N(0, 1)$ times $E^{-1/2}$ ([absolute positions](../positional/absolute.md)).
    """

    def __init__(self, num_tokens: int, max_seq_len: int, attn_layers: AttentionLayers, *,
                 embed_num_tokens: Optional[dict[str, int]] = None, emb_dim: Optional[int] = None,
                 max_mem_len: int = 0, shift_mem_down: int = 0, emb_dropout: float = 0.0,
                 post_emb_norm: bool = False, num_memory_tokens: Optional[int] = None,
                 memory_tokens_interspersed_every: Optional[int] = None, tie_embedding: bool = False, tie_embedding_scale: Optional[float] = None,
                 logits_dim: Optional[int] = None, return_only_embed: bool = False, num_output_heads: int = 1,
                 use_abs_pos_emb: Optional[bool] = None, scaled_sinu_pos_emb: bool = False,
                 l2norm_embed: bool = False, recycling: bool = False, train_max_recycle_steps: int = 4,
                 looped: bool = False, max_looped_steps: int = 4,
                 emb_frac_gradient: float = 1.0, attn_z_loss_weight: float = 1e-4,
                 average_pool_embed: bool = False, use_cls_token: bool = False, num_cls_tokens: int = 1,
                 attn_pool: bool = False, num_pooled_tokens: int = 1, attn_pool_depth: int = 1,
                 dim_pooled_tokens: Optional[int] = None, squeeze_out_last_dim: bool = False,
                 token_emb: Optional[nn.Module] = None, mixture_of_softmax: bool = False,
                 mixture_of_softmax_k: int = 4, sigsoftmax_logits: bool = False, ff_deep_embed: bool = False,
                 to_logits: Optional[nn.Module] = None, add_continuous_pred_head: bool = False,
                 input_not_include_cache: bool = False, sinusoidal_pos_emb: bool = False, logits_bias: bool = False,
                 token_emb_init_std: Optional[float] = None, pos_emb_init_std: Optional[float] = None):
        # The token table is made before the position table, as in x-transformers, so that one seed
        # draws the same numbers into both libraries' models ([initialisation](initialisation.md)).
        table: Optional[nn.Embedding] = None  # the plain token table, when this wrapper makes it
        if token_emb is None and isinstance(attn_layers, AttentionLayers):
            check_int("num_tokens", num_tokens)
            width = attn_layers.dim if emb_dim is None else emb_dim
            check_int("emb_dim", width)
            if l2norm_embed:
                token_emb = L2NormEmbedding(num_tokens, width)
            else:
                token_emb = table = nn.Embedding(num_tokens, width)
        super().__init__(max_seq_len=max_seq_len, attn_layers=attn_layers, emb_dropout=emb_dropout,
                         num_memory_tokens=num_memory_tokens, max_mem_len=max_mem_len,
                         shift_mem_down=shift_mem_down, use_abs_pos_emb=use_abs_pos_emb,
                         sinusoidal_pos_emb=sinusoidal_pos_emb, emb_dim=emb_dim,
                         scaled_sinu_pos_emb=scaled_sinu_pos_emb, l2norm_embed=l2norm_embed,
                         post_emb_norm=post_emb_norm, average_pool_embed=average_pool_embed,
                         memory_tokens_interspersed_every=memory_tokens_interspersed_every,
                         pos_emb_init_std=pos_emb_init_std)
        check_int("num_tokens", num_tokens)
        emb_dim = self.dim if emb_dim is None else emb_dim
        check_int("emb_dim", emb_dim)
        check_int("num_output_heads", num_output_heads)
        check_int("num_cls_tokens", num_cls_tokens)
        check_init_std("token_emb_init_std", token_emb_init_std, "Kaiming normal")
        check_int("train_max_recycle_steps", train_max_recycle_steps)
        if isinstance(emb_frac_gradient, bool) or not isinstance(emb_frac_gradient, (int, float)) \
                or not 0 < emb_frac_gradient <= 1:
            raise ValueError(f"emb_frac_gradient: expected a fraction in (0, 1], got {emb_frac_gradient!r}")
        for a, b in (("average_pool_embed", "use_cls_token"), ("use_cls_token", "attn_pool")):
            if locals()[a] and locals()[b]:
                raise ValueError(f"{a} and {b}: choose one way to pool the sequence")
        if mixture_of_softmax and num_output_heads > 1:
            raise ValueError("mixture_of_softmax and num_output_heads: a mixture of softmaxes has one head")
        self.num_tokens, self.emb_dim = num_tokens, emb_dim
        # The token embedding: a module of one's own, unit-length rows, or the plain table.
        if table is not None:
            init_token_embedding(table.weight, token_emb_init_std)
        # (made above: `super().__init__` refused anything but a stack as `attn_layers`)
        assert token_emb is not None
        self.token_emb = token_emb
        self.embeds = ExtraEmbeddings(embed_num_tokens, emb_dim) if embed_num_tokens else None
        self.ff_deep_embed = DeepEmbedding(num_tokens, attn_layers) if ff_deep_embed else None
        self.emb_frac_gradient = emb_frac_gradient
        self.project_emb = nn.Linear(emb_dim, self.dim) if emb_dim != self.dim else nn.Identity()
        # Recycling (AlphaFold).
        self.recycling, self.train_max_recycle_steps = recycling, train_max_recycle_steps
        self.recycled_proj = nn.Linear(self.dim, self.dim, bias=False) if recycling else None
        # The looped LM: the exit gate $\sigma(w^\top h^{(t)})$ after each loop (`wrapping/looped.py`).
        check_looped(looped, recycling, attn_layers, max_looped_steps)
        self.looped, self.train_max_looped_steps = looped, max_looped_steps
        self.exit_gate = nn.Linear(self.dim, 1, bias=False) if looped else None
        self.attn_z_loss_weight = attn_z_loss_weight
        # Pools: [CLS] tokens, the average (in the base class), learned queries.
        self.num_cls_tokens = num_cls_tokens
        self.cls_token = nn.Parameter(torch.randn(num_cls_tokens, self.dim) * 0.02) if use_cls_token else None
        self.attn_pool = AttentionPool(dim_pooled_tokens or self.dim, dim_context=self.dim,
                                       num_pooled_tokens=num_pooled_tokens, depth=attn_pool_depth,
                                       heads=attn_layers.options.heads, dim_head=attn_layers.options.attn.dim_head) \
            if attn_pool else None
        # The head.
        self.output_is_log_prob = mixture_of_softmax
        self.mixture = MixtureOfSoftmaxes(self.dim, mixture_of_softmax_k) if mixture_of_softmax else None
        self.sigsoftmax_logits = sigsoftmax_logits
        self.squeeze_out_last_dim = squeeze_out_last_dim
        self.input_not_include_cache = input_not_include_cache
        if tie_embedding and (emb_dim != self.dim or (logits_dim or num_tokens) != num_tokens):
            raise ValueError("tie_embedding: needs emb_dim equal to the model width and logits_dim equal to num_tokens")
        if tie_embedding and self._tied_weight() is None:
            raise ValueError("tie_embedding: the token embedding module has no weight matrix to tie "
                             "(expected .weight or .emb.weight of shape (num_tokens, dim))")
        if tie_embedding_scale is not None:
            if not tie_embedding:
                raise ValueError("tie_embedding_scale: only meaningful with tie_embedding=True "
                                 "(an untied projection learns its own scale)")
            if isinstance(tie_embedding_scale, bool) or not isinstance(tie_embedding_scale, (int, float)) \
                    or not tie_embedding_scale > 0:
                raise ValueError(f"tie_embedding_scale: expected a positive number, got {tie_embedding_scale!r}")
        if tie_embedding and tie_embedding_scale is None:
            tie_embedding_scale = self.dim ** -0.5  # x-transformers' default for tied logits
        self.tie_embedding, self.tie_embedding_scale = tie_embedding, tie_embedding_scale
        self.has_multiple_heads = num_output_heads > 1
        out_dim = logits_dim or num_tokens
        if return_only_embed or tie_embedding:
            self.to_logits: Optional[nn.Module] = None
        elif to_logits is not None:
            self.to_logits = to_logits
        elif num_output_heads > 1:
            self.to_logits = nn.ModuleList(nn.Linear(self.dim, out_dim, bias=logits_bias) for _ in range(num_output_heads))
        else:
            self.to_logits = nn.Linear(self.dim, out_dim, bias=logits_bias)
        self.return_only_embed = return_only_embed
        self.add_continuous_pred_head = add_continuous_pred_head
        self.to_next_embed_pred = NextEmbeddingHead(self.dim) if add_continuous_pred_head else None

    def _looping(self, n: int, cache, loops: dict, looped_steps, max_looped_steps, pred_all, inference: bool,
                 threshold: float):
        """The loop of the looped LM as a function of the stack's `run`, or `None`; fills `loops` with what
        the intermediates report (`wrapping/looped.py`)."""
        given = dict(looped_steps=looped_steps, max_looped_steps=max_looped_steps,
                     looped_pred_all_logits=pred_all, looped_inference=inference or None)
        if not self.looped:
            name = next((k for k, v in given.items() if v is not None), None)
            if name is not None:
                raise ValueError(f"{name}: only meaningful for a looped model (looped=True)")
            return None
        if cache is not None:
            raise ValueError("cache and looped cannot be combined: every loop reruns the stack over the whole "
                             "sequence (generate decodes without a cache)")
        steps, fixed = loop_count(looped_steps, max_looped_steps, self.train_max_looped_steps)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold <= 1:
            raise ValueError(f"looped_exit_prob_threshold: expected a probability in (0, 1], got {threshold!r}")
        pred_all = self.training if pred_all is None else pred_all
        gate = self.exit_gate
        assert gate is not None

        def looping(run, h):
            if inference and h.shape[0] > 1 and not fixed:
                raise ValueError("looped_inference: the early exit decides one number of loops per call, so the "
                                 f"batch must hold one sequence, got {h.shape[0]} (or pass looped_steps=)")
            out, inter, exits, logits, last = run_loops(
                run, h, lambda o: gate(o[:, o.shape[1] - n:]), lambda o: self.logits(o[:, o.shape[1] - n:]),
                steps=steps, fixed=fixed, pred_all=pred_all, inference=inference, threshold=threshold)
            loops.update(exit_logits=exits, all_pred_logits=logits,
                         exit_indices=torch.full((h.shape[0], 1), last, device=h.device))
            return out, inter

        return looping

    def _tied_weight(self) -> Optional[Tensor]:
        weight = getattr(self.token_emb, "weight", None)
        if weight is None and hasattr(self.token_emb, "emb"):
            weight = getattr(self.token_emb.emb, "weight", None)
        return weight if torch.is_tensor(weight) else None

    def logits(self, h: Tensor, **head_kwargs) -> Any:
        """Project final hidden states `(b, n, D)` to logits `(b, n, V)` (a tuple with several heads);
        `head_kwargs` go to a custom `to_logits` module."""
        if head_kwargs and (self.to_logits is None or self.mixture is not None):
            raise ValueError("to_logits_kwargs: only a custom to_logits module takes arguments; this wrapper's "
                             "output layer is the tied embedding or a mixture of softmaxes")
        if self.mixture is not None:
            return self.mixture(h, self._head)
        logits = self._head(h, **head_kwargs)
        if self.sigsoftmax_logits:
            logits = tuple(sigsoftmax_logits(t) for t in logits) if isinstance(logits, tuple) else sigsoftmax_logits(logits)
        if self.squeeze_out_last_dim:
            logits = tuple(t.squeeze(-1) if t.shape[-1] == 1 else t for t in logits) \
                if isinstance(logits, tuple) else (logits.squeeze(-1) if logits.shape[-1] == 1 else logits)
        return logits

    def _head(self, h: Tensor, **head_kwargs) -> Any:
        if isinstance(self.to_logits, nn.ModuleList):
            return tuple(head(h, **head_kwargs) for head in self.to_logits)
        if self.to_logits is not None:  # untied (`None` exactly when tie_embedding or return_only_embed)
            return self.to_logits(h, **head_kwargs)
        if not self.tie_embedding:
            raise ValueError("return_only_embed: this wrapper has no output layer; it returns embeddings")
        # $z = (s\, h)\, E^\top$: the tied projection, after the rescaling $s$ ($D^{-1/2}$ unless set)
        if self.tie_embedding_scale is not None and self.tie_embedding_scale != 1:
            h = h * self.tie_embedding_scale
        weight = self._tied_weight()
        assert weight is not None  # checked in __init__
        return h @ weight.t()

    def forward(self, x: Optional[Tensor], *, mask: Optional[Tensor] = None, context: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None, mems: Optional[list[Tensor]] = None,
                return_mems: bool = False, return_embeddings: bool = False,
                return_logits_and_embeddings: bool = False, return_intermediates: bool = False,
                return_embeddings_and_intermediates: bool = False, return_next_embed_pred: bool = False,
                cache: Union[LayersCache, LayerIntermediates, None] = None,
                seq_start_pos: Optional[Tensor] = None, return_attn: bool = False, pos: Optional[Tensor] = None,
                prepend_embeds: Optional[Tensor] = None, prepend_mask: Optional[Tensor] = None,
                excise_prepend_embeds: bool = False, embed_ids: Optional[dict[str, Tensor]] = None,
                sum_embeds: Optional[Tensor] = None, return_attn_z_loss: bool = False,
                attn_z_loss_weight: Optional[float] = None, recycle_steps: Optional[int] = None,
                input_not_include_cache: Optional[bool] = None, attn_mask: Optional[Tensor] = None,
                self_attn_additional_kv=None, cross_attn_kv_residuals: Optional[Tensor] = None,
                looped_steps: Optional[int] = None, max_looped_steps: Optional[int] = None,
                looped_pred_all_logits: Optional[bool] = None, looped_inference: bool = False,
                looped_exit_prob_threshold: float = 0.9, condition: Optional[Tensor] = None,
                detach_mems: bool = True, transform_block_inputs=None, transform_token_embeds=None,
                mem_masks: Optional[list[Tensor]] = None, token_emb_kwargs: Optional[dict] = None,
                to_logits_kwargs: Optional[dict] = None):
        r"""Logits `(b, n, V)` for token ids `x` `(b, n)` (integers, or a float tensor of whole numbers, cast
        as x-transformers casts them).

        With `return_embeddings=True` the final hidden states `(b, n, D)` instead, with
        `return_logits_and_embeddings=True` both.  With `return_mems=True` also the new
        Transformer-XL memories: `(out, mems)`.  With `return_attn=True` also the attention weights
        of every attention layer, each `(b, h, i, j)` (keys include memory tokens, memories and
        persistent slots): `(out, [mems,] attn_maps)`.  With `return_intermediates=True`
        `(out, intermediates)`, x-transformers' [intermediates](../generation/intermediates.md),
        which `cache=` accepts to continue the sequence (`x` then holds the whole sequence, or only
        the new tokens with `input_not_include_cache=True`).  `seq_start_pos` `(b,)` gives the first
        real token of each left-padded row, where its absolute positions start and before which its
        keys are masked (with `prepend_embeds`, counted from the first prepended embedding, as in
        x-transformers).  `pos` gives the tokens' positions `(n,)` (a float tensor is added as the
        position embedding itself); `prepend_embeds` `(b, p, E)` go before the tokens (with
        `prepend_mask` `(b, p)`); `embed_ids` feeds the `embed_num_tokens` tables; `sum_embeds`
        `(b, n, E)` is added to the embeddings.  `attn_mask`, `self_attn_additional_kv`,
        `cross_attn_kv_residuals` and `condition` (the adaptive norms' vector) go to the stack
        (`AttentionLayers.forward`).  A looped model ([looped](../wrapping/looped.md)) reads `looped_steps`,
        `max_looped_steps`, `looped_pred_all_logits`, `looped_inference` and `looped_exit_prob_threshold`.
        `detach_mems=False` keeps the returned memories in the graph (backpropagation through several
        segments); `mem_masks`, one `(b, m)` bool per memory, hides memory positions (true: visible).
        `token_emb_kwargs` and `to_logits_kwargs` go to a custom `token_emb` and `to_logits` module
        (`token_emb(x, **token_emb_kwargs)`, `to_logits(h, **to_logits_kwargs)`), as in x-transformers.
        `transform_block_inputs` goes to the stack too; its block 1 function (or `transform_token_embeds`)
        transforms the token embeddings before the positions are added ([block inputs](block_inputs.md)).
        """
        input_not_include_cache = self.input_not_include_cache if input_not_include_cache is None \
            else input_not_include_cache
        if x is None:
            if prepend_embeds is None:
                raise ValueError("x: token ids are needed unless prepend_embeds are given")
            x = torch.zeros(prepend_embeds.shape[0], 0, dtype=torch.long, device=prepend_embeds.device)
        if torch.is_tensor(x) and x.is_floating_point():
            # x-transformers casts token ids (`x.long()`); whole numbers only, never a silent truncation.
            if not torch.equal(x, x.trunc()):
                raise ValueError(f"x: token ids given as {x.dtype} must be whole numbers, got e.g. "
                                 f"{x[x != x.trunc()].flatten()[0].item()}")
            x = x.long()
        if not torch.is_tensor(x) or x.dim() != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected an integer tensor of token ids with shape (batch, seq_len), got {got}")
        if not torch.compiler.is_compiling():
            check_cache("cache", cache)
        # x-transformers' cache: the intermediates of an earlier call; `x` repeats what it covers.
        token_offset = None
        if isinstance(cache, LayerIntermediates):
            shared = cache.shared_cache
            prefix = shared.num_memory_tokens - self.num_memory_tokens if shared is not None else 0
            token_offset = cache.cache_length - prefix
            if not input_not_include_cache:
                x, mask = drop_cached(x, mask, token_offset)
            if embed_ids and not input_not_include_cache:
                embed_ids = {k: v[:, token_offset:] for k, v in embed_ids.items()}
            prepend_embeds = None  # already in the cache
        elif cache is not None and not cache_started(cache) and (return_intermediates or return_embeddings_and_intermediates):
            raise ValueError("cache: a LayersCache is written in place and continues itself; "
                             "return_intermediates with cache=None gives x-transformers' spelling instead")
        prepended = 0
        if prepend_embeds is not None and token_offset is None and cache_started(cache):
            # A started LayersCache holds them since its first step; the tokens' absolute positions
            # still start after them at 0, as in the full pass.
            prepended, prepend_embeds = prepend_embeds.shape[1], None
        # The range check synchronises (and is a branch a compiler cannot trace); a cached step feeds
        # back tokens the model itself sampled.
        cached_step = cache_started(cache) or token_offset is not None
        if x.numel() and not cached_step and not torch.compiler.is_compiling() and (int(x.min()) < 0 or int(x.max()) >= self.num_tokens):
            raise ValueError(f"x: token ids must lie in [0, {self.num_tokens}), got values in "
                             f"[{int(x.min())}, {int(x.max())}]")
        self._check_mask(mask, x)
        if seq_start_pos is not None and (not torch.is_tensor(seq_start_pos) or tuple(seq_start_pos.shape) != x.shape[:1]):
            raise ValueError(f"seq_start_pos: expected a tensor of shape ({x.shape[0]},), one start per row")
        b, n = x.shape
        if token_offset is None:
            # Any cache of this library (growing, rolling, static, sinks) counts the tokens it holds.
            token_offset = cache.offset - self.num_memory_tokens - prepended \
                if cache is not None and not isinstance(cache, LayerIntermediates) and cache_started(cache) else 0
        if seq_start_pos is not None and not cached_step and prepend_embeds is None:
            # A left-padded row's keys before its first real token are masked (later tokens are real).
            mask = left_pad_mask(x, mask, seq_start_pos, token_offset)
        token_ids = x

        # $e_t = E[x_t] + p_t\ (+ \sum_k E_k[\text{id}_{k,t}])$
        h = self.token_emb(x, **(token_emb_kwargs or {}))  # (b, n, E)
        if transform_token_embeds is not None or transform_block_inputs is not None:
            check_transforms(transform_block_inputs)
            h = transform_token_embeds(h) if transform_token_embeds is not None \
                else transform_block_input(transform_block_inputs, 1, h)
        h = h + self._positions(h, token_offset, seq_start_pos, pos)
        if self.embeds is not None or embed_ids:
            if self.embeds is None:
                raise ValueError("embed_ids: set embed_num_tokens on the wrapper to have extra embedding tables")
            h = h + self.embeds(embed_ids or {})
        if sum_embeds is not None:
            h = h + sum_embeds
        h = self.post_emb_norm(h)
        prefix = 0
        if prepend_embeds is not None:
            # PaLI: image (or other) embeddings before the text.
            if prepend_embeds.dim() != 3 or prepend_embeds.shape[0] != b or prepend_embeds.shape[-1] != h.shape[-1]:
                raise ValueError(f"prepend_embeds: expected shape ({b}, p, {h.shape[-1]}), got {tuple(prepend_embeds.shape)}")
            prefix = prepend_embeds.shape[1]
            h = torch.cat((prepend_embeds.to(h.dtype), h), dim=1)  # (b, p + n, E)
            if prepend_mask is not None or mask is not None:
                ones = torch.ones(b, n if mask is None else 0, dtype=torch.bool, device=h.device)
                pm = prepend_mask if prepend_mask is not None else torch.ones(b, prefix, dtype=torch.bool, device=h.device)
                mask = torch.cat((pm, mask if mask is not None else ones), dim=1)
            if seq_start_pos is not None and not cached_step:
                # As x-transformers: the first $s_b$ positions of the prepended embeddings and tokens together.
                mask = left_pad_mask(h, mask, seq_start_pos, 0)  # (b, p + n)
        h = shrink_gradient(h, self.emb_frac_gradient)
        init_embed = h
        h = self.project_emb(self.emb_dropout(h))  # (b, p + n, D)
        orig_mask = mask
        if self.cls_token is not None:
            # BERT: learned [CLS] tokens in front, their outputs are the summary.
            h = torch.cat((self.cls_token.expand(b, -1, -1).to(h.dtype), h), dim=1)
            if mask is not None:
                mask = torch.cat((mask.new_ones(b, self.num_cls_tokens), mask), dim=1)
            prefix += self.num_cls_tokens

        layer_kwargs: dict[str, Any] = {k: v for k, v in (
            ("attn_mask", attn_mask), ("self_attn_additional_kv", self_attn_additional_kv),
            ("cross_attn_kv_residuals", cross_attn_kv_residuals), ("condition", condition),
            ("transform_block_inputs", transform_block_inputs), ("mem_masks", mem_masks)) if v is not None}
        if pos is not None and not pos.is_floating_point():
            layer_kwargs["pos"] = pos
        if self.ff_deep_embed is not None:
            layer_kwargs["ff_deep_embeds"] = self.ff_deep_embed(token_ids, h.shape[1] - n)
        z_loss = return_attn_z_loss
        attn_maps = self._attn_record(return_attn, return_intermediates or return_embeddings_and_intermediates,
                                      z_loss, cache)
        recycling = (self.recycled_proj, recycle_steps, self.training, self.train_max_recycle_steps) \
            if self.recycling else None
        loops: dict[str, Any] = {}
        looping = self._looping(n, cache, loops, looped_steps, max_looped_steps, looped_pred_all_logits,
                                looped_inference, looped_exit_prob_threshold)
        h, new_mems, intermediates = self._run(
            h, mask=mask, context=context, context_mask=context_mask, mems=mems, return_mems=return_mems,
            cache=cache, attn_sink=attn_maps, prefix=prefix, layer_kwargs=layer_kwargs, recycling=recycling,
            keep_cache=return_intermediates or return_embeddings_and_intermediates, looping=looping,
            detach_mems=detach_mems)
        for name, value in loops.items():
            setattr(intermediates, name, value)
        intermediates.initial_embeds = init_embed
        if self.cls_token is not None:
            summary, h = h[:, :self.num_cls_tokens], h[:, self.num_cls_tokens:]
            intermediates.last_layer_hiddens = h
            h = summary[:, 0] if self.num_cls_tokens == 1 else summary  # (b, D) or (b, k, D)
        else:
            intermediates.last_layer_hiddens = h
        if self.average_pool_embed:
            h = masked_mean(h, orig_mask)  # (b, D)
        pooled = None
        if self.attn_pool is not None and (not self.attn_layers.causal or return_intermediates):
            pooled = self.attn_pool(h, mask=orig_mask)  # (b, k, D')
            intermediates.attn_pooled_tokens = pooled
        logits = None
        want_embeddings = return_embeddings or return_embeddings_and_intermediates or self.return_only_embed
        if not want_embeddings or return_logits_and_embeddings:
            logits = self.logits(h, **(to_logits_kwargs or {}))
        if prepend_embeds is not None and excise_prepend_embeds and h.dim() == 3:
            h = h[:, prefix - (self.num_cls_tokens if self.cls_token is not None else 0):]
            logits = tuple(t[:, -h.shape[1]:] for t in logits) if isinstance(logits, tuple) else \
                (logits[:, -h.shape[1]:] if logits is not None else None)
        if z_loss:
            weight = self.attn_z_loss_weight if attn_z_loss_weight is None else attn_z_loss_weight
            assert isinstance(attn_maps, AttentionRecord) and attn_maps.pre_softmax is not None
            intermediates.attn_z_loss = attn_z_loss(attn_maps.pre_softmax, weight=weight)
            intermediates.aux_losses["attn_z_loss"] = intermediates.attn_z_loss
            return_intermediates = True
        if return_logits_and_embeddings:
            out: Any = (logits, h)
        elif return_embeddings_and_intermediates:
            return h, self._finish(h, intermediates=intermediates, new_mems=new_mems, attn_maps=attn_maps,
                                   return_mems=False, return_attn=False, return_intermediates=True)[1]
        elif want_embeddings:
            out = h
        elif pooled is not None and not self.attn_layers.causal:
            intermediates.logits = logits
            out = pooled
        else:
            out = logits
        if return_next_embed_pred:
            if self.to_next_embed_pred is None:
                raise ValueError("return_next_embed_pred: build the wrapper with add_continuous_pred_head=True")
            out = (out, (self.to_next_embed_pred(h), init_embed))
        return self._finish(out, intermediates=intermediates, new_mems=new_mems, attn_maps=attn_maps,
                            return_mems=return_mems, return_attn=return_attn,
                            return_intermediates=return_intermediates)


class ContinuousTransformerWrapper(_SequenceWrapper):
    """Real-valued vectors in, real-valued vectors out: `(b, n, dim_in)` to `(b, n, dim_out)`."""

    def __init__(self, *, max_seq_len: int, attn_layers: AttentionLayers, dim_in: Optional[int] = None,
                 dim_out: Optional[int] = None, emb_dropout: float = 0.0, num_memory_tokens: Optional[int] = None,
                 max_mem_len: int = 0, shift_mem_down: int = 0, use_abs_pos_emb: Optional[bool] = None,
                 sinusoidal_pos_emb: bool = False, post_emb_norm: bool = False, scaled_sinu_pos_emb: bool = False,
                 average_pool_embed: bool = False, probabilistic: bool = False,
                 project_in: Optional[nn.Module] = None, project_out: Optional[nn.Module] = None,
                 use_identity_if_same_dim: bool = False, pos_emb_init_std: Optional[float] = None):
        super().__init__(max_seq_len=max_seq_len, attn_layers=attn_layers, emb_dropout=emb_dropout,
                         num_memory_tokens=num_memory_tokens, max_mem_len=max_mem_len,
                         shift_mem_down=shift_mem_down, use_abs_pos_emb=use_abs_pos_emb,
                         sinusoidal_pos_emb=sinusoidal_pos_emb, post_emb_norm=post_emb_norm,
                         scaled_sinu_pos_emb=scaled_sinu_pos_emb, average_pool_embed=average_pool_embed,
                         pos_emb_init_std=pos_emb_init_std)
        for name, value in (("dim_in", dim_in), ("dim_out", dim_out)):
            if value is not None:
                check_int(name, value)
        for name, value, module in (("dim_in", dim_in, project_in), ("dim_out", dim_out, project_out)):
            if value is not None and module is not None:
                raise ValueError(f"{name} and project_{name[4:]}: give the width or the module, not both")
        if probabilistic and dim_out is None:
            raise ValueError("probabilistic: needs dim_out, the width of the mean (and of the variance)")
        self.dim_in = dim_in or self.dim
        # `probabilistic`: the head gives a mean and a log-variance per output feature (interleaved).
        self.probabilistic = probabilistic
        width_out = dim_out * (2 if probabilistic else 1) if dim_out is not None else None
        self.project_in = project_in if project_in is not None else nn.Linear(dim_in, self.dim) \
            if dim_in is not None and not (use_identity_if_same_dim and dim_in == self.dim) else nn.Identity()
        self.project_out = project_out if project_out is not None else nn.Linear(self.dim, width_out) \
            if width_out is not None and not (use_identity_if_same_dim and width_out == self.dim) else nn.Identity()

    def forward(self, x: Tensor, *, mask: Optional[Tensor] = None, context: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None, mems: Optional[list[Tensor]] = None,
                return_mems: bool = False, return_embeddings: bool = False,
                cache: Union[LayersCache, LayerIntermediates, None] = None, return_attn: bool = False,
                return_intermediates: bool = False, pos: Optional[Tensor] = None,
                prepend_embeds: Optional[Tensor] = None, seq_start_pos: Optional[Tensor] = None,
                input_not_include_cache: bool = False, lens: Optional[Tensor] = None,
                condition: Optional[Tensor] = None, detach_mems: bool = True,
                mem_masks: Optional[list[Tensor]] = None, prepend_mask: Optional[Tensor] = None,
                sum_embeds: Optional[Tensor] = None):
        """Outputs `(b, n, dim_out)` for inputs `x` `(b, n, dim_in)` (extra outputs as `TransformerWrapper`).

        `prepend_embeds` `(b, p, D)` go before the inputs (with `prepend_mask` `(b, p)`) and keep their
        positions in the output, `(b, p + n, dim_out)`, as in x-transformers; `sum_embeds` `(b, n, D)` is
        added to the projected inputs.  `seq_start_pos` `(b,)` starts each row's absolute positions at its
        first real input (earlier inputs get position 0) and masks nothing, as x-transformers 2.31.10's
        continuous wrapper does (`TransformerWrapper` also masks the keys before it; here give `mask` or
        `lens` for that).  With `return_mems=True` the memories come back as a tuple, one tensor per
        self-attention layer, as x-transformers' continuous wrapper returns them (`TransformerWrapper`: a list).

        `lens` `(b,)`: each row's length instead of a `mask` (x-transformers' spelling); `condition`: the
        vector of the stack's adaptive norms ([adaptive norms](../norms/adaptive_norm.md));
        `detach_mems=False` keeps the returned memories in the graph; `mem_masks` (one `(b, m)` bool per
        memory) hides memory positions."""
        if not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != self.dim_in or not x.is_floating_point():
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected a float tensor of shape (batch, seq_len, {self.dim_in}), got {got}")
        check_cache("cache", cache)
        if lens is not None:
            if mask is not None:
                raise ValueError("lens and mask: give the rows' lengths or the mask, not both")
            if not torch.is_tensor(lens) or tuple(lens.shape) != (x.shape[0],) or lens.is_floating_point():
                raise ValueError(f"lens: expected an integer tensor of shape ({x.shape[0]},), one length per row")
            mask = torch.arange(x.shape[1], device=x.device)[None] < lens[:, None].to(x.device)  # (b, n)
        offset = cache.offset - self.num_memory_tokens \
            if cache is not None and not isinstance(cache, LayerIntermediates) and cache_started(cache) else 0
        if isinstance(cache, LayerIntermediates):
            offset = cache.cache_length
            if not input_not_include_cache:
                x, mask = drop_cached(x, mask, offset)
            prepend_embeds = None
        self._check_mask(mask, x)
        if seq_start_pos is not None and (not torch.is_tensor(seq_start_pos) or tuple(seq_start_pos.shape) != x.shape[:1]):
            raise ValueError(f"seq_start_pos: expected a tensor of shape ({x.shape[0]},), one start per row")
        orig_mask = mask
        h = self.project_in(x)  # (b, n, D)
        h = h + self._positions(h, offset, seq_start_pos, pos)
        if sum_embeds is not None:
            h = h + sum_embeds
        h = self.post_emb_norm(h)
        prefix = 0
        if prepend_embeds is not None:
            b, n = h.shape[:2]
            if prepend_embeds.dim() != 3 or prepend_embeds.shape[0] != b or prepend_embeds.shape[-1] != h.shape[-1]:
                raise ValueError(f"prepend_embeds: expected shape ({b}, p, {h.shape[-1]}), got {tuple(prepend_embeds.shape)}")
            prefix = prepend_embeds.shape[1]
            h = torch.cat((prepend_embeds.to(h.dtype), h), dim=1)  # (b, p + n, D)
            if prepend_mask is not None or mask is not None:
                pm = prepend_mask if prepend_mask is not None else h.new_ones(b, prefix, dtype=torch.bool)
                mask = torch.cat((pm, mask if mask is not None else h.new_ones(b, n, dtype=torch.bool)), dim=1)
        h = self.emb_dropout(h)
        layer_kwargs: dict[str, Any] = {k: v for k, v in (("condition", condition), ("mem_masks", mem_masks))
                                        if v is not None}
        if pos is not None and not pos.is_floating_point():
            layer_kwargs["pos"] = pos
        attn_maps = self._attn_record(return_attn, return_intermediates, False, cache)
        h, new_mems, intermediates = self._run(h, mask=mask, context=context, context_mask=context_mask,
                                               mems=mems, return_mems=return_mems, cache=cache,
                                               attn_sink=attn_maps, prefix=prefix, layer_kwargs=layer_kwargs,
                                               keep_cache=return_intermediates, detach_mems=detach_mems)
        if self.average_pool_embed:
            # Over the inputs only, as x-transformers (the prepended embeddings are not averaged).
            h = masked_mean(h[:, prefix:], orig_mask)
        out = h if return_embeddings else self.project_out(h)
        if self.probabilistic and not return_embeddings:
            # $(\mu, \sigma^2)$ with $\sigma^2 = e^{\log \sigma^2}$, stacked: `(2, b, n, dim_out)`
            out = torch.stack((out[..., 0::2], out[..., 1::2].exp()))
        new_mems = tuple(new_mems) if new_mems is not None else None  # x-transformers' continuous wrapper: a tuple
        return self._finish(out, intermediates=intermediates, new_mems=new_mems, attn_maps=attn_maps,
                            return_mems=return_mems, return_attn=return_attn,
                            return_intermediates=return_intermediates)
