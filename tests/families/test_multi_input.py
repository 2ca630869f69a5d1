"""MultiInputTransformerWrapper (families/multi_input.py): x-transformers' logits with its weights."""

import pytest
import torch

from labml_style_nn import Decoder, MultiInputTransformerWrapper


def test_logits_equal_xtransformers_and_every_stream_counts():
    xt = pytest.importorskip("x_transformers")
    from x_transformers.multi_input import MultiInputTransformerWrapper as Theirs
    from xt_parity import _Writer, copy_stack

    streams = dict(pitch=12, duration=5)
    torch.manual_seed(0)
    theirs = Theirs(num_tokens=streams, max_seq_len=16, attn_layers=xt.Decoder(dim=16, depth=1, heads=2)).eval()
    ours = MultiInputTransformerWrapper(num_tokens=streams, max_seq_len=16,
                                        attn_layers=Decoder(dim=16, depth=1, heads=2)).eval()
    put = _Writer(ours)
    for name in streams:
        put(ours.embeds[f"{name}_embed"].weight, theirs.embeds[f"{name}_embed"].weight)
        put(ours.to_logits[name].weight, theirs.to_logits[name].weight)
    put(ours.net.pos_emb.emb.weight, theirs.pos_emb.emb.weight * (theirs.pos_emb.scale / ours.net.pos_emb.emb_scale))
    copy_stack(put, ours.attn_layers, theirs.attn_layers)
    assert not put.unwritten()
    x = dict(pitch=torch.randint(0, 12, (2, 8)), duration=torch.randint(0, 5, (2, 8)))
    a, b = ours(x), theirs(x)
    assert set(a) == set(streams) and a["duration"].shape == (2, 8, 5)
    for name in streams:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    other = dict(x, duration=(x["duration"] + 1) % 5)
    assert not torch.allclose(ours(other)["pitch"], a["pitch"])
    with torch.no_grad():  # the cache's spelling works through the token wrapper underneath
        first, cache = ours({k: v[:, :5] for k, v in x.items()}, return_intermediates=True)
    assert first["pitch"].shape == (2, 5, 12) and cache.cache_length == 5
