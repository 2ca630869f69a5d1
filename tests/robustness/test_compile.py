"""`torch.compile(fullgraph=True)`: the training step and a cached decoding step compile whole.

`fullgraph=True` makes any graph break an error, so these tests prove that nothing in the forward
pass (option checks, the layer loop, the key/value cache's Python bookkeeping) falls back to
Python.  The backend is `aot_eager` by default: it runs the whole capture, including the backward
graph, but skips code generation, which on 2 CPU cores takes minutes.  Set
`LABML_COMPILE_BACKEND=inductor` to run the same tests through the code generator.

`loss.backward()` itself cannot sit inside a full graph; the compiled function is the forward and
the loss, and autograd runs the compiled backward.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.generation.kv_cache import LayersCache

BACKEND = os.environ.get("LABML_COMPILE_BACKEND", "aot_eager")

pytestmark = pytest.mark.slow


class CountingBackend:
    """Counts how often Dynamo hands over a graph: one per (re)compilation."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        from torch._dynamo.backends.registry import lookup_backend
        return lookup_backend(BACKEND)(gm, example_inputs)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_compiled_matches_eager(model, loss_fn, *inputs):
    torch._dynamo.reset()
    loss_fn(model, *inputs).backward()
    eager = _grads(model)
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(loss_fn, fullgraph=True, backend=BACKEND)
    loss = compiled(model, *inputs)
    loss.backward()
    got = _grads(model)
    assert eager.keys() == got.keys() and eager
    for name in eager:
        torch.testing.assert_close(got[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)


def test_decoder_stack_training_step_compiles_fullgraph():
    torch.manual_seed(0)
    model = Decoder(dim=32, depth=2, heads=4, attn_dim_head=8)
    x, target = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    assert_compiled_matches_eager(model, lambda m, x, t: F.mse_loss(m(x), t), x, target)


def _lm_loss(model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])


def test_language_model_training_step_compiles_fullgraph():
    torch.manual_seed(0)
    model = TransformerWrapper(num_tokens=32, max_seq_len=32, attn_layers=Decoder(dim=32, depth=2, heads=4))
    assert_compiled_matches_eager(model, _lm_loss, torch.randint(0, 32, (2, 17)))


def test_cached_decoding_step_compiles_fullgraph_without_recompiling():
    torch.manual_seed(0)
    model = TransformerWrapper(num_tokens=32, max_seq_len=64,
                               attn_layers=Decoder(dim=32, depth=2, heads=4, attn_dim_head=8)).eval()
    tokens = torch.randint(0, 32, (2, 14))
    prompt, steps = tokens[:, :8], tokens[:, 8:]

    def run(step_fn):
        cache = LayersCache(model.attn_layers, batch=2, max_len=32)
        outs = [model(prompt, cache=cache)[:, -1]]
        for t in range(steps.shape[1]):
            outs.append(step_fn(steps[:, t:t + 1], cache)[:, -1])
        return torch.stack(outs, 1)

    torch._dynamo.reset()
    backend = CountingBackend()
    def step(tok, cache):
        return model(tok, cache=cache)
    with torch.no_grad():
        eager = run(step)
        compiled = run(torch.compile(step, fullgraph=True, backend=backend))
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    # The cache's offset grows every step; after one recompilation it is treated as dynamic, so six
    # steps compile at most twice instead of six times.
    assert 1 <= backend.graphs <= 2, backend.graphs
