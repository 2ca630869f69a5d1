"""Keyword routing: prefixes, aliases and XTransformer's enc_/dec_ split."""

import torch

from labml_style_nn import CrossAttender, Decoder, Encoder, XTransformer
from labml_style_nn.attention.gate_values import ValueGate
from labml_style_nn.positional.alibi import AlibiPositionalBias


def test_attn_and_ff_prefixes_route_to_their_options():
    dec = Decoder(dim=32, depth=2, heads=4, attn_dim_head=16, attn_num_mem_kv=3, ff_mult=2, ff_glu=True)
    o = dec.options
    assert (o.attn.dim_head, o.attn.num_mem_kv, o.ff.mult, o.ff.glu) == (16, 3, 2, True)
    attn = dec.blocks[0].fn
    assert attn.to_qkv.weight.shape == (3 * 4 * 16, 32)
    assert attn.memory_kv.keys.shape == (4, 3, 16)
    assert dec.blocks[1].fn.proj_in.proj.weight.shape == (2 * 64, 32)


def test_cross_attn_prefix_overrides_only_cross_attention():
    dec = Decoder(dim=32, depth=1, heads=4, cross_attend=True, attn_num_mem_kv=2, cross_attn_num_mem_kv=5)
    kinds = {b.kind: b.fn for b in dec.blocks}
    assert kinds["a"].memory_kv.keys.shape[1] == 2
    assert kinds["c"].memory_kv.keys.shape[1] == 5


def test_aliases():
    enc = Encoder(dim=32, depth=1, gate_values=True)
    assert isinstance(enc.blocks[0].fn.output_gate, ValueGate)
    dec = Decoder(dim=32, depth=1, heads=4, alibi_pos_bias=True)
    assert isinstance(dec.alibi, AlibiPositionalBias)
    dec = Decoder(dim=32, depth=1, use_qk_norm_attn=True, qk_norm_attn_seq_len=128)
    assert dec.options.attn.qk_norm and dec.options.attn.qk_norm_seq_len == 128


def test_layer_kinds_of_the_stacks():
    assert Encoder(dim=8, depth=2).layer_types == ("a", "f", "a", "f")
    assert Decoder(dim=8, depth=1, cross_attend=True).layer_types == ("a", "c", "f")
    assert CrossAttender(dim=8, depth=2).layer_types == ("c", "f", "c", "f")
    assert Decoder(dim=8, depth=1).causal and not Encoder(dim=8, depth=1).causal


def test_xtransformer_routes_enc_and_dec_keywords():
    model = XTransformer(dim=32, enc_num_tokens=11, enc_depth=2, enc_heads=4, enc_max_seq_len=16,
                         enc_rotary_pos_emb=True, enc_emb_dropout=0.1, dec_num_tokens=13, dec_depth=3,
                         dec_heads=2, dec_max_seq_len=8, dec_cross_residual_attn=True, dec_ff_glu=True)
    enc, dec = model.encoder, model.decoder.net
    assert enc.num_tokens == 11 and dec.num_tokens == 13
    assert enc.attn_layers.options.depth == 2 and dec.attn_layers.options.depth == 3
    assert enc.attn_layers.rotary is not None and dec.attn_layers.rotary is None
    assert enc.emb_dropout.p == 0.1 and dec.max_seq_len == 8
    assert dec.attn_layers.options.cross_residual_attn and dec.attn_layers.options.ff.glu
    assert dec.attn_layers.has_cross and not enc.attn_layers.has_cross
    loss = model(torch.randint(0, 11, (2, 10)), torch.randint(0, 13, (2, 8)))
    assert torch.isfinite(loss)
