"""Bad values and meaningless combinations of the attention keywords are refused, with the reason."""

import pytest
import torch

from labml_style_nn.models.layers import CrossAttender, Decoder, Encoder
from labml_style_nn.models.wrappers import TransformerWrapper
from labml_style_nn.models.xtransformer import XTransformer


@pytest.mark.parametrize("kwargs,words", [
    (dict(attn_use_entmax15=True, attn_sparse_topk=8), ["attn_use_entmax15", "attn_sparse_topk"]),
    (dict(cross_residual_attn=True), ["cross_residual_attn", "cross_attend"]),
])
def test_meaningless_combinations_are_refused_with_the_reason(kwargs, words):
    with pytest.raises(ValueError) as err:
        Decoder(dim=32, depth=1, **kwargs)
    assert all(w in str(err.value) for w in words)


def test_encoder_side_cross_residual_refused_in_xtransformer():
    with pytest.raises(ValueError, match="cross_residual_attn"):
        XTransformer(dim=32, enc_num_tokens=10, enc_depth=1, enc_max_seq_len=8, dec_num_tokens=10,
                     dec_depth=1, dec_max_seq_len=8, enc_cross_residual_attn=True)


@pytest.mark.parametrize("name,value", [
    ("attn_sparse_topk", 0), ("attn_sparse_topk", -2), ("attn_sparse_topk", True), ("attn_sparse_topk", 2.5),
    ("attn_num_mem_kv", -1), ("attn_num_mem_kv", 1.5), ("attn_num_mem_kv", True),
    ("attn_collab_compression", 0), ("attn_collab_compression", 1.5),
    ("attn_dropout", 1.0), ("attn_dropout", -0.1), ("ff_dropout", 1.0),
])
def test_bad_values_name_the_keyword(name, value):
    kwargs = {name: value}
    if name == "attn_collab_compression":
        kwargs["attn_collab_heads"] = True
    with pytest.raises(ValueError, match=name):
        Encoder(dim=32, depth=1, **kwargs)


def test_qk_norm_sequence_length_must_allow_a_temperature():
    with pytest.raises(ValueError, match="qk_norm_attn_seq_len"):
        Decoder(dim=32, depth=1, use_qk_norm_attn=True, qk_norm_attn_seq_len=1)


@pytest.mark.parametrize("name,value", [("num_memory_tokens", -1), ("emb_dropout", 1.0)])
def test_bad_wrapper_values_name_the_keyword(name, value):
    with pytest.raises(ValueError, match=name):
        TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Encoder(dim=32, depth=1), **{name: value})


def test_misspelt_attention_keyword_is_a_type_error_with_a_suggestion():
    with pytest.raises(TypeError, match="attn_talking_heads"):
        Decoder(dim=32, depth=1, attn_talking_head=True)


#
# Regressions: gaps these tests found in the core (options, attention), now fixed there.
def test_qk_norm_sequence_length_without_qk_norm_is_refused():
    with pytest.raises(ValueError, match="use_qk_norm_attn"):
        Decoder(dim=32, depth=1, qk_norm_attn_seq_len=1024)


def test_collab_compression_without_collab_heads_is_refused():
    with pytest.raises(ValueError, match="attn_collab_heads"):
        Decoder(dim=32, depth=1, attn_collab_compression=0.5)


def test_position_infused_attention_reaches_collaborative_heads():
    """Without positions an encoder is permutation-equivariant; position-infused keys must break that."""
    model = Encoder(dim=32, depth=1, heads=4, position_infused_attn=True, attn_collab_heads=True).eval()
    x, perm = torch.randn(1, 6, 32), torch.tensor([3, 0, 5, 1, 4, 2])
    assert (model(x)[:, perm] - model(x[:, perm])).abs().max() > 1e-3


def test_entmax_with_top_k_refused_for_cross_attention_alone():
    with pytest.raises(ValueError, match="attn_sparse_topk"):
        CrossAttender(dim=32, depth=1, cross_attn_use_entmax15=True, attn_sparse_topk=4)


@pytest.mark.parametrize("name,value", [("cross_attn_sparse_topk", 0), ("cross_attn_num_mem_kv", -1),
                                        ("cross_attn_dropout", 2.0)])
def test_bad_cross_attention_values_name_the_keyword(name, value):
    with pytest.raises(ValueError, match=name):
        CrossAttender(dim=32, depth=1, **{name: value})
