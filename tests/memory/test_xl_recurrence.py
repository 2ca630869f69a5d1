"""Transformer-XL recurrence in the keyword API: memories, positions across segments, enhanced recurrence."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.memory.xl_recurrence import shift_memories_down, update_memories

V = 64
POSITIONS = {"rel_pos_bias": dict(rel_pos_bias=True), "rotary": dict(rotary_pos_emb=True),
             "alibi": dict(alibi_pos_emb=True, disable_abs_pos_emb=True)}  # the paper's: no absolute positions


def make(max_mem_len=32, shift_mem_down=0, dim=32, depth=2, **layer_kw):
    torch.manual_seed(0)
    return TransformerWrapper(num_tokens=V, max_seq_len=64, max_mem_len=max_mem_len,
                              shift_mem_down=shift_mem_down,
                              attn_layers=Decoder(dim=dim, depth=depth, heads=4, **layer_kw)).eval()


def tokens(b, n, seed=1):
    return torch.randint(0, V, (b, n), generator=torch.Generator().manual_seed(seed))


#
# ## Pure helpers
def test_update_memories_concatenates_detaches_and_truncates():
    old = [torch.randn(2, 3, 4, requires_grad=True)]
    new = [torch.randn(2, 5, 4, requires_grad=True)]
    out = update_memories(old, new, max_len=6)
    assert out[0].shape == (2, 6, 4) and not out[0].requires_grad
    assert torch.equal(out[0], torch.cat((old[0], new[0]), 1)[:, -6:])
    first = update_memories(None, new, max_len=10)
    assert torch.equal(first[0], new[0]) and not first[0].requires_grad


def test_shift_memories_down_routes_layer_l_to_l_minus_k():
    assert shift_memories_down(["m0", "m1", "m2"], 1) == ["m1", "m2", "m0"]
    assert shift_memories_down(["m0", "m1", "m2"], 2) == ["m2", "m0", "m1"]
    assert shift_memories_down(["m0", "m1", "m2"], 3) == ["m0", "m1", "m2"]


#
# ## Memories are the attention layers' inputs
def test_mems_are_detached_unnormalised_inputs_one_per_attention_layer():
    model = make(max_mem_len=8, depth=3, rel_pos_bias=True).train()
    x = tokens(2, 12)
    logits, mems = model(x, return_mems=True)
    assert logits.shape == (2, 12, V)
    assert len(mems) == 3 and all(m.shape == (2, 8, 32) and not m.requires_grad for m in mems)
    # Layer 0's memory is the embedding itself, before the pre-norm (no absolute positions with a relative
    # scheme), as x-transformers keeps it; the layer normalises it when it reads it.
    emb = model.token_emb(x)
    torch.testing.assert_close(mems[0], emb[:, -8:].detach())


#
# ## The key invariant: segment 2 with memory == the same positions of one pass
def assert_segments_equal_full_pass(model, n1=10, n2=7):
    x = tokens(2, n1 + n2)
    with torch.no_grad():
        full = model(x)
        _, mems = model(x[:, :n1], return_mems=True)
        assert all(m.shape[1] == n1 for m in mems)
        seg2 = model(x[:, n1:], mems=mems)
    torch.testing.assert_close(seg2, full[:, n1:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scheme", list(POSITIONS))
def test_segment_with_memory_equals_full_pass(scheme):
    assert_segments_equal_full_pass(make(**POSITIONS[scheme]))


@pytest.mark.parametrize("scheme", list(POSITIONS))
@pytest.mark.parametrize("features", [
    dict(attn_num_mem_kv=4),
    dict(attn_talking_heads=True),
    dict(residual_attn=True),
    dict(macaron=True),
    dict(attn_num_mem_kv=4, attn_talking_heads=True, residual_attn=True, macaron=True, ff_glu=True),
], ids=["num_mem_kv", "talking_heads", "residual_attn", "macaron", "all"])
def test_segment_with_memory_equals_full_pass_with_features(scheme, features):
    assert_segments_equal_full_pass(make(**POSITIONS[scheme], **features))


def test_gate_residual_with_relative_positions_equals_full_pass():
    assert_segments_equal_full_pass(make(rotary_pos_emb=True, gate_residual=True))


#
# ## Truncation and long runs
@pytest.mark.parametrize("scheme", list(POSITIONS))
def test_three_segments_with_truncation_stay_finite(scheme):
    model = make(max_mem_len=6, **POSITIONS[scheme])
    mems = None
    with torch.no_grad():
        for s in range(3):
            logits, mems = model(tokens(2, 9, seed=s), mems=mems, return_mems=True)
            assert torch.isfinite(logits).all()
            assert all(m.shape == (2, 6, 32) for m in mems)


def test_truncated_memory_is_a_suffix_of_the_previous_memory_and_inputs():
    model = make(max_mem_len=6, rotary_pos_emb=True)
    with torch.no_grad():
        _, mems1 = model(tokens(1, 4, seed=3), return_mems=True)
        _, mems2 = model(tokens(1, 5, seed=4), mems=mems1, return_mems=True)
    # 4 + 5 positions, keep 6: the last 1 of the old memory, then the 5 new inputs.
    for m1, m2 in zip(mems1, mems2, strict=True):
        assert torch.equal(m2[:, :1], m1[:, -1:])


#
# ## Enhanced recurrence: layer l's memory feeds layer l - k
@pytest.mark.parametrize("k", [1, 2])
def test_shift_mem_down_equals_manual_reordering(k):
    shifted = make(shift_mem_down=k, depth=3, rotary_pos_emb=True)
    plain = make(shift_mem_down=0, depth=3, rotary_pos_emb=True)
    plain.load_state_dict(shifted.state_dict())
    with torch.no_grad():
        _, mems = plain(tokens(2, 8, seed=5), return_mems=True)
        x2 = tokens(2, 6, seed=6)
        out_s, mems_s = shifted(x2, mems=mems, return_mems=True)
        # Layer l gets the memory of layer l + k: [m_k, ..., m_{L-1}, m_0, ..., m_{k-1}].
        manual = [mems[(layer + k) % 3] for layer in range(3)]
        out_p, mems_p = plain(x2, mems=manual, return_mems=True)
        out_wrong = plain(x2, mems=mems)
    torch.testing.assert_close(out_s, out_p)
    for a, b in zip(mems_s, mems_p, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(out_s, out_wrong, atol=1e-4)


#
# ## Errors
def test_absolute_positions_refuse_memories():
    model = make(max_mem_len=8)  # no relative scheme: learned absolute positions
    _, mems = model(tokens(1, 5), return_mems=True)
    with pytest.raises(ValueError, match="mems"):
        model(tokens(1, 5), mems=mems)


def test_return_mems_needs_max_mem_len():
    with pytest.raises(ValueError, match="return_mems"):
        make(max_mem_len=0, rotary_pos_emb=True)(tokens(1, 4), return_mems=True)


def test_shift_mem_down_needs_memory():
    with pytest.raises(ValueError, match="shift_mem_down"):
        make(max_mem_len=0, shift_mem_down=1, rotary_pos_emb=True)


def test_wrong_number_of_mems_is_refused():
    model = make(depth=2, rotary_pos_emb=True)
    with pytest.raises(ValueError, match="mems"):
        model(tokens(1, 4), mems=[torch.zeros(1, 3, 32)])


#
# ## The seeds' examples, at the seeds' sizes (dim 512, depth 6) on 32-token segments
def test_seed_model_xl_with_rel_pos_bias():
    torch.manual_seed(0)
    model_xl = TransformerWrapper(num_tokens=20000, max_seq_len=512, max_mem_len=2048,
                                  attn_layers=Decoder(dim=512, depth=6, heads=8, rel_pos_bias=True)).eval()
    seg1, seg2, seg3 = (torch.randint(0, 20000, (1, 32)) for _ in range(3))
    with torch.no_grad():
        logits1, mems1 = model_xl(seg1, return_mems=True)
        logits2, mems2 = model_xl(seg2, mems=mems1, return_mems=True)
        logits3, mems3 = model_xl(seg3, mems=mems2, return_mems=True)
    assert logits3.shape == (1, 32, 20000) and torch.isfinite(logits3).all()
    assert len(mems3) == 6 and mems3[0].shape == (1, 96, 512)


def test_seed_enhanced_recurrence_with_rotary():
    torch.manual_seed(0)
    model_xl = TransformerWrapper(num_tokens=20000, max_seq_len=512, max_mem_len=2048, shift_mem_down=1,
                                  attn_layers=Decoder(dim=512, depth=6, heads=8, rotary_pos_emb=True)).eval()
    seg1, seg2 = (torch.randint(0, 20000, (1, 32)) for _ in range(2))
    with torch.no_grad():
        logits1, mems1 = model_xl(seg1, return_mems=True)
        logits2, mems2 = model_xl(seg2, mems=mems1, return_mems=True)
    assert logits2.shape == (1, 32, 20000) and torch.isfinite(logits2).all()
    assert len(mems2) == 6 and mems2[0].shape == (1, 64, 512)
    # Layer 0's new memory starts with layer 1's old memory (routed down), then its own inputs.
    assert torch.equal(mems2[0][:, :32], mems1[1])


def test_seed_gate_residual_with_max_mem_len():
    torch.manual_seed(0)
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024, max_mem_len=2048,
                               attn_layers=Decoder(dim=512, depth=6, heads=16, gate_residual=True)).eval()
    x = torch.randint(0, 20000, (1, 32))
    with torch.no_grad():
        logits, mems = model(x, return_mems=True)
    assert logits.shape == (1, 32, 20000) and len(mems) == 6
    # This model has absolute positions (no relative scheme), so it cannot continue with memories.
    with pytest.raises(ValueError, match="mems"):
        model(x, mems=mems)
