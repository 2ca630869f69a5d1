"""The Feedback Transformer: parity with a token-by-token reference, causality, memory across calls."""

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn.feedback import FeedbackTransformer
from labml_style_nn.positional.t5_bias import relative_position_bucket

V = 50


def make(seq_len=4, mem_len=8, depth=2, **kw):
    torch.manual_seed(0)
    model = FeedbackTransformer(num_tokens=V, dim=32, depth=depth, seq_len=seq_len, mem_len=mem_len,
                                heads=2, dim_head=8, **kw)
    with torch.no_grad():  # break the uniform initial layer weights so that the mixing is tested
        model.memory.layer_weights.copy_(torch.randn(depth + 1))
        model.rel_pos.bias.weight.normal_()
    return model.eval()


def tokens(b, n, seed=1):
    return torch.randint(0, V, (b, n), generator=torch.Generator().manual_seed(seed))


#
# ## An independent reference: every token, every layer, every key written out
def reference(model, x, memory=None):
    """Explicit per-token computation; memory entries are `(position, vector)` pairs."""
    b, n = x.shape
    w, M, mem = model.seq_len, model.mem_len, model.memory
    heads = model.rel_pos.bias.weight.shape[1]
    entries = [] if memory is None else [(p - memory.shape[1], memory[:, p]) for p in range(memory.shape[1])]
    emb = model.token_emb(x)
    mix = mem.layer_weights.softmax(0)
    finals = {}
    for start in range(0, n, w):
        window = list(range(start, min(start + w, n)))
        past = [(p, vec) for p, vec in entries if p < start][-M:]
        cur = {t: emb[:, t] for t in window}
        states = [dict(cur)]
        for layer in model.layers:
            normed = {t: layer.attn_norm(cur[t]) for t in window}
            nxt = {}
            for t in window:
                keys = [(p, mem.norm(vec)) for p, vec in past] + [(u, normed[u]) for u in window if u < t]
                q = (normed[t] @ layer.attn.to_q.weight.t()).view(b, heads, -1)
                o = torch.zeros_like(q)
                if keys:
                    kv = torch.stack([c @ mem.to_kv.weight.t() for _, c in keys], 1)  # (b, j, 2hd)
                    k, v = kv.chunk(2, -1)
                    k, v = k.view(b, len(keys), heads, -1), v.view(b, len(keys), heads, -1)
                    rel = torch.tensor([p - t for p, _ in keys])
                    bias = model.rel_pos.bias(relative_position_bucket(rel, True)).t()  # (h, j)
                    scores = torch.einsum("bhd,bjhd->bhj", q, k) * q.shape[-1] ** -0.5 + bias
                    o = torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), v)
                y = cur[t] + layer.attn.to_out(o.reshape(b, -1))
                nxt[t] = y + layer.ff(layer.ff_norm(y))
            cur = nxt
            states.append(dict(cur))
        for t in window:
            entries.append((t, sum(mix[layer] * states[layer][t] for layer in range(len(states)))))
            finals[t] = cur[t]
    logits = model.to_logits(model.norm(torch.stack([finals[t] for t in range(n)], 1)))
    return logits, torch.stack([vec for _, vec in entries][-M:], 1)


@pytest.mark.parametrize("seq_len,mem_len,n", [(1, 16, 6), (3, 16, 8), (4, 5, 11)],
                         ids=["token_by_token", "windows_ragged", "windows_truncated_memory"])
def test_matches_the_per_token_reference(seq_len, mem_len, n):
    model = make(seq_len=seq_len, mem_len=mem_len)
    x = tokens(2, n)
    with torch.no_grad():
        logits, memory = model(x, return_memory=True)
        ref_logits, ref_memory = reference(model, x)
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(memory, ref_memory, atol=1e-5, rtol=1e-4)
        # Continuing from a memory: positions count on from it.
        x2 = tokens(2, 5, seed=2)
        torch.testing.assert_close(model(x2, memory=memory), reference(model, x2, memory)[0],
                                   atol=1e-5, rtol=1e-4)


#
# ## Properties
@pytest.mark.parametrize("seq_len", [1, 4])
def test_causal(seq_len):
    model = make(seq_len=seq_len)
    x = tokens(2, 12)
    y = x.clone()
    y[:, 7:] = (y[:, 7:] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("seq_len,mem_len", [(1, 16), (4, 16), (4, 6)])
def test_two_calls_with_memory_equal_one_call(seq_len, mem_len):
    model = make(seq_len=seq_len, mem_len=mem_len)
    x = tokens(3, 16)
    with torch.no_grad():
        full = model(x)
        first, memory = model(x[:, :8], return_memory=True)
        second = model(x[:, 8:], memory=memory)
        fresh = model(x[:, 8:])
    torch.testing.assert_close(torch.cat((first, second), 1), full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fresh, full[:, 8:], atol=1e-3)  # the memory matters


def test_memory_length_is_capped_at_mem_len():
    model = make(seq_len=4, mem_len=10)
    memory, lengths = None, []
    with torch.no_grad():
        for s in range(3):
            _, memory = model(tokens(2, 6, seed=s), memory=memory, return_memory=True)
            lengths.append(memory.shape[1])
    assert lengths == [6, 10, 10] and memory.shape == (2, 10, 32)


def test_memory_is_detached_by_default_and_kept_on_request():
    model = make(seq_len=4).train()
    x1, x2 = tokens(2, 8, seed=1), tokens(2, 8, seed=2)
    _, memory = model(x1, return_memory=True)
    assert not memory.requires_grad
    _, memory = model(x1, return_memory=True, detach_memory=False)
    assert memory.requires_grad
    model(x2, memory=memory).sum().backward()
    # Gradient reaches the embeddings of the first call's tokens through the kept memory.
    only_first = sorted(set(x1.flatten().tolist()) - set(x2.flatten().tolist()))
    assert only_first and model.token_emb.weight.grad[only_first].abs().sum() > 0
    assert model.memory.layer_weights.grad.abs().sum() > 0


def test_dropout_training_step_is_finite():
    model = make(seq_len=2, attn_dropout=0.1, ff_dropout=0.1, ff_glu=True).train()
    loss = F.cross_entropy(model(tokens(2, 9)).transpose(1, 2), tokens(2, 9, seed=5))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


#
# ## Errors
def test_bad_inputs_are_refused():
    model = make(mem_len=8)
    with pytest.raises(ValueError, match="memory"):
        model(tokens(2, 4), memory=torch.zeros(2, 9, 32))
    with pytest.raises(ValueError, match="memory"):
        model(tokens(2, 4), memory=torch.zeros(1, 3, 32))
    with pytest.raises(ValueError, match="x"):
        model(torch.full((1, 3), V))
    with pytest.raises(ValueError, match="x"):
        model(torch.zeros(1, 3, 32))
    with pytest.raises(ValueError, match="seq_len"):
        FeedbackTransformer(num_tokens=V, dim=32, depth=1, seq_len=0, mem_len=4)
    with pytest.raises(ValueError, match="attn_dropout"):
        FeedbackTransformer(num_tokens=V, dim=32, depth=1, seq_len=1, mem_len=4, attn_dropout=1.5)
    with pytest.raises(TypeError):
        FeedbackTransformer(num_tokens=V, dim=32, depth=1, seq_len=1, mem_len=4, unknown=1)


#
# ## The seed's examples, at its sizes (dim 512, depth 6) on short inputs
def test_seed_example_windows_of_two():
    torch.manual_seed(0)
    model = FeedbackTransformer(num_tokens=20000, dim=512, depth=6, seq_len=2, mem_len=256, dim_head=64,
                                heads=8, attn_dropout=0.1, ff_dropout=0.1).eval()
    x = torch.randint(0, 20000, (2, 16))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 16, 20000) and torch.isfinite(out).all()


def test_seed_example_memory_across_calls():
    torch.manual_seed(0)
    model = FeedbackTransformer(num_tokens=20000, dim=512, depth=6, seq_len=32, mem_len=256).eval()
    x1, x2, x3 = (torch.randint(0, 20000, (2, 32)) for _ in range(3))
    with torch.no_grad():
        out1, mem1 = model(x1, return_memory=True)
        out2, mem2 = model(x2, memory=mem1, return_memory=True)
        out3, mem3 = model(x3, memory=mem2, return_memory=True)
    assert out3.shape == (2, 32, 20000) and torch.isfinite(out3).all()
    assert mem1.shape == (2, 32, 512) and mem3.shape == (2, 96, 512)
