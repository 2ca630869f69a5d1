"""Persistent memory: learned key/value slots per head, always visible."""

import pytest
import torch

from labml_style_nn.generation.autoregressive import AutoregressiveWrapper
from labml_style_nn.memory.persistent_memory import PersistentMemory
from labml_style_nn.models.layers import CrossAttender, Decoder, Encoder
from labml_style_nn.models.wrappers import TransformerWrapper


def test_slots_are_shared_by_the_batch():
    mem = PersistentMemory(heads=4, dim_key=6, dim_value=8, num_mem=3)
    k, v = mem(5)
    assert k.shape == (5, 4, 3, 6) and v.shape == (5, 4, 3, 8)
    assert torch.equal(k[0], k[4]) and torch.equal(v[2], mem.values)


def test_keyword_builds_slots_in_every_attention_layer():
    model = Decoder(dim=32, depth=2, heads=4, attn_dim_head=8, cross_attend=True, attn_num_mem_kv=5)
    for block in model.blocks:
        if block.kind in ("a", "c"):
            assert block.fn.memory_kv.keys.shape == (4, 5, 8)


def test_collaborative_heads_give_memory_keys_the_shared_width():
    model = Encoder(dim=32, depth=1, heads=4, attn_num_mem_kv=2, attn_collab_heads=True, attn_collab_compression=0.25)
    attn = model.blocks[0].fn
    assert attn.memory_kv.keys.shape == (4, 2, 8) and attn.memory_kv.values.shape == (4, 2, 64)
    assert torch.isfinite(model(torch.randn(1, 5, 32))).all()


def test_memory_changes_the_output_and_is_visible_to_the_first_token_of_a_decoder():
    model = Decoder(dim=32, depth=1, heads=4, attn_num_mem_kv=3).eval()
    x = torch.randn(1, 5, 32)
    out = model(x)
    with torch.no_grad():
        model.blocks[0].fn.memory_kv.values.add_(1.0)
    # Every position, the first included, reads the memory values.
    assert ((model(x) - out).abs().amax(-1) > 1e-3).all()


def test_fully_masked_context_still_reads_memory_in_cross_attention():
    model = CrossAttender(dim=32, depth=1, heads=4, attn_num_mem_kv=2).eval()
    x, context = torch.randn(1, 3, 32), torch.randn(1, 4, 32)
    none = torch.zeros(1, 4, dtype=torch.bool)
    out = model(x, context=context, context_mask=none)
    assert torch.isfinite(out).all()
    # The real context is masked, so it may change freely without effect...
    torch.testing.assert_close(out, model(x, context=torch.randn(1, 4, 32), context_mask=none))
    # ...while the memory is what the queries attend to.
    with torch.no_grad():
        model.blocks[0].fn.memory_kv.values.mul_(2.0)
    assert (model(x, context=context, context_mask=none) - out).abs().max() > 1e-3


@pytest.mark.parametrize("positions", [dict(), dict(alibi_pos_emb=True), dict(rel_pos_bias=True)])
def test_cached_generation_with_memory_key_values_equals_uncached(positions):
    net = TransformerWrapper(num_tokens=30, max_seq_len=32,
                             attn_layers=Decoder(dim=32, depth=2, heads=4, attn_num_mem_kv=3, **positions))
    model = AutoregressiveWrapper(net)
    prompt = torch.randint(0, 30, (2, 4))
    assert torch.equal(model.generate(prompt, 6, temperature=0.0, cache_kv=True),
                       model.generate(prompt, 6, temperature=0.0, cache_kv=False))
