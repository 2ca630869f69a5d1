"""The static cache: equal to the growing cache, one compiled graph for every step, compiled == eager."""

import warnings

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation import AutoregressiveWrapper
from labml_style_nn.generation.compiled_decoding import step_recorder
from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.generation.static_cache import StaticLayersCache, round_up, static_blocker

V = 32


def make(wrap=None, **layers):
    torch.manual_seed(0)
    return TransformerWrapper(num_tokens=V, max_seq_len=64, **(wrap or {}),
                              attn_layers=Decoder(dim=32, depth=2, heads=4, **layers)).eval()


CASES = [
    dict(rotary_pos_emb=True),
    dict(),  # learned absolute positions
    dict(alibi_pos_emb=True),
    dict(rel_pos_bias=True),
    dict(rotary_pos_emb=True, attn_kv_heads=2, attn_num_mem_kv=2),
    dict(position_infused_attn=True, attn_talking_heads=True),
    dict(rotary_pos_emb=True, wrap=dict(num_memory_tokens=2)),
    dict(rotary_pos_emb=True, attn_use_latent_kv=True, attn_dim_latent_kv=12),
    dict(rotary_pos_emb=True, attn_use_latent_kv=True, attn_dim_latent_kv=12, attn_latent_rope_dim=4),
]


def decode(net, cache, prompt, mask, steps, step_fn=None):
    """Logits of the prompt's last token and of each step's token, `(b, 1 + steps, V)`."""
    outs = [net(prompt, cache=cache, mask=mask)[:, -1]]
    for t in range(steps.shape[1]):
        outs.append((step_fn or net)(steps[:, t:t + 1], cache=cache)[:, -1])
    return torch.stack(outs, 1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "absolute")
@torch.no_grad()
def test_static_cache_equals_the_growing_cache(case):
    case = dict(case)
    net = make(case.pop("wrap", None), **case)
    tokens = torch.randint(0, V, (2, 14))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, :3] = False  # a left-padded row
    mem = net.memory_tokens.num if net.memory_tokens is not None else 0
    growing = decode(net, LayersCache(net.attn_layers, 2, 14 + mem), tokens[:, :8], mask, tokens[:, 8:])
    static = StaticLayersCache(net.attn_layers, 2, round_up(14 + mem))
    torch.testing.assert_close(decode(net, static, tokens[:, :8], mask, tokens[:, 8:]), growing,
                               rtol=1e-5, atol=1e-5)
    # The buffers kept their length: every step wrote into the same tensors.
    assert all(b.attn.k.shape[2] == 64 for b in static.blocks if b.attn is not None)


@pytest.mark.slow
def test_compiled_generation_equals_eager_and_compiles_once(counting_backend):
    model = AutoregressiveWrapper(make(rotary_pos_emb=True))
    prompt = torch.randint(0, V, (2, 6))
    torch._dynamo.reset()
    backend = counting_backend
    greedy = model.generate(prompt, 20, temperature=0)
    assert torch.equal(model.generate(prompt, 20, temperature=0, compile=dict(backend=backend)), greedy)
    # The prompt and the first token run eagerly; the 19 steps after them all run the compiled graph,
    # and only the first of them went through Dynamo.
    assert backend.graphs == 1 and backend.calls == 19
    assert step_recorder(dict(backend=backend)).dispatched == 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        # A new call of another length (same buffer length): no new graph, and the same tokens.
        assert torch.equal(model.generate(prompt, 12, temperature=0, compile=dict(backend=backend)), greedy[:, :12])
    # Sampling is part of the step: a second graph, and the eager path's random numbers.
    torch.manual_seed(1)
    sampled = model.generate(prompt, 20, filter_kwargs=dict(k=5))
    torch.manual_seed(1)
    assert torch.equal(model.generate(prompt, 20, filter_kwargs=dict(k=5), compile=dict(backend=backend)), sampled)
    assert backend.graphs == 2


@pytest.mark.slow
@pytest.mark.parametrize("case", [dict(alibi_pos_emb=True), dict(rel_pos_bias=True),
                                  dict(rotary_pos_emb=True, wrap=dict(num_memory_tokens=2))],
                         ids=["alibi", "t5", "memory_tokens"])
def test_compiled_generation_equals_eager_with_stops_and_padding(case, counting_backend):
    case = dict(case)
    model = AutoregressiveWrapper(make(case.pop("wrap", None), **case))
    backend = counting_backend
    # Prompts of different lengths (left padding), and a stop token that one row reaches early.
    prompts = [torch.randint(0, V, (7,)), torch.randint(0, V, (4,))]
    eager = model.generate(prompts, 16, temperature=0)
    eos = int(eager[0, 3])
    eager = model.generate(prompts, 16, temperature=0, eos_token=eos)
    compiled = model.generate(prompts, 16, temperature=0, eos_token=eos, compile=dict(backend=backend))
    assert torch.equal(compiled, eager)
    assert (eager[0, 4:] == model.pad_value).all()  # the row did stop
    torch.manual_seed(2)
    eager = model.generate(prompts, 16)
    torch.manual_seed(2)
    assert torch.equal(model.generate(prompts, 16, compile=dict(backend=backend)), eager)


@pytest.mark.slow
def test_compile_true_with_inductor_equals_eager():
    """The default: Inductor with its C++ wrapper; same greedy tokens as eager decoding."""
    model = AutoregressiveWrapper(make(rotary_pos_emb=True))
    prompt = torch.randint(0, V, (1, 5))
    assert torch.equal(model.generate(prompt, 12, temperature=0, compile=True),
                       model.generate(prompt, 12, temperature=0))


def test_stacks_the_static_step_cannot_run_decode_eagerly():
    assert static_blocker(make(rotary_pos_emb=True).attn_layers) is None
    window = make(attn_max_attend_past=4).attn_layers
    assert "sliding window" in static_blocker(window) and static_blocker(window, window=True) is None
    model = AutoregressiveWrapper(make(shift_tokens=1))
    assert "token shift" in static_blocker(model.net.attn_layers)
    prompt = torch.randint(0, V, (1, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.generate(prompt, 5, temperature=0, compile=True)
    assert torch.equal(out, model.generate(prompt, 5, temperature=0))
    assert any("static cache" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="compile"):
        model.generate(prompt, 5, compile="yes")


@pytest.mark.slow
@pytest.mark.parametrize("case", [dict(rotary_pos_emb=True), dict(alibi_pos_emb=True), dict(rel_pos_bias=True)],
                         ids=["rotary", "alibi", "t5"])
def test_compiled_sliding_window_equals_eager_past_the_window(case, counting_backend):
    # A window of 5: a ring of 6 slots, wrapped about five times by 4 + 30 tokens.
    model = AutoregressiveWrapper(make(attn_max_attend_past=5, **case))
    backend = counting_backend
    prompts = [torch.randint(0, V, (4,)), torch.randint(0, V, (2,))]  # left padding in the ring
    eager = model.generate(prompts, 30, temperature=0)
    assert torch.equal(model.generate(prompts, 30, temperature=0, compile=dict(backend=backend)), eager)
    torch.manual_seed(3)
    eager = model.generate(prompts, 30)
    torch.manual_seed(3)
    assert torch.equal(model.generate(prompts, 30, compile=dict(backend=backend)), eager)
    assert backend.calls == 2 * 29  # every step after the first token compiled, none eager


@pytest.mark.slow
def test_compiled_generation_reads_the_current_weights(counting_backend):
    # The graph takes the parameters as inputs (no freezing): weights changed in place between two
    # calls, as training would, are the ones the next call decodes with.
    model = AutoregressiveWrapper(make(rotary_pos_emb=True))
    backend = counting_backend
    prompt = torch.randint(0, V, (1, 5))
    before = model.generate(prompt, 12, temperature=0, compile=dict(backend=backend))
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = model.generate(prompt, 12, temperature=0)
    assert not torch.equal(after, before)
    assert torch.equal(model.generate(prompt, 12, temperature=0, compile=dict(backend=backend)), after)
    assert backend.graphs == 1
