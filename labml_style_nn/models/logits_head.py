r"""
# The output head: from hidden states to logits

The last step of a [`TransformerWrapper`](wrappers.md): the final hidden states $h_t$ `(b, n, D)`
become logits over the vocabulary `(b, n, V)`, whose softmax is the next-token distribution.

* **Tied** (`tie_embedding=True`, [Press & Wolf, 2017](https://arxiv.org/abs/1608.05859)): the
  token embedding matrix $E$ `(V, D)` is also the output projection, after a rescaling $s$,
  $$z_t = (s\, h_t)\, E^\top,$$
  with $s = D^{-1/2}$ by default (x-transformers' and T5's; `tie_embedding_scale=1.0` is GPT-2's).
* **Untied**: a linear layer $z_t = W h_t\ (+\, b)$ to `logits_dim` outputs (`num_tokens` by
  default), or `num_output_heads` independent ones, whose logits come back as a tuple.
* **Variants** with pages of their own ([output heads](../wrapping/output_heads.md)): a mixture of
  softmaxes (`mixture_of_softmax`, log-probabilities out), the sigsoftmax ($z + \log \sigma(z)$)
  and a head predicting the next input embedding (`add_continuous_pred_head`).
* **Modules of one's own**: `to_logits=` replaces the head (its keyword arguments come from the
  forward's `to_logits_kwargs=`), and `return_only_embed=True` builds none: the wrapper then
  returns the final hidden states.  `squeeze_out_last_dim` drops a last axis of size 1 (e.g.
  `logits_dim=1` for regression).

The head is a mixin of the wrapper rather than a module of its own, so that its parameters keep
the names x-transformers gives them (`to_logits.weight`, `to_next_embed_pred.*`): checkpoints load
into either library.

**Differences from x-transformers.**  `logits_bias=True` adds a bias to the untied head (none by
default, as in x-transformers; this library had one before the [training parity
study](initialisation.md)).  The tied projection rescales the hidden states before the product,
x-transformers the logits after it: the same numbers up to rounding.

Shapes: `b` batch, `n` tokens, `D` model width, `V` vocabulary size (or `logits_dim`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..wrapping.output_heads import MixtureOfSoftmaxes, NextEmbeddingHead, sigsoftmax_logits


class _LogitsHead:
    """The output side of `TransformerWrapper`: its head, built by `_make_head`, and `_logits`."""

    dim: int
    token_emb: nn.Module
    to_logits: Optional[nn.Module]
    mixture: Optional[MixtureOfSoftmaxes]
    to_next_embed_pred: Optional[NextEmbeddingHead]

    def _make_head(self, *, num_tokens: int, emb_dim: int, logits_dim: Optional[int], logits_bias: bool,
                   num_output_heads: int, tie_embedding: bool, tie_embedding_scale: Optional[float],
                   return_only_embed: bool, to_logits: Optional[nn.Module], mixture_of_softmax: bool,
                   mixture_of_softmax_k: int, sigsoftmax_logits: bool, squeeze_out_last_dim: bool,
                   add_continuous_pred_head: bool) -> None:
        """Check the head's keywords and make its parts, in a fixed order (mixture, linear heads, the
        next-embedding head) so that one seed draws the same parameters."""
        self.output_is_log_prob = mixture_of_softmax
        self.mixture = MixtureOfSoftmaxes(self.dim, mixture_of_softmax_k) if mixture_of_softmax else None
        self.sigsoftmax_logits = sigsoftmax_logits
        self.squeeze_out_last_dim = squeeze_out_last_dim
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
            self.to_logits = None
        elif to_logits is not None:
            self.to_logits = to_logits
        elif num_output_heads > 1:
            self.to_logits = nn.ModuleList(nn.Linear(self.dim, out_dim, bias=logits_bias) for _ in range(num_output_heads))
        else:
            self.to_logits = nn.Linear(self.dim, out_dim, bias=logits_bias)
        self.return_only_embed = return_only_embed
        self.add_continuous_pred_head = add_continuous_pred_head
        self.to_next_embed_pred = NextEmbeddingHead(self.dim) if add_continuous_pred_head else None

    def _tied_weight(self) -> Optional[Tensor]:
        weight = getattr(self.token_emb, "weight", None)
        if weight is None and hasattr(self.token_emb, "emb"):
            weight = getattr(self.token_emb.emb, "weight", None)
        return weight if torch.is_tensor(weight) else None

    def _logits(self, h: Tensor, **head_kwargs) -> Any:
        """Final hidden states `(b, n, D)` to logits `(b, n, V)`: the head, then the logits' transforms."""
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
