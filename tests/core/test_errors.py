"""Bad keywords, bad values and bad inputs raise errors that name the argument."""

import pytest
import torch

from labml_style_nn import (
    ContinuousTransformerWrapper,
    CrossAttender,
    Decoder,
    Encoder,
    TransformerWrapper,
    ViTransformerWrapper,
    XTransformer,
)


def test_unknown_keyword_suggests_the_closest():
    with pytest.raises(TypeError, match=r"rotary_pos_embb.*did you mean rotary_pos_emb"):
        Decoder(dim=32, depth=1, rotary_pos_embb=True)
    with pytest.raises(TypeError, match=r"attn_num_mem_k.*attn_num_mem_kv"):
        Encoder(dim=32, depth=1, attn_num_mem_k=4)
    with pytest.raises(TypeError, match=r"ff_gluu.*ff_glu"):
        Decoder(dim=32, depth=1, ff_gluu=True)


def test_unknown_xtransformer_keyword_suggests_the_prefixed_name():
    with pytest.raises(TypeError, match=r"enc_rotary_pos_embb.*enc_rotary_pos_emb"):
        XTransformer(dim=32, enc_num_tokens=10, enc_depth=1, enc_max_seq_len=8, dec_num_tokens=10, dec_depth=1,
                     dec_max_seq_len=8, enc_rotary_pos_embb=True)


@pytest.mark.parametrize("kwargs, name", [
    (dict(dim=32, depth=0), "depth"),
    (dict(dim=0, depth=1), "dim"),
    (dict(dim=32, depth=1, heads=0), "heads"),
    (dict(dim=32, depth=1, attn_dropout=1.0), "attn_dropout"),
    (dict(dim=32, depth=1, ff_dropout=-0.1), "ff_dropout"),
    (dict(dim=32, depth=1, attn_dim_head=0), "attn_dim_head"),
    (dict(dim=32, depth=2, sandwich_coef=3), "sandwich_coef"),
    (dict(dim=32, depth=2, sandwich_coef=0), "sandwich_coef"),
    (dict(dim=32, depth=2, shift_tokens=(1, 0, 1)), "shift_tokens"),
    (dict(dim=32, depth=2, heads=4, alibi_pos_emb=True, alibi_num_heads=5), "alibi_num_heads"),
    (dict(dim=32, depth=1, use_scalenorm=True, use_rmsnorm=True), "use_scalenorm"),
    (dict(dim=32, depth=1, rel_pos_bias=True, alibi_pos_emb=True), "rel_pos_bias"),
    (dict(dim=32, depth=1, attn_sparse_topk=0), "attn_sparse_topk"),
    (dict(dim=32, depth=1, ff_mult=0), "ff_mult"),
])
def test_bad_layer_values_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Decoder(**kwargs)


def test_bad_wrapper_values_name_the_argument():
    layers = Encoder(dim=32, depth=1)
    with pytest.raises(ValueError, match="image_size"):
        ViTransformerWrapper(image_size=30, patch_size=8, attn_layers=layers)
    with pytest.raises(ValueError, match="max_seq_len"):
        TransformerWrapper(num_tokens=10, max_seq_len=0, attn_layers=layers)
    with pytest.raises(ValueError, match="num_tokens"):
        TransformerWrapper(num_tokens=0, max_seq_len=8, attn_layers=layers)
    with pytest.raises(ValueError, match="emb_dropout"):
        TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=layers, emb_dropout=1.5)
    with pytest.raises(ValueError, match="attn_layers"):
        TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="attn_layers"):
        ViTransformerWrapper(image_size=32, patch_size=8, attn_layers=Decoder(dim=32, depth=1))
    with pytest.raises(TypeError, match="causal"):
        Encoder(dim=32, depth=1, causal=True)


@pytest.fixture
def lm():
    return TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(dim=32, depth=1, heads=2))


def test_token_ids_must_be_integers(lm):
    # Whole numbers in a float tensor are cast, as x-transformers does; anything else is refused.
    with pytest.raises(ValueError, match="x: token ids given as torch.float32 must be whole numbers"):
        lm(torch.rand(1, 4) + 0.25)
    with pytest.raises(ValueError, match="x: expected an integer tensor"):
        lm(torch.ones(1, 4, dtype=torch.bool))


def test_token_ids_must_be_in_the_vocabulary(lm):
    with pytest.raises(ValueError, match=r"x: token ids must lie in \[0, 10\)"):
        lm(torch.tensor([[1, 2, 10]]))


def test_too_long_with_absolute_positions(lm):
    with pytest.raises(ValueError, match="max_seq_len=8"):
        lm(torch.zeros(1, 9, dtype=torch.long))


def test_relative_positions_allow_longer_inputs():
    lm = TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(dim=32, depth=1, rotary_pos_emb=True))
    assert lm(torch.zeros(1, 20, dtype=torch.long)).shape == (1, 20, 10)


def test_mask_shape_must_match(lm):
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(1, 4\)"):
        lm(torch.zeros(1, 4, dtype=torch.long), mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        Encoder(dim=32, depth=1)(torch.randn(1, 4, 32), mask=torch.ones(1, 4))


def test_context_last_dimension_must_match():
    model = CrossAttender(dim=32, depth=1)
    with pytest.raises(ValueError, match=r"context: expected shape \(1, context_len, 32\)"):
        model(torch.randn(1, 3, 32), context=torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match="context: this stack has cross-attention layers"):
        model(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="context_mask"):
        model(torch.randn(1, 3, 32), context=torch.randn(1, 5, 32), context_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no cross-attention"):
        Encoder(dim=32, depth=1)(torch.randn(1, 3, 32), context=torch.randn(1, 5, 32))


def test_embeddings_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"x: expected a float tensor of shape \(batch, seq_len, 32\)"):
        Encoder(dim=32, depth=1)(torch.randn(1, 4, 16))
    model = ContinuousTransformerWrapper(dim_in=8, dim_out=4, max_seq_len=16, attn_layers=Encoder(dim=32, depth=1))
    with pytest.raises(ValueError, match="x: expected a float tensor"):
        model(torch.randn(1, 4, 9))


def test_image_of_the_wrong_size():
    vit = ViTransformerWrapper(image_size=32, patch_size=8, num_classes=3, attn_layers=Encoder(dim=32, depth=1))
    with pytest.raises(ValueError, match=r"img: expected a float tensor of shape \(batch, 3, 32, 32\)"):
        vit(torch.randn(1, 3, 28, 28))


def test_a_keyword_of_the_wrong_type_names_it():
    with pytest.raises(ValueError, match="rotary_pos_emb"):
        Decoder(dim=8, depth=1, rotary_pos_emb="yes")


@pytest.mark.parametrize("kwargs, hint", [
    (dict(top_p=0.9), "filter_logits_fn='top_p', filter_kwargs={'p': 0.9}"),
    (dict(top_k=5), "filter_logits_fn='top_k', filter_kwargs={'k': 5}"),
    (dict(min_p=0.2), "filter_logits_fn='min_p', filter_kwargs={'p': 0.2}"),
    (dict(filter_logits_fn="top_p", p=0.5), "filter_logits_fn='top_p', filter_kwargs={'p': 0.5}"),
    (dict(cache=True), "chosen by cache_kv"),
    (dict(cache_kv=[1]), "cache_kv: expected True, False or a factory"),
])
def test_generate_points_a_misplaced_keyword_to_the_right_one(lm, kwargs, hint):
    from labml_style_nn import AutoregressiveWrapper

    with pytest.raises(TypeError) as info:
        AutoregressiveWrapper(lm).generate(torch.randint(0, 10, (1, 3)), 2, **kwargs)
    assert hint in str(info.value)


@pytest.mark.parametrize("cache", [[], True, {}, (torch.zeros(1),)])
def test_a_wrong_cache_is_a_type_error_naming_it(lm, cache):
    expected = r"^cache: expected a LayersCache from labml_style_nn\.generation\.kv_cache .*or None; got"
    with pytest.raises(TypeError, match=expected):
        lm(torch.randint(0, 10, (1, 3)), cache=cache)
    with pytest.raises(TypeError, match=expected):
        lm.attn_layers(torch.randn(1, 3, 32), cache=cache)


def test_an_unknown_checkpoint_family_names_the_ones_the_readme_names():
    from pathlib import Path

    from labml_style_nn.pretrained.loading import architecture, supported_model_types

    with pytest.raises(ValueError, match="model_type: no converter for 'bert'") as info:
        architecture({"model_type": "bert"})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for model_type in supported_model_types():
        assert model_type in str(info.value) and f"`{model_type}`" in readme, model_type
