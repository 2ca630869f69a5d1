r"""
# The continuous wrapper: vectors in, vectors out

`ContinuousTransformerWrapper` puts a layer stack to work on real-valued inputs (audio frames,
latents, the numbers of a time series): a linear layer from the input features to the model width,
the [shared wrapper](sequence_wrapper.md)'s positions, memory tokens and memories, the stack, and a
linear layer out,
$$y_t = W_\text{out}\, \mathrm{Stack}(W_\text{in} x_t + b_\text{in} + p_t) + b_\text{out}.$$
`dim_in` and `dim_out` set the widths (the model width when not given: no projection), `project_in=`
and `project_out=` replace the projections with modules of one's own, and
`use_identity_if_same_dim=True` skips a projection whose two widths agree.

With `probabilistic=True` the head gives a mean and a log-variance per output feature, and the
wrapper returns $(\mu, \sigma^2)$ stacked, `(2, b, n, dim_out)`, for the [continuous autoregressive
wrapper](../families/continuous_autoregressive.md)'s Gaussian loss.

**Differences from x-transformers.**  The projections in and out have biases; x-transformers' have none.
`seq_start_pos` only shifts the positions here and masks nothing, as x-transformers 2.31.10's
continuous wrapper does ([`TransformerWrapper`](wrappers.md) also masks the keys before it).
Prepended embeddings keep their positions in the output, as x-transformers' do.  With
`return_mems=True` the previous memories come back followed by this segment's, where x-transformers
2.31.10's continuous wrapper keeps only this segment's (see the [shared
wrapper](sequence_wrapper.md)).

Shapes: `b` batch, `n` inputs, `p` prepended embeddings, `D` model width.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..checks import check_cache, check_int
from ..generation.intermediates import LayerIntermediates, drop_cached
from ..generation.kv_cache import LayersCache
from ..wrapping.pooling import masked_mean
from .layers import AttentionLayers
from .sequence_wrapper import _SequenceWrapper, cache_started


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
        self._check_seq_start_pos(seq_start_pos, x)
        orig_mask = mask
        h = self.project_in(x)  # (b, n, D)
        h = h + self._positions(h, offset, seq_start_pos, pos)
        h, mask, prefix = self._sum_norm_prepend(h, sum_embeds, prepend_embeds, mask, prepend_mask)  # (b, p + n, D)
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
