"""The weight-copied parity harness (tests/xt_parity.py) on the keywords of the x-transformers README of 2021."""

import pytest
from xt_parity import assert_same_logits, build_pair

CASES = [
    ("Decoder", dict(dim=32, depth=2, heads=4)),
    ("Decoder", dict(dim=32, depth=2, heads=4, rotary_pos_emb=True, ff_glu=True)),
    ("Encoder", dict(dim=32, depth=2, heads=4, rel_pos_bias=True)),
    ("Decoder", dict(dim=32, depth=2, heads=4, use_rmsnorm=True, rotary_pos_emb=True)),
    ("Encoder", dict(dim=32, depth=2, heads=4, use_scalenorm=True)),
]


@pytest.mark.parametrize(("stack", "kwargs"), CASES, ids=lambda c: c if isinstance(c, str) else "-".join(c)[:40])
def test_logits_equal_with_xtransformers_weights(stack, kwargs):
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), stack, kwargs)
    assert_same_logits(ours, theirs, num_tokens=64, grads=stack == "Decoder" and "use_rmsnorm" not in kwargs)


def test_a_parameter_without_a_mapping_fails_loudly():
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), "Decoder", dict(dim=32, depth=1, heads=4,
                                                                                    attn_num_mem_kv=2))
    with pytest.raises(AssertionError, match="without x-transformers' value"):
        assert_same_logits(ours, theirs, num_tokens=64)
