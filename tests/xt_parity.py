"""Numerical parity with x-transformers 2.31.10: the same keywords build both models, x-transformers' weights
are copied into ours, and the two must compute the same function.

    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder", dict(dim=32, depth=2, heads=4,
                              rotary_pos_emb=True))
    assert_same_logits(ours, theirs)

`copy_weights` copies every parameter it knows how to map and then checks that *every* parameter of our
model was written (a new parameter without a mapping fails loudly instead of staying random).  A
technique with parameters of its own passes `extra=[fn]`, where `fn(ours, theirs, put)` copies them with
`put(our_tensor, their_tensor)`, so its mapping lives in its own test file.

Where the two libraries differ only in how a parameter is stored, the copy converts the value, so the
functions are equal (gradients with respect to the inputs too; a gradient with respect to a converted
parameter is the same because the conversions are shifts):
* x-transformers' norms store the gain minus 1 and have no bias: ours gets the same gain, stored as ours stores
  it (minus its own offset with `norm_add_unit_offset`), and bias = 0 (`copy_norm` handles every norm kind);
* its output projection has no bias: ours gets 0;
* its learned absolute positions are multiplied by dim**-0.5 in the forward pass: ours gets the product;
* its T5 bias is multiplied by sqrt(dim_head) (its `scale`): ours gets the product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
from torch import nn

import labml_style_nn as ours_package
from labml_style_nn.models.initialisation import interleaved_rotary_rows

xt = pytest.importorskip("x_transformers")

Put = Callable[[torch.Tensor, torch.Tensor], None]


def build_pair(wrapper_kwargs: dict[str, Any], stack: str, stack_kwargs: dict[str, Any], seed: int = 0,
               wrapper: str = "TransformerWrapper"):
    """(ours, theirs): the same keywords given to labml_style_nn and to x-transformers, with their weights in ours."""
    torch.manual_seed(seed)
    theirs = getattr(xt, wrapper)(**wrapper_kwargs, attn_layers=getattr(xt, stack)(**stack_kwargs))
    ours = getattr(ours_package, wrapper)(**wrapper_kwargs, attn_layers=getattr(ours_package, stack)(**stack_kwargs))
    return ours.eval(), theirs.eval()


class _Writer:
    """Copies tensors into our parameters and remembers which ones were written."""

    def __init__(self, ours: nn.Module):
        self.written: set[int] = set()
        self.ours = ours

    @torch.no_grad()
    def __call__(self, mine: torch.Tensor, value: torch.Tensor) -> None:
        if mine.shape != value.shape:
            raise AssertionError(f"shape mismatch: ours {tuple(mine.shape)}, theirs {tuple(value.shape)}")
        mine.copy_(value)
        self.written.add(id(mine))

    def zero(self, mine: torch.Tensor | None) -> None:
        if mine is not None:
            self(mine, torch.zeros_like(mine))

    def unwritten(self) -> list[str]:
        return [name for name, p in self.ours.named_parameters() if id(p) not in self.written]


def _norm_gain(norm: nn.Module) -> torch.Tensor:
    """x-transformers' norm gain as a plain multiplier (stored minus 1 with its unit offset)."""
    gain = norm.gamma if hasattr(norm, "gamma") else norm.g
    return gain + float(getattr(norm, "unit_offset", False))


def _put_offset(put: _Writer, mine: torch.Tensor, value: torch.Tensor, offset: float) -> None:
    """Write the plain value `value` into our parameter `mine`, stored as `value - offset`."""
    put(mine, (value - offset).reshape_as(mine))


def copy_norm(put: _Writer, mine: nn.Module | None, theirs: nn.Module | None) -> None:
    """Copy one norm, whatever its kind: each side's stored values are converted through the plain ones."""
    if mine is None or theirs is None:
        assert (mine is None or isinstance(mine, nn.Identity)) and theirs is None, (mine, theirs)
        return
    kind = type(theirs).__name__
    if kind == "SimpleRMSNorm":
        return
    if kind in ("AdaptiveLayerNorm", "AdaptiveRMSNorm"):
        put(mine.to_gamma.weight, theirs.to_gamma.weight)
        return
    if kind == "DynamicTanh":
        _put_offset(put, mine.alpha, theirs.pre_tanh_scale + theirs.pre_tanh_scale_offset, mine.alpha_offset)
        _put_offset(put, mine.gamma, theirs.gamma + theirs.gamma_offset, mine.gamma_offset)
        put(mine.beta, theirs.beta)
        return
    if kind == "Derf":
        _put_offset(put, mine.alpha, theirs.alpha + theirs.scale_offset, mine.alpha_offset)
        _put_offset(put, mine.gamma, theirs.gamma + theirs.scale_offset, mine.gamma_offset)
        put(mine.shift, theirs.s)
        put(mine.beta, theirs.beta)
        return
    gain = _norm_gain(theirs)
    offset = float(getattr(mine, "unit_offset", 0.0))
    if kind == "ScaleNorm":
        _put_offset(put, mine.g, gain * theirs.scale, offset)  # ours folds sqrt(dim) into its one scale
        return
    mine_gain = mine.weight if hasattr(mine, "weight") else mine.gamma
    _put_offset(put, mine_gain, gain.expand_as(mine_gain), offset)
    put.zero(getattr(mine, "bias", None))


def copy_layer_scale(put: _Writer, mine: nn.Module | None, theirs: nn.Module) -> nn.Module:
    """Copy x-transformers' LayerScale (or adaptive gate) wrapped around a branch; return the branch inside."""
    kind = type(theirs).__name__
    if kind == "LayerScale":
        _put_offset(put, mine.gamma, theirs.gamma + float(theirs.unit_offset), mine.unit_offset)
        return theirs.fn
    if kind == "AdaptiveLayerScale":
        put(mine.to_gate.weight, theirs.to_gamma.weight)
        put(mine.to_gate.bias, theirs.to_gamma.bias)
        return theirs.fn
    assert mine is None, "ours scales the branch, x-transformers does not"
    return theirs


# Row order taking x-transformers' interleaved rotary pairs (2p, 2p+1) to our halves (p, p + rot/2).
rotary_rows = interleaved_rotary_rows


def copy_attention(put: _Writer, mine: nn.Module, theirs: nn.Module, rot: int = 0) -> None:
    # Latent attention's projections are copied by its own test (`extra`).
    if getattr(mine, "latent_qkv", None) is None:
        q, k, v = theirs.to_q.weight, theirs.to_k.weight, theirs.to_v.weight
        if rot:
            q = q[rotary_rows(mine.heads, mine.dim_head, rot)]
            k = k[rotary_rows(mine.kv_heads, mine.dim_head, rot)]
        if mine.to_qkv is not None:
            put(mine.to_qkv.weight, torch.cat([q, k, v]))
        else:
            put(mine.to_q.weight, q)
            put(mine.to_kv.weight, torch.cat([k, v]))
    if isinstance(theirs.to_out, nn.Identity):  # no output projection (one head, or project_out=False)
        assert isinstance(mine.to_out, nn.Identity), "x-transformers has no output projection here, ours has one"
        return
    put(mine.to_out.weight, theirs.to_out.weight)
    if mine.to_out.bias is not None:
        put.zero(mine.to_out.bias)


def copy_feedforward(put: _Writer, mine: nn.Module, theirs: nn.Module) -> None:
    first, last = theirs.ff[0], [m for m in theirs.ff if isinstance(m, nn.Linear)][-1]
    proj = first.proj if hasattr(first, "proj") else first[0]
    mine_in = mine.proj_in.proj if hasattr(mine.proj_in, "proj") else mine.proj_in[0]
    put(mine_in.weight, proj.weight)
    if mine_in.bias is not None:
        put(mine_in.bias, proj.bias)
    put(mine.proj_out.weight, last.weight)
    if mine.proj_out.bias is not None:
        put(mine.proj_out.bias, last.bias)


def _unscaled(fn: nn.Module) -> nn.Module:
    """The branch inside x-transformers' constant `Scale` wrappers."""
    while type(fn).__name__ == "Scale":
        fn = fn.fn
    return fn


def copy_wrapper_extras(put: _Writer, ours: nn.Module, theirs: nn.Module) -> None:
    """The parameters of the wrapper keywords (wrapping/): positions, norms, tables, pools and heads."""
    if getattr(ours, "pos_emb", None) is not None and hasattr(ours.pos_emb, "scale"):
        put(ours.pos_emb.scale, theirs.pos_emb.scale)  # scaled_sinu_pos_emb
    if isinstance(getattr(ours, "post_emb_norm", None), nn.LayerNorm):
        copy_norm(put, ours.post_emb_norm, theirs.post_emb_norm)
    if getattr(ours, "project_emb", None) is not None and isinstance(ours.project_emb, nn.Linear):
        put(ours.project_emb.weight, theirs.project_emb.weight)
        put(ours.project_emb.bias, theirs.project_emb.bias)
    if getattr(ours, "embeds", None) is not None:
        for name, table in ours.embeds.embeds.items():
            put(table.weight, theirs.embeds[name].weight)
    if getattr(ours, "ff_deep_embed", None) is not None:
        put(ours.ff_deep_embed.gains, theirs.ff_deep_embed)
    if getattr(ours, "cls_token", None) is not None:
        put(ours.cls_token, theirs.cls_token)
    if getattr(ours, "memory_tokens", None) is not None:
        put(ours.memory_tokens.tokens, theirs.memory_tokens)
    if getattr(ours, "recycled_proj", None) is not None:
        put(ours.recycled_proj.weight, theirs.recycled_proj.weight)
    if getattr(ours, "attn_pool", None) is not None and not ours.attn_pool.blocks:
        put(ours.attn_pool.queries, theirs.attn_pool.queries)
        copy_attention(put, ours.attn_pool.pooler, theirs.attn_pool.pooler)
    if getattr(ours, "mixture", None) is not None:
        put(ours.mixture.to_mixture.weight, theirs.to_mixture[0].weight)
        put(ours.mixture.combine_mixture.weight, theirs.combine_mixture.weight)
    if isinstance(getattr(ours, "to_logits", None), nn.ModuleList):
        for mine, their in zip(ours.to_logits, theirs.to_logits, strict=True):
            put(mine.weight, their.weight)
            put.zero(mine.bias)
    if getattr(ours, "to_next_embed_pred", None) is not None:
        for i in (0, 2):
            put(ours.to_next_embed_pred[i].weight, theirs.to_next_embed_pred[i].weight)


def copy_weights(ours: nn.Module, theirs: nn.Module,
                 extra: Iterable[Callable[[nn.Module, nn.Module, _Writer], None]] = ()) -> None:
    """Copy x-transformers' parameters into ours (see the module docstring); fail if one of ours is left."""
    put = _Writer(ours)
    put(ours.token_emb.weight, theirs.token_emb.emb.weight)
    if getattr(ours, "pos_emb", None) is not None and hasattr(theirs.pos_emb, "emb"):
        put(ours.pos_emb.emb.weight, theirs.pos_emb.emb.weight * (theirs.pos_emb.scale / ours.pos_emb.emb_scale))
    if isinstance(ours.to_logits, nn.Linear):
        put(ours.to_logits.weight, theirs.to_logits.weight)
        put.zero(ours.to_logits.bias)
    copy_wrapper_extras(put, ours, theirs)
    copy_stack(put, ours.attn_layers, theirs.attn_layers)
    for fn in extra:
        fn(ours, theirs, put)
    left = put.unwritten()
    assert not left, f"parameters of ours without x-transformers' value: {left}"


def copy_stack(put: _Writer, layers: nn.Module, their_layers: nn.Module) -> None:
    """Copy the parameters of an x-transformers `AttentionLayers` into ours."""
    # x-transformers runs its layers in `layers_execute_order` (weight tying repeats them); ours holds the
    # module of each run, so a tied layer is written once per run, with the same values.
    their_runs = [their_layers.layers[i] for i in their_layers.layers_execute_order]
    assert len(layers.blocks) == len(their_runs), "the two stacks have different layouts"
    for block, (norms, fn, _residual) in zip(layers.blocks, their_runs, strict=True):
        pre, post_branch, post_main = norms
        copy_norm(put, block.pre_norm, pre)
        copy_norm(put, block.branch_norm, post_branch)
        copy_norm(put, block.post_norm, post_main)
        # A numeric `depth_scale_residual` (and macaron's half step) wraps a branch in a constant `Scale`;
        # ours folds the constants into the block's step.
        fn = copy_layer_scale(put, block.layer_scale, _unscaled(fn))
        fn = _unscaled(fn)
        if block.kind == "f":
            copy_feedforward(put, block.fn, fn)
        else:
            # Cross-attention's queries and keys are reordered alike: their scores are unchanged, and with
            # `context_pos` they are rotated as in self-attention.
            rot = layers.rotary.dim if layers.rotary is not None else 0
            copy_attention(put, block.fn, fn, rot)
    if getattr(layers, "condition_mlp", None) is not None:
        put(layers.condition_mlp.proj.weight, their_layers.adaptive_mlp[0].weight)
    if not isinstance(layers.final_norm, nn.Identity):
        copy_norm(put, layers.final_norm, their_layers.final_norm)
    if layers.rel_pos is not None and hasattr(their_layers.rel_pos, "relative_attention_bias"):
        t5 = their_layers.rel_pos
        put(layers.rel_pos.bias.weight, t5.relative_attention_bias.weight * t5.scale)


def assert_same_logits(ours: nn.Module, theirs: nn.Module, num_tokens: int, seq_len: int = 12, batch: int = 2,
                       pad: bool = True, atol: float = 1e-5, extra=(), grads: bool = False, **call_kwargs) -> None:
    """Copy the weights, then the logits (and, with `grads`, the input-embedding gradients) agree within `atol`."""
    copy_weights(ours, theirs, extra)
    torch.manual_seed(1)
    x = torch.randint(0, num_tokens, (batch, seq_len))
    kwargs = dict(call_kwargs)
    if pad:
        mask = torch.ones(batch, seq_len, dtype=torch.bool)
        mask[0, -3:] = False  # right padding on the first row
        kwargs["mask"] = mask
    a, b = ours(x, **kwargs), theirs(x, **kwargs)
    if pad:
        keep = kwargs["mask"][..., None]
        a, b = a * keep, b * keep  # padded positions' outputs are not compared
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)
    if grads:
        ga = torch.autograd.grad(a.square().sum(), ours.token_emb.weight)[0]
        gb = torch.autograd.grad(b.square().sum(), theirs.token_emb.emb.weight)[0]
        torch.testing.assert_close(ga, gb, atol=atol * 10, rtol=1e-4)
