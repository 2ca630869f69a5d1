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

Shapes: `b` batch, `n` tokens, `D` model width, `V` vocabulary size, `M` memory tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..checks import check_cache, check_int, check_mask, check_probability
from ..memory.memory_tokens import MemoryTokens
from ..memory.xl_recurrence import shift_memories_down, update_memories
from ..positional.absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from .layers import AttentionLayers


def cache_started(cache) -> bool:
    """Whether a key/value cache already holds tokens.

    Its `offset` counts them: a Python int, or in a static cache (`generation/static_cache.py`) a
    tensor once it holds any, so that a compiled step reads the count as data.
    """
    return cache is not None and not (isinstance(cache.offset, int) and cache.offset == 0)


class _SequenceWrapper(nn.Module):
    """What token and continuous wrappers share: positions, memory tokens, XL memories."""

    def __init__(self, *, max_seq_len: int, attn_layers: AttentionLayers, emb_dropout: float,
                 num_memory_tokens: int, max_mem_len: int, shift_mem_down: int,
                 use_abs_pos_emb: Optional[bool], sinusoidal_pos_emb: bool):
        super().__init__()
        if not isinstance(attn_layers, AttentionLayers):
            raise ValueError(f"attn_layers: expected an Encoder, Decoder or AttentionLayers, got {type(attn_layers).__name__}")
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
        dim = attn_layers.dim
        self.attn_layers, self.dim, self.max_seq_len = attn_layers, dim, max_seq_len
        self.max_mem_len, self.shift_mem_down = max_mem_len, shift_mem_down
        # Absolute positions: off by default when the stack has its own scheme (a relative one, or
        # position infused attention, whose values must stay free of position).
        if use_abs_pos_emb is None:
            use_abs_pos_emb = not (attn_layers.has_relative_positions or attn_layers.options.position_infused_attn)
        self.pos_emb = None
        if use_abs_pos_emb:
            self.pos_emb = SinusoidalPositionalEmbedding(dim) if sinusoidal_pos_emb \
                else LearnedPositionalEmbedding(dim, max_seq_len)
        self.learned_positions = use_abs_pos_emb and not sinusoidal_pos_emb
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.memory_tokens = MemoryTokens(num_memory_tokens, dim) if num_memory_tokens else None

    @staticmethod
    def _check_mask(mask: Optional[Tensor], x: Tensor) -> None:
        """The padding mask must be boolean, with one entry per input position, `(b, n)`."""
        check_mask("mask", mask, tuple(x.shape[:2]), f"{tuple(x.shape[:2])}, one entry per position of x")

    def _add_positions(self, h: Tensor, offset, seq_start_pos: Optional[Tensor] = None) -> Tensor:
        if self.pos_emb is None:
            return h
        n = h.shape[1]
        if not isinstance(offset, int):
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
            return h + self.pos_emb(positions.flatten()).view(*positions.shape, -1).to(h.dtype)
        return h + self.pos_emb(positions).to(h.dtype)

    #
    # ## The shared forward
    #
    # Embeddings in, final hidden states out, with memory tokens and XL memories handled here.
    def _run(self, h: Tensor, *, mask, context, context_mask, mems, return_mems, cache, seq_start_pos=None,
             attn_sink=None):
        num_mem_tokens = self.memory_tokens.num if self.memory_tokens is not None else 0
        first_step = not cache_started(cache)
        # Absolute position of the first token: a cache already holds the memory tokens.
        offset = 0 if first_step else cache.offset - num_mem_tokens
        if mems is not None and self.pos_emb is not None:
            raise ValueError(
                "mems: Transformer-XL memories need positions that continue across segments; with the "
                "absolute positional embedding memory and segment would share positions.  Use "
                "rel_pos_bias, rotary_pos_emb or alibi_pos_emb (the absolute embedding then turns off)")
        if return_mems and not self.max_mem_len:
            raise ValueError("return_mems: set max_mem_len > 0 on the wrapper to keep memories")
        h = self.emb_dropout(self._add_positions(h, offset, seq_start_pos))
        if self.memory_tokens is not None and first_step:
            h, mask = self.memory_tokens.prepend(h, mask)
        if mems is not None and self.shift_mem_down:
            mems = shift_memories_down(mems, self.shift_mem_down)
        h, hiddens = self.attn_layers(h, mask=mask, context=context, context_mask=context_mask,
                                      mems=mems, cache=cache, return_hiddens=True, attn_sink=attn_sink)
        if self.memory_tokens is not None and first_step:
            h = self.memory_tokens.strip(h)
            hiddens = [self.memory_tokens.strip(t) for t in hiddens]
        new_mems = update_memories(mems, hiddens, self.max_mem_len) if return_mems else None
        return h, new_mems

    @staticmethod
    def _outputs(out: Tensor, new_mems, attn_maps, return_mems: bool, return_attn: bool):
        """`out`, then the memories and the attention maps when they were asked for."""
        extra = ((new_mems,) if return_mems else ()) + ((attn_maps,) if return_attn else ())
        return (out, *extra) if extra else out


class TransformerWrapper(_SequenceWrapper):
    r"""Token ids in, logits (or embeddings) out.

    Args:
        num_tokens: vocabulary size $V$.
        max_seq_len: longest sequence the learned absolute positions cover.
        attn_layers: an `Encoder`, `Decoder` or `AttentionLayers`.
        emb_dim: token embedding width, projected to the stack's width if different.
        emb_dropout: dropout after the embedding.
        num_memory_tokens: learned memory tokens prepended to every sequence.
        max_mem_len: Transformer-XL memory length (0: no memory).
        shift_mem_down: enhanced recurrence, route layer $l$'s memory to layer $l - k$.
        tie_embedding: use the token embedding matrix as the output projection.
        tie_embedding_scale: with `tie_embedding`, multiply the final hidden states by this before
            the tied projection (T5 uses $D^{-1/2}$); `None` leaves them as they are.
        use_abs_pos_emb: absolute positions; `None` turns them off when the stack has relative ones.
        sinusoidal_pos_emb: fixed sinusoids instead of learned absolute positions.
        logits_dim: output width, `num_tokens` by default.
        logits_bias: a bias on the untied output projection (LLaMA-style heads have none).
    """

    def __init__(self, num_tokens: int, max_seq_len: int, attn_layers: AttentionLayers, *,
                 emb_dim: Optional[int] = None, emb_dropout: float = 0.0, num_memory_tokens: int = 0,
                 max_mem_len: int = 0, shift_mem_down: int = 0, tie_embedding: bool = False,
                 tie_embedding_scale: Optional[float] = None,
                 use_abs_pos_emb: Optional[bool] = None, sinusoidal_pos_emb: bool = False,
                 logits_dim: Optional[int] = None, logits_bias: bool = True):
        super().__init__(max_seq_len=max_seq_len, attn_layers=attn_layers, emb_dropout=emb_dropout,
                         num_memory_tokens=num_memory_tokens, max_mem_len=max_mem_len,
                         shift_mem_down=shift_mem_down, use_abs_pos_emb=use_abs_pos_emb,
                         sinusoidal_pos_emb=sinusoidal_pos_emb)
        check_int("num_tokens", num_tokens)
        emb_dim = self.dim if emb_dim is None else emb_dim
        check_int("emb_dim", emb_dim)
        self.num_tokens = num_tokens
        self.token_emb = nn.Embedding(num_tokens, emb_dim)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        self.project_emb = nn.Linear(emb_dim, self.dim) if emb_dim != self.dim else nn.Identity()
        if tie_embedding and (emb_dim != self.dim or (logits_dim or num_tokens) != num_tokens):
            raise ValueError("tie_embedding: needs emb_dim equal to the model width and logits_dim equal to num_tokens")
        if tie_embedding_scale is not None:
            if not tie_embedding:
                raise ValueError("tie_embedding_scale: only meaningful with tie_embedding=True "
                                 "(an untied projection learns its own scale)")
            if isinstance(tie_embedding_scale, bool) or not isinstance(tie_embedding_scale, (int, float)) \
                    or not tie_embedding_scale > 0:
                raise ValueError(f"tie_embedding_scale: expected a positive number, got {tie_embedding_scale!r}")
        self.tie_embedding, self.tie_embedding_scale = tie_embedding, tie_embedding_scale
        self.to_logits = None if tie_embedding else nn.Linear(self.dim, logits_dim or num_tokens, bias=logits_bias)

    def logits(self, h: Tensor) -> Tensor:
        """Project final hidden states `(b, n, D)` to logits `(b, n, V)`."""
        if self.to_logits is not None:  # untied (`None` exactly when tie_embedding)
            return self.to_logits(h)
        # $z = (s\, h)\, E^\top$: the tied projection, after T5's rescaling $s = D^{-1/2}$ if set
        if self.tie_embedding_scale is not None:
            h = h * self.tie_embedding_scale
        return h @ self.token_emb.weight.t()

    def forward(self, x: Tensor, *, mask: Optional[Tensor] = None, context: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None, mems: Optional[list[Tensor]] = None,
                return_mems: bool = False, return_embeddings: bool = False, cache=None,
                seq_start_pos: Optional[Tensor] = None, return_attn: bool = False):
        r"""Logits `(b, n, V)` for token ids `x` `(b, n)`.

        With `return_embeddings=True` the final hidden states `(b, n, D)` instead.  With
        `return_mems=True` also the new Transformer-XL memories: `(out, mems)`.  With
        `return_attn=True` also the attention weights of every attention layer, each `(b, h, i, j)`
        (keys include memory tokens, memories and persistent slots): `(out, [mems,] attn_maps)`.
        `seq_start_pos` `(b,)` gives the first real token of each left-padded row, where its absolute
        positions start.
        """
        if not torch.is_tensor(x) or x.dim() != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected an integer tensor of token ids with shape (batch, seq_len), got {got}")
        if not torch.compiler.is_compiling():
            check_cache("cache", cache)
        # The range check synchronises (and is a branch a compiler cannot trace); a cached step feeds
        # back tokens the model itself sampled.
        cached_step = cache_started(cache)
        if x.numel() and not cached_step and not torch.compiler.is_compiling() and (int(x.min()) < 0 or int(x.max()) >= self.num_tokens):
            raise ValueError(f"x: token ids must lie in [0, {self.num_tokens}), got values in "
                             f"[{int(x.min())}, {int(x.max())}]")
        self._check_mask(mask, x)
        h = self.project_emb(self.token_emb(x))  # (b, n, D)
        if seq_start_pos is not None and (not torch.is_tensor(seq_start_pos) or tuple(seq_start_pos.shape) != x.shape[:1]):
            raise ValueError(f"seq_start_pos: expected a tensor of shape ({x.shape[0]},), one start per row")
        attn_maps = [] if return_attn else None
        h, new_mems = self._run(h, mask=mask, context=context, context_mask=context_mask, mems=mems,
                                return_mems=return_mems, cache=cache, seq_start_pos=seq_start_pos,
                                attn_sink=attn_maps)
        out = h if return_embeddings else self.logits(h)
        return self._outputs(out, new_mems, attn_maps, return_mems, return_attn)


class ContinuousTransformerWrapper(_SequenceWrapper):
    """Real-valued vectors in, real-valued vectors out: `(b, n, dim_in)` to `(b, n, dim_out)`."""

    def __init__(self, *, max_seq_len: int, attn_layers: AttentionLayers, dim_in: Optional[int] = None,
                 dim_out: Optional[int] = None, emb_dropout: float = 0.0, num_memory_tokens: int = 0,
                 max_mem_len: int = 0, shift_mem_down: int = 0, use_abs_pos_emb: Optional[bool] = None,
                 sinusoidal_pos_emb: bool = False):
        super().__init__(max_seq_len=max_seq_len, attn_layers=attn_layers, emb_dropout=emb_dropout,
                         num_memory_tokens=num_memory_tokens, max_mem_len=max_mem_len,
                         shift_mem_down=shift_mem_down, use_abs_pos_emb=use_abs_pos_emb,
                         sinusoidal_pos_emb=sinusoidal_pos_emb)
        for name, value in (("dim_in", dim_in), ("dim_out", dim_out)):
            if value is not None:
                check_int(name, value)
        self.dim_in = dim_in or self.dim
        self.project_in = nn.Linear(dim_in, self.dim) if dim_in is not None else nn.Identity()
        self.project_out = nn.Linear(self.dim, dim_out) if dim_out is not None else nn.Identity()

    def forward(self, x: Tensor, *, mask: Optional[Tensor] = None, context: Optional[Tensor] = None,
                context_mask: Optional[Tensor] = None, mems: Optional[list[Tensor]] = None,
                return_mems: bool = False, return_embeddings: bool = False, cache=None,
                return_attn: bool = False):
        """Outputs `(b, n, dim_out)` for inputs `x` `(b, n, dim_in)` (extra outputs as `TransformerWrapper`)."""
        if not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != self.dim_in or not x.is_floating_point():
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected a float tensor of shape (batch, seq_len, {self.dim_in}), got {got}")
        self._check_mask(mask, x)
        check_cache("cache", cache)
        attn_maps = [] if return_attn else None
        h, new_mems = self._run(self.project_in(x), mask=mask, context=context, context_mask=context_mask,
                                mems=mems, return_mems=return_mems, cache=cache, attn_sink=attn_maps)
        out = h if return_embeddings else self.project_out(h)
        return self._outputs(out, new_mems, attn_maps, return_mems, return_attn)
