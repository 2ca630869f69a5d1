"""Property-based tests: random combinations of the seed features, random bad keywords and inputs.

Hypothesis draws a set of seed features, merges their keywords and builds an `Encoder` or a
`Decoder`.  Combinations the options refuse (e.g. two norms at once) must be refused with a
`ValueError`; every other combination must run forward and backward with finite values and keep
its promise: a decoder's outputs never depend on later tokens, an encoder's real positions never
depend on padded ones.  Bad keywords and values must raise `TypeError` / `ValueError` naming the
argument, never an `IndexError` or a `RuntimeError` from deep inside.
"""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from robust_features import DIM, SEED_FEATURES, make_stack, padded_batch

from labml_style_nn.options import valid_layer_keywords

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
FEATURE_NAMES = sorted(set(SEED_FEATURES) - {"default"})


def _build(kind, names):
    kwargs = {}
    for name in names:
        kwargs.update(SEED_FEATURES[name])
    try:
        return make_stack(kind, **kwargs).eval()
    except ValueError:
        assume(False)  # a combination the options refuse, with a ValueError as documented


@SETTINGS
@given(names=st.sets(st.sampled_from(FEATURE_NAMES), min_size=1, max_size=4), t=st.integers(1, 11))
def test_random_decoders_are_finite_and_causal(names, t):
    torch.manual_seed(0)
    model = _build("decoder", names)
    x, _ = padded_batch()
    x.requires_grad_()
    out = model(x)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Changing token t and everything after it changes nothing before t.
    x2 = x.detach().clone()
    x2[:, t:] = torch.randn_like(x2[:, t:])
    with torch.no_grad():
        torch.testing.assert_close(model(x2)[:, :t], out.detach()[:, :t], rtol=1e-4, atol=1e-5)


@SETTINGS
@given(names=st.sets(st.sampled_from(FEATURE_NAMES), min_size=1, max_size=4))
def test_random_encoders_are_finite_and_ignore_padding(names):
    torch.manual_seed(0)
    model = _build("encoder", names)
    x, mask = padded_batch()
    out = model(x, mask=mask)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # New values at padded positions change nothing at real positions.
    x2 = x.clone()
    x2[~mask] = 100 * torch.randn_like(x2[~mask])
    with torch.no_grad():
        torch.testing.assert_close(model(x2, mask=mask)[mask], out.detach()[mask], rtol=1e-4, atol=1e-5)


VALID = set(valid_layer_keywords())


@SETTINGS
@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=24))
def test_unknown_keywords_raise_type_error_naming_them(name):
    assume(name not in VALID and name not in ("dim", "depth", "heads", "causal"))
    with pytest.raises(TypeError, match=name):
        make_stack("decoder", **{name: True})


NOT_A_NUMBER = st.one_of(st.text(max_size=3), st.just(None), st.just([1]))
NON_POSITIVE = st.one_of(st.integers(-5, 0), st.just(True), st.floats(0.5, 4.5).filter(lambda f: f != int(f)),
                         NOT_A_NUMBER)
NEGATIVE = st.one_of(st.integers(-5, -1), st.just(True), st.floats(0.5, 4.5).filter(lambda f: f != int(f)),
                     NOT_A_NUMBER)
OUTSIDE_0_1 = st.one_of(st.floats(allow_nan=True).filter(lambda f: not 0 <= f < 1), NOT_A_NUMBER, st.just(True))
# Bad values per keyword, and the feature a keyword needs before its value is read.
BAD = {"heads": NON_POSITIVE, "attn_dim_head": NON_POSITIVE, "attn_sparse_topk": NON_POSITIVE.filter(
           lambda v: v is not None), "rel_pos_num_buckets": NON_POSITIVE, "rel_pos_max_distance": NON_POSITIVE,
       "sandwich_coef": NON_POSITIVE.filter(lambda v: v is not None), "alibi_num_heads": NON_POSITIVE.filter(
           lambda v: v is not None), "attn_num_mem_kv": NEGATIVE, "shift_tokens": NEGATIVE,
       "attn_dropout": OUTSIDE_0_1, "ff_dropout": OUTSIDE_0_1,
       "ff_mult": st.one_of(st.floats(allow_nan=True).filter(lambda f: not f > 0), NOT_A_NUMBER),
       "rotary_emb_dim": st.one_of(st.integers(-3, 1), st.integers(1, 20).map(lambda i: 2 * i + 1), NOT_A_NUMBER.filter(
           lambda v: v is not None)),
       "attn_collab_compression": st.floats(allow_nan=True).filter(lambda f: not 0 < f <= 1)}
NEEDS = {"rel_pos_num_buckets": dict(rel_pos_bias=True), "rel_pos_max_distance": dict(rel_pos_bias=True),
         "rotary_emb_dim": dict(rotary_pos_emb=True), "alibi_num_heads": dict(alibi_pos_emb=True),
         "attn_collab_compression": dict(attn_collab_heads=True)}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(BAD)))
def test_bad_values_raise_value_error_naming_the_keyword(data, name):
    value = data.draw(BAD[name], label=name)
    with pytest.raises((ValueError, TypeError)) as info:
        make_stack("decoder", **NEEDS.get(name, {}), **{name: value})
    # The message names the keyword (the old spelling `qk_norm_*` aside, every name is its own).
    assert name.removeprefix("attn_").removeprefix("ff_") in str(info.value), str(info.value)


def test_collab_compression_of_the_wrong_type_is_named():
    with pytest.raises(ValueError, match="attn_collab_compression"):
        make_stack("decoder", attn_collab_heads=True, attn_collab_compression="half")


@SETTINGS
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       mask_shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       mask_dtype=st.sampled_from([torch.bool, torch.float32, torch.long]))
def test_bad_inputs_raise_value_error(shape, mask_shape, mask_dtype):
    model = make_stack("encoder")
    x = torch.randn(*shape)
    mask = torch.ones(*mask_shape, dtype=mask_dtype)
    good_x = len(shape) == 3 and shape[-1] == DIM
    good_mask = mask_dtype == torch.bool and good_x and tuple(mask_shape) == tuple(shape[:2])
    assume(not (good_x and good_mask))
    with pytest.raises(ValueError):
        model(x, mask=mask)
