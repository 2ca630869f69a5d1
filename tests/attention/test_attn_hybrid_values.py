"""Hybrid heads (Hymba) and orthogonal projected values."""

import pytest
import torch
from attn_sweep import DIM, DIM_HEAD, HEADS, check_keywords, make
from torch import nn
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import AutoregressiveWrapper, TransformerWrapper
from labml_style_nn.attention.orthogonal_values import orthogonal_part
from labml_style_nn.generation.kv_cache import LayersCache


def gru():
    return nn.GRU(DIM, HEADS * DIM_HEAD, batch_first=True)


SWEEPS = {
    "hybrid": (dict(attn_hybrid_module=gru()), "decoder", dict(fused=True)),
    "hybrid_learned_mix": (dict(attn_hybrid_module=gru(), attn_hybrid_learned_mix=True), "decoder", {}),
    "hybrid_folded": (dict(attn_hybrid_module=gru(), attn_hybrid_fold_axial_dim=3), "decoder", dict(cache=False)),
    "hybrid_encoder": (dict(attn_hybrid_module=gru()), "encoder", {}),
    "orthog": (dict(attn_orthog_projected_values=True), "decoder", dict(fused=True)),
    "orthog_per_head": (dict(attn_orthog_projected_values_per_head=True, attn_orthog_projected_values=True),
                        "decoder", {}),
}


@pytest.mark.parametrize("name", SWEEPS)
def test_keyword_acts_and_keeps_the_invariants(name):
    kwargs, kind, options = SWEEPS[name]
    # causal, padding-invariant, cached steps equal the full pass (asserted inside); and the keywords act
    assert check_keywords(kwargs, kind, **options) > 1e-4


def _hybrid(ours, theirs, put):
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind != "a":
            continue
        for mine, their in zip(block.fn.hybrid.module.parameters(), fn.hybrid_module.fn.parameters(), strict=True):
            put(mine, their)
        for mine, their in zip(block.fn.hybrid.norms, fn.hybrid_norms, strict=True):
            their.gamma.data.normal_()
            put(mine.gamma, their.gamma)
        if block.fn.hybrid.mix is not None:
            put(block.fn.hybrid.mix.weight, fn.hybrid_mix.weight)


@pytest.mark.parametrize("stack, kwargs", [
    ("Decoder", dict(attn_hybrid_fold_axial_dim=1)),
    ("Decoder", dict(attn_hybrid_fold_axial_dim=3, attn_hybrid_learned_mix=True)),
    ("Encoder", dict(attn_hybrid_fold_axial_dim=2)),
])
def test_hybrid_parity_with_x_transformers(stack, kwargs):
    """x-transformers needs `hybrid_fold_axial_dim` (1: no folding) to build the norms."""
    ours, theirs = build_pair(dict(num_tokens=32, max_seq_len=16), stack, dict(
        dim=32, depth=2, heads=4, attn_dim_head=8, attn_hybrid_module=nn.GRU(32, 32, batch_first=True), **kwargs))
    assert_same_logits(ours, theirs, 32, extra=[_hybrid], grads=stack == "Encoder")


def test_hybrid_takes_its_mask_keyword_in_an_encoder():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []
            self.proj = nn.Linear(DIM, HEADS * DIM_HEAD)

        def forward(self, x, mask=None):
            self.seen.append(mask)
            return self.proj(x)

    model = make("encoder", attn_hybrid_module=Masked(), attn_hybrid_mask_kwarg="mask")
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    model(torch.randn(2, 5, DIM), mask=mask)
    assert torch.equal(model.blocks[0].fn.hybrid.module.seen[0], mask)


def test_hybrid_state_is_carried_through_generation_and_folding_decodes_without_a_cache():
    def lm(**kwargs):
        torch.manual_seed(0)
        net = TransformerWrapper(num_tokens=20, max_seq_len=16, attn_layers=make("decoder", depth=2, **kwargs))
        return AutoregressiveWrapper(net).eval()

    model = lm(attn_hybrid_module=gru())
    prompts = torch.randint(0, 20, (2, 3))
    assert torch.equal(model.generate(prompts, 6, temperature=0.0),
                       model.generate(prompts, 6, temperature=0.0, cache_kv=False))
    folded = lm(attn_hybrid_module=gru(), attn_hybrid_fold_axial_dim=2)
    assert folded.generate(prompts, 4, temperature=0.0).shape == (2, 4)  # falls back to full passes
    with pytest.raises(ValueError, match="cache: a folded hybrid module"):
        folded.net(prompts, cache=LayersCache(folded.net.attn_layers, 2, 8))


def test_a_running_state_cannot_be_rewound():
    model = make("decoder", attn_hybrid_module=gru())
    cache = LayersCache(model, 1, 6)
    model(torch.randn(1, 3, DIM), cache=cache)
    with pytest.raises(ValueError, match="rewind: a layer carries a running state"):
        cache.rewind(2)


def test_orthogonal_values_remove_the_component_along_the_own_value():
    x, y = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close((orthogonal_part(x, y) * y).sum(-1), torch.zeros(4), atol=1e-5, rtol=0)
    model = make("decoder", attn_orthog_projected_values_per_head=True)
    attn = model.blocks[0].fn
    seen = []
    attn.to_out.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(1, 5, DIM)
    attn(x)
    v = attn.to_qkv(x)[..., 2 * HEADS * DIM_HEAD:].view(1, 5, HEADS, DIM_HEAD)
    torch.testing.assert_close((seen[0].view(1, 5, HEADS, DIM_HEAD) * v).sum(-1), torch.zeros(1, 5, HEADS),
                               atol=1e-5, rtol=0)


def test_x_transformers_orthogonal_projection_mixes_the_sequence():
    """Why parity does not hold: x-transformers projects each sequence as one vector, so in a decoder the
    first token's output changes with the last token."""
    from x_transformers import Decoder as TheirDecoder

    theirs = TheirDecoder(dim=DIM, depth=1, heads=HEADS, attn_dim_head=DIM_HEAD, attn_orthog_projected_values=True)
    x = torch.randn(1, 6, DIM)
    x_last = x.clone()
    x_last[:, -1] = torch.randn(DIM)
    assert (theirs(x)[:, 0] - theirs(x_last)[:, 0]).abs().max() > 1e-4
    ours = make("decoder", attn_orthog_projected_values=True)
    torch.testing.assert_close(ours(x)[:, 0], ours(x_last)[:, 0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(attn_hybrid_learned_mix=True), "attn_hybrid_learned_mix: only meaningful"),
    (dict(attn_orthog_projected_values=True, attn_on_attn=True), "both replace the output projection"),
])
def test_meaningless_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make("encoder", **kwargs)


def test_hybrid_output_of_the_wrong_width_names_the_keyword():
    with pytest.raises(ValueError, match="attn_hybrid_module: expected an output of width"):
        make("encoder", attn_hybrid_module=nn.GRU(DIM, 3, batch_first=True))(torch.randn(1, 4, DIM))
