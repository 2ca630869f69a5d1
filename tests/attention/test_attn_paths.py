"""Which attention path runs for which feature, and that the two paths agree."""

import pytest
import torch
from attn_features import DIM, make_stack, run

# Features that leave the scores alone keep the fused kernel; the others need the score matrix.
FUSED = ["mem_kv", "head_scale", "gate_values", "gate_values_old_keyword", "on_attn", "collab_heads",
         "qk_norm", "gated_attention", "qk_norm_xt", "qk_rmsnorm", "value_dim_head", "l2_laser_zero_kv", "latent_qkv",
         "latent_deepseek", "dropout"]
EXPLICIT = ["sparse_topk", "entmax15", "talking_heads", "residual_attn", "residual_attn_post_norm", "xt_talking_heads",
            "custom_attn_fn", "sigmoid", "hard", "cog_softclamp", "topk_straight_through_sink"]


def _inputs():
    x = torch.randn(2, 7, DIM)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    context = torch.randn(2, 4, DIM)
    return x, mask, context


def _attention_blocks(model):
    return [b for b in model.blocks if b.kind in ("a", "c")]


@pytest.mark.parametrize("feature", FUSED)
def test_fused_kernel_runs_for_features_that_leave_scores_alone(feature, sdpa_calls):
    model = make_stack("cross_decoder", feature)
    blocks = _attention_blocks(model)
    assert all(b.fn.uses_fused_path for b in blocks)
    x, mask, context = _inputs()
    run(model, feature, x, mask=mask, context=context)
    assert len(sdpa_calls) == len(blocks)


@pytest.mark.parametrize("feature", EXPLICIT)
def test_explicit_path_runs_for_features_that_change_scores(feature, sdpa_calls):
    model = make_stack("cross_decoder", feature)
    x, mask, context = _inputs()
    run(model, feature, x, mask=mask, context=context)
    # Residual attention chains only self-attention scores; cross-attention stays fused.
    n_cross = sum(b.kind == "c" for b in model.blocks)
    assert len(sdpa_calls) == (n_cross if feature.startswith("residual_attn") else 0)
    if feature not in ("residual_attn", "residual_attn_post_norm"):
        assert not any(b.fn.uses_fused_path for b in _attention_blocks(model))


def test_attention_dropout_reaches_the_fused_kernel_only_in_training(sdpa_calls):
    model = make_stack("decoder", "dropout")
    x, mask, _ = _inputs()
    model.train()
    model(x, mask=mask)
    model.eval()
    model(x, mask=mask)
    assert [c["dropout_p"] for c in sdpa_calls] == [0.2, 0.2, 0.0, 0.0]


@pytest.mark.parametrize("kind", ["decoder", "encoder", "cross_attender"])
@pytest.mark.parametrize("feature", FUSED[:-1])
def test_fused_equals_explicit(feature, kind):
    """Each attention layer computes the same function on both paths (`return_scores` forces explicit)."""
    model = make_stack(kind, feature).eval()
    x, mask, context = _inputs()
    for block in _attention_blocks(model):
        kw = dict(context=context, context_mask=mask[:, :4]) if block.kind == "c" else dict(mask=mask)
        fused, _ = block.fn(x, **kw)
        explicit, scores = block.fn(x, return_scores=True, **kw)
        assert scores is not None
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


#
# Residual attention (RealFormer): each layer's scores are its own plus the previous layer's.
def _record_scores(model, kind):
    """Per attention layer of `kind`: (its input, its keyword arguments, the scores it returned)."""
    records = []
    for block in model.blocks:
        if block.kind == kind:
            block.fn.register_forward_hook(
                lambda m, args, kwargs, out: records.append((m, args, kwargs, out[1])), with_kwargs=True)
    return records


@pytest.mark.parametrize("kind,feature,layer_kind", [
    ("encoder", "residual_attn", "a"),
    ("encoder", "residual_attn_post_norm", "a"),
    ("decoder", "residual_attn", "a"),
    ("cross_attender", "cross_residual_attn", "c"),
    ("cross_decoder", "cross_residual_attn", "c"),
])
def test_residual_attention_adds_previous_scores(kind, feature, layer_kind):
    model = make_stack(kind, feature).eval()
    x, mask, context = _inputs()
    records = _record_scores(model, layer_kind)
    extra = dict(context=context) if kind.startswith("cross") else {}
    model(x, mask=mask, **extra)
    assert len(records) == 2 and records[0][2]["prev_scores"] is None
    (m0, a0, kw0, s0), (m1, a1, kw1, s1) = records
    assert kw1["prev_scores"] is s0
    own = m1(*a1, **{**kw1, "prev_scores": None, "return_scores": True})[1]
    torch.testing.assert_close(s1, own + s0)
    if feature == "residual_attn_post_norm":
        assert all(b.pre_norm is None and b.post_norm is not None for b in model.blocks)


def test_cross_residual_leaves_self_attention_alone():
    model = make_stack("cross_decoder", "cross_residual_attn").eval()
    x, mask, context = _inputs()
    records = _record_scores(model, "a")
    model(x, mask=mask, context=context)
    assert all(r[2]["prev_scores"] is None for r in records)


def test_xtransformer_dec_cross_residual_attn_chains_cross_attention_only():
    from labml_style_nn.models.xtransformer import XTransformer
    model = XTransformer(dim=DIM, enc_num_tokens=20, enc_depth=2, enc_heads=4, enc_max_seq_len=16,
                         dec_num_tokens=20, dec_depth=3, dec_heads=4, dec_max_seq_len=16,
                         dec_cross_residual_attn=True).eval()
    stack = model.decoder.net.attn_layers
    cross, selfs = _record_scores(stack, "c"), _record_scores(stack, "a")
    src, tgt = torch.randint(0, 20, (2, 6)), torch.randint(0, 20, (2, 5))
    loss = model(src, tgt)
    assert torch.isfinite(loss)
    assert len(cross) == 3 and [r[2]["prev_scores"] is None for r in cross] == [True, False, False]
    assert cross[2][2]["prev_scores"] is cross[1][3]
    assert all(r[2]["prev_scores"] is None for r in selfs)
    assert all(b.fn.__class__.__name__ == "Attention" for b in model.encoder.attn_layers.blocks if b.kind == "a")


@pytest.mark.parametrize("positions", [dict(alibi_pos_emb=True), dict(rel_pos_bias=True)])
def test_bf16_model_explicit_path_keeps_its_dtype(positions):
    """A model cast to bf16 takes the explicit path (here for `attn_sink`) with a float32 bias (ALiBi's) without
    promoting the scores: the output stays bf16 and matches the fused path."""
    from labml_style_nn import Decoder

    torch.manual_seed(0)
    stack = Decoder(dim=32, depth=1, heads=4, attn_dim_head=8, **positions).to(torch.bfloat16).eval()
    x = torch.randn(2, 12, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        fused, maps = stack(x), []
        explicit = stack(x, attn_sink=maps)
    assert explicit.dtype == torch.bfloat16 and maps[0].dtype == torch.bfloat16
    assert (explicit.float() - fused.float()).abs().max() < 0.1
