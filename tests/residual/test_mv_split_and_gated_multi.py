"""MV-Split residuals and gated multi residuals (`residual/mv_split_residual.py`, `residual/gated_multi_residual.py`):
formulas, the causal mean, refusals, and weight-copied parity with x-transformers 2.31.10.

The causality, padding and gradient sweeps are in `test_res_techniques.py`; cached decoding and
Transformer-XL memories of the gated residual in `test_res_stream.py`."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.generation import LayersCache
from labml_style_nn.residual.gated_multi_residual import GatedMultiResidual
from labml_style_nn.residual.mv_split_residual import MVSplitResidual, token_mean

V = 29
GATED = dict(gated_multi_residual=True, residual_fn_kwargs={"read_gate_rank": 4})


@pytest.mark.parametrize("kwargs", [dict(mv_split_residual=True), GATED, dict(GATED, num_residual_streams=2)])
def test_output_changes_when_on(kwargs):
    x = torch.randn(2, 6, 16)
    outs = []
    for on in (False, True):
        torch.manual_seed(0)
        outs.append(Decoder(dim=16, depth=2, heads=2, **(kwargs if on else {}))(x))
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    # residual_fn_kwargs acts: MV-Split's starting gains
    torch.manual_seed(0)
    more = Decoder(dim=16, depth=2, heads=2, mv_split_residual=True, residual_fn_kwargs={"init_beta": 0.5})(x)
    torch.manual_seed(0)
    assert (more - Decoder(dim=16, depth=2, heads=2, mv_split_residual=True)(x)).abs().max() > 1e-3


def test_mv_split_moves_the_mean_leakily_and_adds_the_centred_update():
    torch.manual_seed(0)
    r = MVSplitResidual(8, causal=False, init_alpha=0.3, init_beta=0.5)
    x, f = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    out = r(f, x)
    # $\bar x' = (1 - \alpha) \bar x + \alpha \bar F$ and $x' - \bar x' = (x - \bar x) + \beta (F - \bar F)$
    torch.testing.assert_close(out.mean(1), 0.7 * x.mean(1) + 0.3 * f.mean(1))
    torch.testing.assert_close(out - out.mean(1, keepdim=True),
                               x - x.mean(1, keepdim=True) + 0.5 * (f - f.mean(1, keepdim=True)))
    # Causal: token i's means are over tokens j <= i, padding left out.
    mask = torch.tensor([[True] * 6, [True, False, True, True, True, True]])
    mean = token_mean(x, mask, causal=True)
    torch.testing.assert_close(mean[1, 3], x[1, [0, 2, 3]].mean(0))
    torch.testing.assert_close(mean[0, 2], x[0, :3].mean(0))


def test_xtransformers_mv_split_decoder_reads_the_future_and_ours_does_not():
    kwargs = dict(dim=16, depth=2, heads=2, attn_dim_head=8, mv_split_residual=True)
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), "Decoder", kwargs)
    ids = torch.randint(0, V, (1, 7))
    later = ids.clone()
    later[0, -1] = (later[0, -1] + 1) % V
    with torch.no_grad():
        assert (theirs(ids)[0, 0] - theirs(later)[0, 0]).abs().max() > 1e-5  # the first token sees the last
        torch.testing.assert_close(ours(ids)[0, :6], ours(later)[0, :6])
        # On one token the whole-sequence mean and the causal mean are the same.
        assert_same_logits(ours, theirs, V, seq_len=1, batch=2, pad=False, extra=[_copy_residuals])


def _copy_residuals(ours, theirs, put):
    their_runs = [theirs.attn_layers.layers[i][2] for i in theirs.attn_layers.layers_execute_order]
    for block, residual in zip(ours.attn_layers.blocks, their_runs, strict=True):
        mine = block.residual
        if isinstance(mine, MVSplitResidual):
            if mine.to_alpha is not None and mine.to_beta is not None:
                for name in ("to_alpha", "to_beta"):
                    put(getattr(mine, name).weight, getattr(residual, name).weight)
                    put(getattr(mine, name).bias, getattr(residual, name).bias)
            else:
                put(mine.alpha, residual.alpha)
                put(mine.beta, residual.beta)
        elif isinstance(mine, GatedMultiResidual):
            for name in ("read_gain", "static_read_logit", "static_write_logit", "dynamic_gate_scale"):
                put(getattr(mine, name), getattr(residual, name))
            for name in ("to_bottleneck", "to_read_gate", "to_write_gate"):
                put(getattr(mine, name).weight, getattr(residual, name).weight)
    if ours.attn_layers.streams is not None:
        put(ours.attn_layers.streams.stream_emb, theirs.attn_layers.stream_emb)


PARITY = [
    ("Encoder", dict(mv_split_residual=True)),
    ("Encoder", dict(mv_split_residual=True, residual_fn_kwargs={"learned": True, "init_alpha": 0.1})),
    ("Decoder", dict(GATED)),
    ("Decoder", dict(GATED, num_residual_streams=3, rotary_pos_emb=True, rotary_emb_dim=4)),
    ("Decoder", dict(GATED, num_residual_streams=2, qkv_receive_diff_residuals=True)),
    ("Encoder", dict(GATED, num_residual_streams=2)),
]


@pytest.mark.parametrize(("stack_name", "kwargs"), PARITY, ids=lambda c: c if isinstance(c, str) else
                         "-".join(f"{k}" for k in c if k != "residual_fn_kwargs")[:60])
def test_parity_with_xtransformers(stack_name, kwargs):
    kwargs = {"dim": 32, "depth": 2, "heads": 4, "attn_dim_head": 8, **kwargs}
    ours, theirs = build_pair(dict(num_tokens=V, max_seq_len=16), stack_name, kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # zero-initialised gates and projections must matter too
    assert_same_logits(ours, theirs, V, extra=[_copy_residuals], grads=kwargs.get("num_residual_streams") == 3
                       or "learned" in str(kwargs))


def test_gated_multi_residual_at_initialisation_reads_its_own_stream_and_writes_to_all():
    torch.manual_seed(0)
    r = GatedMultiResidual(8, streams=3, layer_index=4, read_gate_rank=2)
    h = torch.randn(2, 5, 3, 8)
    branch_input, state = r.prepare(h)
    normed = torch.nn.functional.rms_norm(h, (8,))
    # sigmoid(1) on stream 4 mod 3 = 1, sigmoid(0) on the others, averaged over the streams
    gates = torch.tensor([0.5, torch.sigmoid(torch.tensor(1.0)).item(), 0.5])
    torch.testing.assert_close(branch_input, (normed * gates[:, None]).sum(2) / 3)
    f = torch.randn(2, 5, 8)
    torch.testing.assert_close(r(f, state), h + f[:, :, None])


def test_mv_split_decoder_refuses_caches_and_memories_and_generates_without_a_cache():
    torch.manual_seed(0)
    net = TransformerWrapper(num_tokens=V, max_seq_len=16, attn_layers=Decoder(
        dim=16, depth=1, heads=2, mv_split_residual=True)).eval()
    seq = torch.randint(0, V, (2, 4))
    with pytest.raises(ValueError, match="cache and mv_split_residual"):
        net(seq, cache=LayersCache(net.attn_layers, 2, 8))
    with pytest.raises(ValueError, match="mems and mv_split_residual"):
        net.attn_layers(torch.randn(2, 4, 16), mems=[torch.randn(2, 3, 16)])
    with pytest.warns(UserWarning, match="mv_split_residual"):
        out = AutoregressiveWrapper(net).generate(seq, 3, temperature=0.0)
    # Greedy decoding without a cache: each token is the argmax of the full pass.
    full = torch.cat((seq, out), dim=1)
    torch.testing.assert_close(net(full[:, :-1]).argmax(-1)[:, -3:], out)


@pytest.mark.parametrize(("kwargs", "names"), [
    (dict(gated_multi_residual=True), ("residual_fn_kwargs", "read_gate_rank")),
    (dict(GATED, sandwich_norm=True), ("gated_multi_residual", "sandwich_norm")),
    (dict(GATED, mv_split_residual=True), ("gated_multi_residual", "mv_split_residual")),
    (dict(GATED, scale_residual_constant=2.0), ("gated_multi_residual", "scale_residual_constant")),
    (dict(mv_split_residual=True, orthog_residual=True), ("mv_split_residual", "orthog_residual")),
    (dict(mv_split_residual=True, num_residual_streams=2), ("mv_split_residual", "num_residual_streams")),
    (dict(mv_split_residual=True, residual_fn_kwargs={"read_gate_rank": 2}), ("residual_fn_kwargs", "init_beta")),
    (dict(mv_split_residual=True, residual_fn_kwargs={"learned": 1}), ("residual_fn_kwargs", "learned")),
])
def test_refusals_name_the_keywords(kwargs, names):
    with pytest.raises(ValueError) as err:
        Decoder(dim=16, depth=1, heads=2, **kwargs)
    assert all(n in str(err.value) for n in names), str(err.value)


@pytest.mark.parametrize("streams", [1, 2])
def test_residual_fn_kwargs_nobody_reads_warn_as_x_transformers_ignores_them(streams):
    # x-transformers' Residual and HyperConnection take **kwargs (its tests pass hyper-connections `tanh`).
    with pytest.warns(UserWarning, match=r"residual_fn_kwargs: \['tanh'\] have no effect"):
        Decoder(dim=16, depth=1, heads=2, num_residual_streams=streams, residual_fn_kwargs={"tanh": True})
