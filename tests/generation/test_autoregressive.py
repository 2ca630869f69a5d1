"""The next-token loss, ragged prompts, per-row end of sequence, and generation past max_seq_len."""

import warnings

import pytest
import torch

from labml_style_nn import Decoder, Encoder, TransformerWrapper
from labml_style_nn.generation import AutoregressiveWrapper, head_positions
from labml_style_nn.generation.autoregressive import left_pad
from labml_style_nn.generation.head_positions import position_head

V = 29


def make(max_seq_len=64, wrap=None, **layers):
    net = TransformerWrapper(num_tokens=V, max_seq_len=max_seq_len,
                             attn_layers=Decoder(dim=16, depth=2, heads=2, attn_dim_head=8, **layers), **(wrap or {}))
    return AutoregressiveWrapper(net).eval()


#
# The loss
def test_loss_is_next_token_cross_entropy_honouring_mask_and_ignore_index():
    model = make()
    model.ignore_index = 0  # token 0 as a target is not scored
    x = torch.randint(1, V, (2, 9))
    x[0, 4] = 0
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    logits = model.net(x[:, :-1], mask=mask[:, :-1]).log_softmax(-1)  # (b, n - 1, V)
    # Reference: mean over scored targets of -log p(x_{t+1} | x_{<=t}).
    terms = [-logits[b, t, x[b, t + 1]] for b in range(2) for t in range(8)
             if mask[b, t + 1] and x[b, t + 1] != 0]
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(model(x, mask=mask), expected)
    with pytest.raises(ValueError, match="x:"):
        model(x[:, :1])


def test_loss_memorises_a_batch():
    torch.manual_seed(1)
    model = make(rotary_pos_emb=True).train()
    x = torch.randint(0, V, (4, 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = model(x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model(x).item() < first / 2


#
# Sampling inside generate
def test_temperature_zero_is_argmax_of_the_full_pass():
    model = make(rotary_pos_emb=True)
    prompt = torch.randint(0, V, (2, 4))
    out = model.generate(prompt, 5, temperature=0.0)
    seq = prompt
    for _ in range(5):
        seq = torch.cat((seq, model.net(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, seq[:, 4:])


@pytest.mark.parametrize("fn,kw", [("top_k", {"k": 1}), ("top_p", {"p": 1e-6}), ("min_p", {"p": 1.0})])
def test_filters_that_keep_one_token_sample_greedily(fn, kw):
    model = make(alibi_pos_emb=True)
    prompt = torch.randint(0, V, (3, 4))
    sampled = model.generate(prompt, 6, temperature=0.7, filter_logits_fn=fn, filter_kwargs=kw)
    assert torch.equal(sampled, model.generate(prompt, 6, temperature=0.0))


def test_sampling_is_reproducible_and_cache_independent():
    model = make(rotary_pos_emb=True)
    prompt = torch.randint(0, V, (2, 3))
    torch.manual_seed(5)
    a = model.generate(prompt, 10, filter_logits_fn="top_p", filter_kwargs={"p": 0.9})
    torch.manual_seed(5)
    b = model.generate(prompt, 10, filter_logits_fn="top_p", filter_kwargs={"p": 0.9}, cache_kv=False)
    assert torch.equal(a, b)


#
# Ragged prompts: each row decodes as it would alone.
def test_left_pad_worked_example():
    tokens, starts = left_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_value=0)
    assert tokens.tolist() == [[5, 6, 7], [0, 0, 8]] and starts.tolist() == [0, 2]
    assert left_pad(torch.tensor([[1, 2]]), 0)[1] is None


RAGGED = {
    "learned_abs": ({}, {}),
    "sinusoidal_abs": ({"sinusoidal_pos_emb": True}, {}),
    "rotary": ({}, {"rotary_pos_emb": True}),
    "alibi": ({}, {"alibi_pos_emb": True}),
    "t5": ({}, {"rel_pos_bias": True}),
    "shift_and_persistent": ({}, {"rotary_pos_emb": True, "shift_tokens": 1, "attn_num_mem_kv": 2}),
    "abs_memory_tokens": ({"num_memory_tokens": 2}, {}),
    "rotary_memory_tokens": ({"num_memory_tokens": 2}, {"rotary_pos_emb": True}),  # grouped decode
    "position_infused": ({}, {"position_infused_attn": True}),  # grouped decode
}


@pytest.mark.parametrize("name", RAGGED)
@pytest.mark.parametrize("cache_kv", [True, False])
def test_ragged_prompts_decode_as_alone(name, cache_kv):
    wrap, layers = RAGGED[name]
    model = make(wrap=wrap, **layers)
    prompts = [torch.randint(0, V, (n,)) for n in (7, 2, 4)]
    batched = model.generate(prompts, 8, temperature=0.0, cache_kv=cache_kv)
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], 8, temperature=0.0, cache_kv=cache_kv)
        assert torch.equal(batched[row], alone[0]), row


def test_ragged_logits_match_alone():
    model = make(rotary_pos_emb=True)
    short, long = torch.randint(0, V, (3,)), torch.randint(0, V, (6,))
    tokens, starts = left_pad([long, short], 0)
    mask = torch.arange(6)[None] >= starts[:, None]
    batched = model.net(tokens, mask=mask, seq_start_pos=starts)[1, -1]
    torch.testing.assert_close(batched, model.net(short[None])[0, -1], atol=1e-4, rtol=0)


#
# End of sequence
def test_each_row_stops_at_its_own_eos():
    model = make(rotary_pos_emb=True)
    prompts = torch.randint(1, V, (3, 4))
    free = model.generate(prompts, 10, temperature=0.0)
    eos = int(free[0, 2])  # row 0 emits this token at step 2
    out = model.generate(prompts, 10, temperature=0.0, eos_token=eos)
    assert out.shape == (3, 10)
    for row in range(3):
        hits = (free[row] == eos).nonzero()
        stop = int(hits[0]) + 1 if len(hits) else 10
        assert torch.equal(out[row, :stop], free[row, :stop])
        assert (out[row, stop:] == model.pad_value).all()


def test_generation_stops_when_every_row_has_ended():
    model = make(rotary_pos_emb=True)
    prompt = torch.randint(1, V, (1, 4))
    first = int(model.generate(prompt, 1, temperature=0.0)[0, 0])
    calls = []
    handle = model.net.register_forward_hook(lambda *a: calls.append(1))
    out = model.generate(prompt, 20, temperature=0.0, eos_token=first)
    handle.remove()
    assert len(calls) == 1 and out[0, 0] == first and (out[0, 1:] == 0).all()


#
# Past max_seq_len
def test_transformer_xl_keeps_generating_past_max_seq_len_by_rolling_memories():
    model = make(max_seq_len=8, wrap={"max_mem_len": 8}, rotary_pos_emb=True)
    prompt = torch.randint(0, V, (2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(prompt, 14, temperature=0.0)
    assert out.shape == (2, 14)
    # Reference rollout of the rule: segments of max_seq_len tokens committed to the memories.
    net, seq, mems, seg = model.net, prompt, None, 0
    for _ in range(14):
        t = seq.shape[1]
        while t - seg > 8:
            end = min(seg + 8, t - 1)
            _, mems = net(seq[:, seg:end], mems=mems, return_mems=True)
            seg = end
        seq = torch.cat((seq, net(seq[:, seg:t], mems=mems)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, seq[:, 5:])
    # Within max_seq_len it is plain decoding.
    assert torch.equal(model.generate(prompt, 3, temperature=0.0), seq[:, 5:8])


def test_learned_positions_slide_a_window_with_a_warning():
    model = make(max_seq_len=6)
    prompt = torch.randint(0, V, (1, 4))
    with pytest.warns(UserWarning, match="cache"):
        out = model.generate(prompt, 5, temperature=0.0)
    seq = prompt
    for _ in range(5):
        seq = torch.cat((seq, model.net(seq[:, -6:])[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, seq[:, 4:])


def test_non_causal_stack_falls_back_without_cache():
    net = TransformerWrapper(num_tokens=V, max_seq_len=32, attn_layers=Encoder(dim=16, depth=1, heads=2))
    model = AutoregressiveWrapper(net).eval()
    prompt = torch.randint(0, V, (1, 3))
    with pytest.warns(UserWarning, match="not causal"):
        out = model.generate(prompt, 4, temperature=0.0)
    assert torch.equal(out, model.generate(prompt, 4, temperature=0.0, cache_kv=False))


def test_bad_arguments_are_refused():
    model = make()
    with pytest.raises(ValueError, match="seq_len"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="prompts"):
        model.generate([], 2)
    with pytest.raises(ValueError, match="filter_logits_fn"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, filter_logits_fn="top_q")


def test_sampled_tokens_follow_the_filtered_distribution():
    model = make(rotary_pos_emb=True)
    prompt = torch.randint(0, V, (1, 3))
    probs = (model.net(prompt)[0, -1] / 0.8).softmax(-1)
    draws = model.generate(prompt.expand(4000, -1), 1, temperature=0.8, filter_logits_fn="top_k",
                           filter_kwargs={"k": V})[:, 0]
    freq = torch.bincount(draws, minlength=V).float() / 4000
    assert (freq - probs).abs().max() < 0.03


#
# The prompt pass projects only its last position
@pytest.mark.parametrize("wrap, last_only", [({}, True), ({"tie_embedding": True}, True),
                                             ({"mixture_of_softmax": True}, False), ("custom", False)],
                         ids=["linear", "tied", "mixture", "custom-head"])
def test_the_prompt_pass_runs_the_head_on_its_last_position_only(wrap, last_only, monkeypatch):
    custom = wrap == "custom"
    torch.manual_seed(0)
    model = make(wrap={"to_logits": torch.nn.Sequential(torch.nn.Linear(16, V))} if custom else wrap)
    assert (position_head(model.net, {}) is not None) is last_only
    assert position_head(model.net, {"return_attn": True}) is None
    widths, real_head = [], model.net._head
    monkeypatch.setattr(model.net, "_head", lambda h, **kw: widths.append(h.shape[1]) or real_head(h, **kw))
    prompts = [torch.randint(0, V, (n,)) for n in (5, 3)]  # left-padded: the last position is real in every row
    torch.manual_seed(1)
    fast = model.generate(prompts, 4, temperature=0.7)
    assert widths == [1 if last_only else 5, 1, 1, 1]  # the prompt pass, then three one-token steps
    # The same tokens as the pass over every position (the sampler's noise seeded alike)
    monkeypatch.setattr(head_positions, "position_head", lambda net, kwargs: None)
    torch.manual_seed(1)
    assert torch.equal(fast, model.generate(prompts, 4, temperature=0.7))
