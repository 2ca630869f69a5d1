r"""
# Compiled decoding: one graph per token, called directly

The [static cache](static_cache.md) gives a decoding step fixed shapes, so that `torch.compile`
turns it into one graph.  A compiled *network* still leaves Python around every step, and at
batch 1 on a CPU that Python is a large part of a step (a profile of the model of the
[benchmark](../../experiments/benchmarks/fast_decoding.md) put a third of a step's time in the Python
interpreter and the dispatcher, half in the matrix-vector products):

* Dynamo's prologue collects the graph's inputs (every parameter and buffer, through the module
  tree) and checks or skips its guards;
* Inductor's Python wrapper calls each kernel and allocates each intermediate result;
* sampling (temperature, top-$k$, softmax, the random draw, argmax) and the stop-token bookkeeping
  are another ten small eager operations.

The loop here removes the three.  **One step is one compiled function**, network *and* sampling:
it reads the last token from a `(b, 1)` tensor and writes the next one into the same tensor.
Everything the step touches is a tensor that the loop owns for the whole call (the cache's buffers
and position, the token, the noise, the rows that ended, the parameters) and updates in place, so
every call of the step has exactly the inputs of the first one.  The first call goes through Dynamo
(guards checked, the graph compiled or found in its cache); a recording backend (`StepRecorder`)
keeps the compiled graph with the inputs Dynamo handed it, and **every later step calls that graph
directly**, with no Dynamo at all.  On the CPU, `compile=True` also sets Inductor's `cpp_wrapper`,
which replaces the Python wrapper around the kernels by C++.

**Random numbers.**  A sampled token is the exponential race of [generate](autoregressive.md),
$\operatorname{argmax}_i\, p_i / E_i$ with $E_i \sim \operatorname{Exp}(1)$.  Inductor's own random numbers
differ from eager PyTorch's, so the noise $E$ is drawn eagerly into a preallocated `(b, V)`
tensor before each step, with the same generator, shape and order as the eager path, and the
graph divides by it: a compiled generation gives the eager tokens for the same seed.

**What a graph depends on.**  Dynamo compiles `decode_step` once per model, batch, buffer length and
sampling setting (greedy and top-$k$ are two graphs); a later `generate` call with the same setting
finds its graph again.  Because every setting is a graph of the same function, the loop raises
Dynamo's recompile limit for that function to 64.

**The same mechanism for other steps.**  `DirectStep` is the part that compiles a function once and
then calls its graph directly; [speculative decoding](speculative.md) runs its draft's one-token
steps and its target's passes over $k + 1$ tokens through it (`compile=True`), where a draft step
costs 0.26 ms compiled against 1.2 ms eager for the two-layer draft of the benchmark.

**Evidence.**  `tests/generation/test_static_decoding.py`: compiled tokens equal eager ones, greedy
and sampled with one seed, for rotary, ALiBi, T5, memory tokens, left-padded prompts, a stop token
reached early by one row, and sliding windows past the window; 19 steps make 19 calls of the
graph and one pass through Dynamo; a second call of another length compiles nothing; the Inductor
default (`compile=True`) gives the eager greedy tokens.  Speed: see the evidence of the
[static cache](static_cache.md).

Shapes: `b` batch, `V` vocabulary, `n` prompt tokens.

## Differences from common practice

gpt-fast also compiles the sampling with the network (`decode_one_token`) and draws its noise
inside the graph, so its sampled tokens differ from its eager ones; here the noise comes from
outside.  Calling the recorded graph directly instead of the `torch.compile` wrapper is what CUDA
graphs do one level lower (replaying fixed addresses); on CUDA the loop keeps
`mode="reduce-overhead"` and marks each step's start, a path that has not been run here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Union, cast

import torch
from torch import Tensor

from .head_positions import last_logits
from .rolling_cache import RollingLayersCache
from .static_cache import StaticLayersCache, StaticWindowCache

# Dynamo's recompile limit (named `cache_size_limit` before PyTorch 2.7).
LIMIT = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


#
# ## The loop
def decode_static(net, seq: Tensor, n: int, cache: Union[StaticLayersCache, RollingLayersCache], options: dict,
                  sample: Callable, draws: bool, eos_token: Optional[int], pad_value: int, first_kwargs: dict,
                  kwargs: dict) -> Tensor:
    """Fill `seq[:, n:]` `(b, total)` after the prompt `seq[:, :n]`; return the new tokens.

    `sample(logits, noise)` picks `(b,)` tokens from `(b, V)` logits; `draws` says whether it reads
    the noise.  The prompt runs eagerly (with `first_kwargs`, e.g. its padding mask; the output layer
    on its last position only), every later step compiled; a sliding window's rolling `cache`
    becomes a `StaticWindowCache` after the prompt.
    """
    b, total = seq.shape
    # The prompt's last position is the only one read: the head runs on it alone (head_positions.py).
    logits = last_logits(net, seq[:, :n], cache=cache, **first_kwargs, **kwargs)[:, -1]  # (b, V)
    if isinstance(cache, RollingLayersCache):
        cache = StaticWindowCache(net.attn_layers, cache)
    noise = torch.empty_like(logits) if draws else None  # (b, V)
    ended = torch.zeros(b, dtype=torch.bool, device=seq.device)
    token = seq.new_empty(b, 1)  # the last token, read and written by every step
    if noise is not None:
        noise.exponential_()
    token.copy_(pick(logits, noise, ended, sample, eos_token, pad_value)[:, None])
    seq[:, n] = token[:, 0]
    if n + 1 == total or (eos_token is not None and bool(ended.all())):
        return seq[:, n:]
    step = DirectStep(decode_step, options)
    cache.mark_static(token, ended, *(() if noise is None else (noise,)))
    for t in range(n + 1, total):
        if noise is not None:
            noise.exponential_()  # $E_i \sim \operatorname{Exp}(1)$, as the eager step would draw
        step(net, cache, token, noise, ended, sample, eos_token, pad_value, kwargs)
        seq[:, t] = token[:, 0]
        if eos_token is not None and bool(ended.all()):
            break
    return seq[:, n:]


def pick(logits: Tensor, noise: Optional[Tensor], ended: Tensor, sample: Callable, eos_token: Optional[int],
         pad_value: int) -> Tensor:
    """The next tokens `(b,)`: sampled, padded where a row already ended; marks the rows that end now."""
    token = sample(logits, noise)
    if eos_token is not None:
        token = token.masked_fill(ended, pad_value)
        ended |= token == eos_token
    return token


def decode_step(net, cache, token: Tensor, noise: Optional[Tensor], ended: Tensor, sample: Callable,
                eos_token: Optional[int], pad_value: int, kwargs: dict) -> None:
    """One compiled step: the network on `token` `(b, 1)`, then sampling; the next token overwrites `token`."""
    logits = net(token, cache=cache, **kwargs)[:, -1]  # (b, V)
    token.copy_(pick(logits, noise, ended, sample, eos_token, pad_value)[:, None])


class DirectStep:
    """`fn` compiled with `torch.compile(fullgraph=True, dynamic=False, **options)`, for calls that
    all pass the same objects (tensors updated in place between calls).

    The first call goes through Dynamo, which checks the guards (recompiling if the model, the
    sizes or the sampling changed) and hands the graph its inputs; the recorder keeps them, and
    every later call runs that graph directly on them: the arguments of later calls are not read.
    Each setting is a graph of the same `fn`, hence the raised recompile limit.
    """

    def __init__(self, fn: Callable, options: dict):
        self.recorder = step_recorder(options)
        self.compiled = torch.compile(fn, **{"fullgraph": True, "dynamic": False, **_passed_on(options),
                                             "backend": self.recorder})
        self.cuda_graphs = self.recorder.mode in ("reduce-overhead", "max-autotune") \
            or bool(self.recorder.options.get("triton.cudagraphs"))
        self.graph: Optional[Callable] = None
        self.inputs: tuple = ()
        self.recorder.last = None

    def __call__(self, *args) -> None:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self.graph is not None:
            self.graph(*self.inputs)
            return
        with torch._dynamo.config.patch({LIMIT: max(64, getattr(torch._dynamo.config, LIMIT))}):
            self.compiled(*args)
        last = self.recorder.take()
        if last is not None:
            self.graph, self.inputs = last


class StepRecorder:
    """A Dynamo backend that compiles like `torch.compile(backend, mode, options)` would, and keeps
    the compiled graph with the inputs of its latest call in `last`."""

    def __init__(self, backend, mode: Optional[str], options: dict):
        self.backend, self.mode, self.options = backend, mode, options
        self.last: Optional[tuple[Callable, tuple]] = None
        self.dispatched = 0  # calls that came through Dynamo (one per `generate` call)

    def __call__(self, gm, example_inputs):
        if self.backend == "inductor":
            compile_fn = torch._TorchCompileInductorWrapper(self.mode, self.options, False)
        else:
            from torch._dynamo.backends.registry import lookup_backend
            compile_fn = lookup_backend(self.backend)
        graph = cast(Callable, compile_fn(gm, example_inputs))

        def run(*args):
            self.last, self.dispatched = (graph, args), self.dispatched + 1
            return graph(*args)
        return run

    def take(self) -> Optional[tuple[Callable, tuple]]:
        """The graph and inputs of the latest call, forgotten here (they hold the call's buffers)."""
        last, self.last = self.last, None
        return last


_recorders: dict = {}


def step_recorder(options: dict) -> StepRecorder:
    """One recorder per compile setting, so that later `generate` calls find their graph in Dynamo's cache."""
    backend, mode = options.get("backend", "inductor"), options.get("mode")
    extra = options.get("options") or {}
    key = (backend, mode, tuple(sorted(extra.items())))
    if key not in _recorders:
        _recorders[key] = StepRecorder(backend, mode, dict(extra))
    return _recorders[key]


def _passed_on(options: dict) -> dict:
    """The `torch.compile` keywords other than the ones the recorder handles."""
    return {k: v for k, v in options.items() if k not in ("backend", "mode", "options")}
