"""Properties every positional scheme of the keyword API must have, checked through the stack.

Causal decoders, padding-invariant encoders, finite forward and backward, positions that continue
across a key/value cache and a Transformer-XL memory, relative schemes beyond `max_seq_len`, and
the refusal of meaningless combinations.
"""

import pytest
import torch

from labml_style_nn import Decoder, Encoder, TransformerWrapper
from labml_style_nn.generation.kv_cache import LayersCache

DIM, HEADS, DIM_HEAD = 32, 4, 8

# keyword sets, one per scheme (absolute schemes live on the wrapper, tested further below)
SCHEMES = {
    "none": {},
    "t5": dict(rel_pos_bias=True),
    "rotary": dict(rotary_pos_emb=True),
    "rotary_partial": dict(rotary_pos_emb=True, rotary_emb_dim=4),
    "alibi": dict(alibi_pos_emb=True),
    "alibi_alias_partial": dict(alibi_pos_bias=True, alibi_num_heads=2),
    "pia": dict(position_infused_attn=True),
}
RELATIVE = ["t5", "rotary", "rotary_partial", "alibi", "alibi_alias_partial"]


def stack(cls, kw, depth=2):
    torch.manual_seed(0)
    return cls(dim=DIM, depth=depth, heads=HEADS, attn_dim_head=DIM_HEAD, **kw).eval()


@pytest.mark.parametrize("name", SCHEMES)
def test_decoder_is_causal(name):
    dec = stack(Decoder, SCHEMES[name])
    x = torch.randn(2, 10, DIM)
    y = x.clone()
    y[:, 6:] = torch.randn(2, 4, DIM)  # change the future of position 5
    torch.testing.assert_close(dec(x)[:, :6], dec(y)[:, :6])
    assert not torch.allclose(dec(x)[:, 6:], dec(y)[:, 6:])


@pytest.mark.parametrize("name", SCHEMES)
def test_encoder_ignores_padding(name):
    enc = stack(Encoder, SCHEMES[name])
    x = torch.randn(2, 9, DIM)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, 4:] = False
    y = x.clone()
    y[~mask] = 100 * torch.randn(int((~mask).sum()), DIM)
    a, b = enc(x, mask=mask), enc(y, mask=mask)
    torch.testing.assert_close(a[mask], b[mask])


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_forward_backward_finite_and_bias_learns(name, cls):
    model = stack(cls, SCHEMES[name]).train()
    x = torch.randn(2, 12, DIM, requires_grad=True)
    out = model(x, mask=torch.ones(2, 12, dtype=torch.bool))
    out.square().mean().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if model.rel_pos is not None:  # the T5 table is the scheme's only parameter
        assert model.rel_pos.bias.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SCHEMES)
def test_scheme_changes_the_output(name):
    """The scheme is really wired in: the output of a stack without it differs."""
    if name == "none":
        pytest.skip("the baseline")
    a = stack(Decoder, SCHEMES[name])
    b = stack(Decoder, {})
    b.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(1, 8, DIM)
    assert not torch.allclose(a(x), b(x), atol=1e-4)


#
# Positions continue across a cache and a memory: a second chunk with the first one's keys cached
# (or as XL memory) equals the same positions of one pass over both chunks.
@pytest.mark.parametrize("name", SCHEMES)
def test_cache_continues_positions(name):
    dec = stack(Decoder, SCHEMES[name])
    x = torch.randn(2, 11, DIM)
    full = dec(x)
    cache = LayersCache(dec, batch=2, max_len=11)
    parts = [dec(x[:, :5], cache=cache), dec(x[:, 5:9], cache=cache), dec(x[:, 9:10], cache=cache),
             dec(x[:, 10:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", SCHEMES)
def test_memory_continues_positions(name):
    dec = stack(Decoder, SCHEMES[name])
    x = torch.randn(2, 12, DIM)
    full = dec(x)
    first, hiddens = dec(x[:, :7], return_hiddens=True)
    second = dec(x[:, 7:], mems=hiddens.hiddens)  # x-transformers: return_hiddens gives the intermediates
    torch.testing.assert_close(torch.cat((first, second), dim=1), full, atol=1e-5, rtol=1e-4)


#
# Through the wrapper: absolute positions off by default beside rotary and T5's bias; ALiBi keeps them
# by default, as in x-transformers, and runs past max_seq_len with `disable_abs_pos_emb=True`.
@pytest.mark.parametrize("name", RELATIVE)
@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_relative_schemes_run_beyond_max_seq_len(name, cls):
    torch.manual_seed(0)
    alibi = name.startswith("alibi")
    model = TransformerWrapper(num_tokens=50, max_seq_len=16, attn_layers=cls(
        dim=DIM, depth=1, heads=HEADS, **SCHEMES[name], **(dict(disable_abs_pos_emb=True) if alibi else {})))
    assert model.pos_emb is None
    out = model(torch.randint(0, 50, (2, 40)))  # 2.5 x max_seq_len
    assert out.shape == (2, 40, 50) and torch.isfinite(out).all()


def test_use_abs_pos_emb_turns_absolute_positions_back_on():
    model = TransformerWrapper(num_tokens=50, max_seq_len=16, use_abs_pos_emb=True,
                               attn_layers=Decoder(dim=DIM, depth=1, heads=HEADS, rotary_pos_emb=True))
    assert model.pos_emb is not None
    model(torch.randint(0, 50, (1, 16)))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(0, 50, (1, 17)))


def test_t5_bias_is_computed_once_per_forward():
    dec = stack(Decoder, dict(rel_pos_bias=True), depth=3)
    calls = []
    dec.rel_pos.register_forward_hook(lambda *a: calls.append(1))
    dec(torch.randn(1, 5, DIM))
    assert len(calls) == 1 and dec.rel_pos.causal
    assert not stack(Encoder, dict(rel_pos_bias=True)).rel_pos.causal


@pytest.mark.parametrize("kw, word", [
    (dict(rel_pos_bias=True, alibi_pos_emb=True), "choose one"),
    (dict(position_infused_attn=True, rotary_pos_emb=True), "position_infused_attn"),
    (dict(position_infused_attn=True, rel_pos_bias=True), "position_infused_attn"),
    (dict(alibi_num_heads=2), "alibi_num_heads"),
    (dict(alibi_pos_emb=True, alibi_num_heads=5), "alibi_num_heads"),
    (dict(alibi_pos_emb=True, alibi_num_heads=0), "alibi_num_heads"),
    (dict(rotary_pos_emb=True, rotary_emb_dim=3), "rotary_emb_dim"),
    (dict(rel_pos_bias=True, rel_pos_num_buckets=0), "rel_pos_num_buckets"),
])
def test_meaningless_combinations_are_refused(kw, word):
    with pytest.raises(ValueError, match=word):
        Decoder(dim=DIM, depth=1, heads=HEADS, **kw)


#
# Silently ignored settings: the fixes belong in the core (options.py, models/layers.py).
def test_rotary_emb_dim_without_rotary_is_refused():
    try:
        Decoder(dim=DIM, depth=1, heads=HEADS, rotary_emb_dim=4)
    except ValueError as e:
        assert "rotary_emb_dim" in str(e)
    else:
        raise AssertionError("not refused")


def test_rotary_emb_dim_wider_than_the_head_is_refused():
    try:
        Decoder(dim=DIM, depth=1, heads=HEADS, attn_dim_head=DIM_HEAD, rotary_pos_emb=True, rotary_emb_dim=64)
    except ValueError as e:
        assert "rotary_emb_dim" in str(e)
    else:
        raise AssertionError("not refused")
