"""Weight-tied layers, execution orders, PAR / custom / attention-only layouts and layer_schedule."""

import doctest
import sys
from pathlib import Path

import pytest
import torch
import x_transformers as xt
from torch import nn

from labml_style_nn import Decoder, layer_schedule
from labml_style_nn.generation import LayersCache
from labml_style_nn.models import layer_sharing, layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xt_parity import assert_same_logits, build_pair  # noqa: E402

D = 16
SMALL = dict(dim=D, heads=2, attn_dim_head=8)


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_a_tied_stack_has_one_layers_parameters_and_runs_it_depth_times():
    tied, one = Decoder(depth=3, weight_tie_layers=True, **SMALL), Decoder(depth=1, **SMALL)
    assert count(tied) == count(one) and len(tied.blocks) == 6 and tied.blocks[0] is tied.blocks[2]
    x = torch.randn(2, 5, D)
    # Running it three times is running the one layer thrice (the final norm once).
    with torch.no_grad():
        for src, dst in zip(tied.parameters(), one.parameters(), strict=True):
            dst.copy_(src)
        final, one.final_norm = one.final_norm, nn.Identity()
        thrice = final(one(one(one(x))))
        one.final_norm = final
        torch.testing.assert_close(tied(x), thrice)
        assert not torch.allclose(tied(x), one(x), atol=1e-4)


def test_execution_order_reuses_blocks_and_caches_stay_per_run():
    model = Decoder(depth=2, layers_execute_order=(2, 3, 0, 1, 2, 3), **SMALL).eval()
    assert model.layer_types == ("a", "f") * 3 and model.blocks[0] is model.blocks[4]
    assert count(model) == count(Decoder(depth=2, **SMALL))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 6, D)
    cache = LayersCache(model, 2, 6)
    with torch.no_grad():
        steps = [model(x[:, :2], cache=cache)] + [model(x[:, t:t + 1], cache=cache) for t in range(2, 6)]
        torch.testing.assert_close(torch.cat(steps, 1), model(x), atol=1e-5, rtol=1e-4)


def test_layouts_match_x_transformers():
    for kw in (dict(depth=4, par_ratio=4), dict(depth=6, par_ratio=3), dict(depth=4, cross_attend=True, par_ratio=6),
               dict(depth=3, only_attn=True), dict(custom_layers=("a", "f", "f", "a"))):
        ours, theirs = Decoder(**SMALL, **kw), xt.Decoder(**SMALL, **kw)
        assert "".join(ours.layer_types) == "".join(theirs.layer_types), kw
    assert Decoder(dim=D, custom_layers=("a", "a", "f")).layer_types == ("a", "a", "f")  # depth left out


@pytest.mark.parametrize("kw, message", [
    (dict(depth=2, weight_tie_layers=True, sandwich_coef=1), "weight_tie_layers and sandwich_coef"),
    (dict(depth=2, only_attn=True, layers_execute_order=(0, 1)), "only_attn and layers_execute_order"),
    (dict(depth=2, layers_execute_order=(0, 7)), "layers_execute_order"),
    (dict(depth=2, par_ratio=2, sandwich_coef=1), "par_ratio and sandwich_coef"),
    (dict(custom_layers=("a", "c")), "custom_layers"),
    (dict(custom_layers=("a", "x")), "custom_layers"),
    (dict(depth=2, par_ratio=1), "par_ratio"),
    (dict(depth=2, only_attn=True, reversible=True), "reversible and only_attn"),
])
def test_refusals(kw, message):
    with pytest.raises(ValueError, match=message):
        Decoder(**SMALL, **kw)


def test_layer_schedule_is_x_transformers():
    for args in [(4.0, 2.0, 5, "cosine"), (1.0, 3.0, 3, "linear")]:
        assert layer_schedule(*args) == pytest.approx(xt.layer_schedule(*args))
    assert layer_schedule(0.0, 1.0, 3, lambda s, e, t: t * t) == (0.0, 0.25, 1.0)
    with pytest.raises(ValueError, match="schedule"):
        layer_schedule(0.0, 1.0, 3, "exponential")


@pytest.mark.parametrize("kw", [dict(depth=2, weight_tie_layers=True), dict(depth=2, layers_execute_order=(2, 3, 0, 1, 2, 3)),
                                dict(custom_layers=("a", "f", "f", "a")), dict(depth=4, par_ratio=4),
                                dict(depth=2, only_attn=True)])
def test_parity_with_x_transformers(kw):
    ours, theirs = build_pair(dict(num_tokens=20, max_seq_len=16), "Decoder", dict(SMALL, **kw))
    assert_same_logits(ours, theirs, 20, grads="weight_tie_layers" in kw)


@pytest.mark.parametrize("module", [layer_sharing, layout])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
