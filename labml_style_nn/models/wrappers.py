r"""
# Wrappers: from tokens (or vectors) to a stack and back

A layer stack maps embeddings to embeddings.  The wrappers put it to work:

* `TransformerWrapper` (this page) embeds token ids, adds absolute positions (learned by default),
  runs the stack and projects to logits over the vocabulary, or returns the final embeddings.
* [`ContinuousTransformerWrapper`](continuous_wrapper.md) does the same for real-valued inputs: a
  linear layer in, a linear layer out.

What the two share has a page of its own, [the shared wrapper](sequence_wrapper.md): the
techniques that live *around* the stack, memory tokens, Transformer-XL memories with enhanced
recurrence, the cache, and the absolute position embedding, which is turned off by default when the
stack already has a relative scheme (rotary, ALiBi, T5).  The last step of this wrapper, from
hidden states to logits (tied or untied, several heads, a custom module), is [the output
head](logits_head.md).

They also speak x-transformers' calling conventions: `return_intermediates=True` returns the
[intermediates](../generation/intermediates.md) of the pass, which `cache=` accepts to continue the
sequence; `return_logits_and_embeddings`, `prepend_embeds` (e.g. image embeddings before the text, as
in PaLI), `prepend_mask=`, `pos=` (`(n,)`, one row per sequence `(b, n)`, or per ALiBi head `(b, h, n)`:
[custom positions](../positional/custom_positions.md)), `seq_start_pos=` (with prepended embeddings it
counts from the first of them),
`embed_ids=`, `sum_embeds=`, `mem_masks=` (one per Transformer-XL memory), and `token_emb_kwargs=` and
`to_logits_kwargs=` for custom embedding and output modules.  The techniques of its
`TransformerWrapper` keywords each have a page of their own under `wrapping/`:
[embeddings](../wrapping/embeddings.md) (`l2norm_embed`, `scaled_sinu_pos_emb`, `emb_frac_gradient`,
`embed_num_tokens`), [pooling](../wrapping/pooling.md) (`use_cls_token`, `average_pool_embed`,
`attn_pool`), [output heads](../wrapping/output_heads.md) (`mixture_of_softmax`, `sigsoftmax_logits`,
`num_output_heads`, `add_continuous_pred_head`), the [attention z-loss](../wrapping/z_loss.md),
[recycling](../wrapping/recycling.md), the [looped LM](../wrapping/looped.md) (`looped`,
`max_looped_steps`; it needs `pre_and_post_norm` in the stack) and the [deep
embedding](../wrapping/deep_embed.md) (`ff_deep_embed`).  `post_emb_norm` is a LayerNorm on the
embeddings (before the projection to the stack's width), `token_emb=` replaces the embedding with a
module of one's own.

The order of a forward pass, as in x-transformers: token embedding $+$ positions $+$ extra
embeddings $\to$ `post_emb_norm` $\to$ prepended embeddings $\to$ gradient shrink $\to$ dropout
$\to$ projection $\to$ [CLS] and memory tokens $\to$ the stack (recycled) $\to$ pools $\to$ the head.

**Differences from x-transformers.**  `seq_start_pos` masks the keys before each row's start (and
shifts the positions), as in x-transformers; it counts from the first prepended embedding but leaves
memory and [CLS] tokens visible (x-transformers counts them too).  The rest is on the pages of the
parts: [positions and memories](sequence_wrapper.md), [the head](logits_head.md), [the continuous
wrapper](continuous_wrapper.md).

Shapes: `b` batch, `n` tokens, `p` prepended embeddings, `D` model width, `E` embedding width, `V`
vocabulary size, `M` memory tokens.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..checks import check_cache, check_init_std, check_int
from ..generation.intermediates import AttentionRecord, LayerIntermediates, drop_cached, left_pad_mask
from ..generation.kv_cache import LayersCache
from ..wrapping.deep_embed import DeepEmbedding
from ..wrapping.embeddings import ExtraEmbeddings, L2NormEmbedding, shrink_gradient
from ..wrapping.looped import check_looped, loop_count, run_loops
from ..wrapping.pooling import AttentionPool, masked_mean
from ..wrapping.z_loss import attn_z_loss
from .block_inputs import check_transforms, transform_block_input
from .continuous_wrapper import ContinuousTransformerWrapper as ContinuousTransformerWrapper
from .initialisation import init_token_embedding
from .layers import AttentionLayers
from .logits_head import _LogitsHead
from .sequence_wrapper import _SequenceWrapper, cache_started

# The helpers this module imported before its parts moved to pages of their own, still importable from
# here (each `name as name` marks a re-export).
# isort: off
from ..attention.fast_attention import keeps_no_weights as keeps_no_weights
from ..checks import check_mask as check_mask
from ..checks import check_probability as check_probability
from ..generation.intermediates import new_shared_cache as new_shared_cache
from ..generation.intermediates import resume as resume
from ..generation.intermediates import snapshot as snapshot
from ..memory.interspersed_memory_tokens import intersperse as intersperse
from ..memory.interspersed_memory_tokens import strip_interspersed as strip_interspersed
from ..memory.memory_tokens import MemoryTokens as MemoryTokens
from ..memory.xl_recurrence import shift_memories_down as shift_memories_down
from ..memory.xl_recurrence import update_memories as update_memories
from ..positional.absolute import LearnedPositionalEmbedding as LearnedPositionalEmbedding
from ..positional.absolute import SinusoidalPositionalEmbedding as SinusoidalPositionalEmbedding
from ..wrapping.embeddings import ScaledSinusoidalEmbedding as ScaledSinusoidalEmbedding
from ..wrapping.embeddings import l2norm as l2norm
from ..wrapping.output_heads import MixtureOfSoftmaxes as MixtureOfSoftmaxes
from ..wrapping.output_heads import NextEmbeddingHead as NextEmbeddingHead
from ..wrapping.output_heads import sigsoftmax_logits as sigsoftmax_logits
from ..wrapping.recycling import recycle as recycle
# isort: on


class TransformerWrapper(_LogitsHead, _SequenceWrapper):
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
        self.input_not_include_cache = input_not_include_cache
        # The head ([the output head](logits_head.md)).
        self._make_head(num_tokens=num_tokens, emb_dim=emb_dim, logits_dim=logits_dim, logits_bias=logits_bias,
                        num_output_heads=num_output_heads, tie_embedding=tie_embedding,
                        tie_embedding_scale=tie_embedding_scale, return_only_embed=return_only_embed,
                        to_logits=to_logits, mixture_of_softmax=mixture_of_softmax,
                        mixture_of_softmax_k=mixture_of_softmax_k, sigsoftmax_logits=sigsoftmax_logits,
                        squeeze_out_last_dim=squeeze_out_last_dim, add_continuous_pred_head=add_continuous_pred_head)

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

    def logits(self, h: Tensor, **head_kwargs) -> Any:
        """Project final hidden states `(b, n, D)` to logits `(b, n, V)` (a tuple with several heads);
        `head_kwargs` go to a custom `to_logits` module ([the output head](logits_head.md))."""
        return self._logits(h, **head_kwargs)

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
        self._check_seq_start_pos(seq_start_pos, x)
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
        # PaLI: image (or other) embeddings before the text.
        h, mask, prefix = self._sum_norm_prepend(h, sum_embeds, prepend_embeds, mask, prepend_mask)  # (b, p + n, E)
        if prepend_embeds is not None and seq_start_pos is not None and not cached_step:
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
