r"""
# Speculative decoding

*Papers:* [Fast Inference from Transformers via Speculative Decoding](https://arxiv.org/abs/2211.17192) (Leviathan et al., 2023),
[Accelerating Large Language Model Decoding with Speculative Sampling](https://arxiv.org/abs/2302.01318) (Chen et al., 2023)

A decoding step of a small batch reads every weight of the model to produce one token, and that is
about as slow for one token as for a handful: the step is bound by memory (or, on a CPU at small
sizes, by per-kernel overhead), not by arithmetic.  Speculative decoding lets a cheap **draft**
model guess the next $k$ tokens one by one, then runs the large **target** model once over all $k$
guesses, which gives its distributions $p_1 \dots p_{k+1}$ at every guessed position in one pass.
The guesses are accepted left to right by a rule that makes each output token distributed
*exactly* as the target's own sample; the first rejected guess is replaced by a token from a
corrected distribution, and if all $k$ are accepted the target's $p_{k+1}$ gives one more token
for free.  A round costs $k$ draft steps and one target pass, and yields between 1 and $k + 1$
tokens.

**The acceptance rule.**  With draft distribution $q_i$ and guess $\tilde x_i \sim q_i$, accept

$$\tilde x_i \text{ with probability } \min\!\left(1, \frac{p_i(\tilde x_i)}{q_i(\tilde x_i)}\right),
\qquad \text{else draw } x_i \sim \frac{\max(0,\, p_i - q_i)}{\sum_x \max(0,\, p_i(x) - q_i(x))}.$$

The probability of emitting $x$ is then $q_i(x) \min(1, p_i(x)/q_i(x)) = \min(q_i(x), p_i(x))$ from
acceptance plus the rejection mass $\sum_y \max(0, q_i(y) - p_i(y)) = \sum_y \max(0, p_i(y) - q_i(y))$
times the corrected distribution above.  The rejection mass is that distribution's normaliser, so
the product is $\max(0, p_i(x) - q_i(x))$, and the two parts add up to $p_i(x)$.

**Two acceptance numbers.**  If every guess is accepted with the same probability $\beta$ (the
papers' $\alpha$), independently, a round yields on average $(1 - \beta^{k+1}) / (1 - \beta)$
tokens.  What the code counts is $\alpha$, the *fraction of guesses accepted* (accepted over
proposed, `SpeculativeStats.acceptance_rate`): a round accepts $k\alpha$ guesses on average and
then emits one token of the target's, so it yields exactly $1 + k\alpha$ tokens, with no assumption.
The two differ because the guesses after the first rejection count as proposed and not accepted:
at $k = 3$, $\alpha = 0.53$ gives $1 + 3 \cdot 0.53 = 2.59$ tokens per round, which the first formula
gives for $\beta \approx 0.71$ (at $\beta = 0.53$ it gives 1.96).
**Greedy** decoding ($T = 0$) is the special case where both distributions are one-hot: a guess is
accepted when it is the target's argmax, and the correction is the target's argmax, so the output
is the target's own greedy output.

`AutoregressiveWrapper.generate(..., draft=model, num_speculative=k)` runs it, with the
temperature and filter of the call applied to both models (the filtered target distribution is
the one reproduced exactly).  Both models keep a [key/value cache](kv_cache.md); a rejected guess
is forgotten by moving the cache's offset back (`rewind`), the stale keys being overwritten later.
The first target pass runs the whole prompt and the guesses, and its output layer only the $k + 1$
positions it verifies; the draft's, only the last position it feeds
([head positions](head_positions.md)).
`compile=True` compiles both models: the draft's one-token steps and the target's passes over
$k + 1$ tokens each run as one graph on a [static cache](static_cache.md), called directly
([compiled decoding](compiled_decoding.md)).

**What a round costs.**  In units of one cached target step, let $c_d$ be a draft step and
$c_p(k + 1)$ the target's pass over $k + 1$ tokens.  A round yields $1 + k\alpha$ tokens on
average ($\alpha$ the fraction of guesses accepted, as above), so

$$\text{speed-up} \approx \frac{1 + k\alpha}{k\, c_d + c_p(k + 1)}.$$

The papers' premise is $c_p(k + 1) \approx 1$: a step reads every weight once, and reading them is
the whole cost.  On a CPU `nn.Linear` breaks it: a few rows go through the BLAS's general matrix
product, which repacks the weight at each call, and a pass over 3-5 tokens costs 1.3-1.6 steps.
So the target's linear layers run here through oneDNN with each weight packed **once** per call
(`packed_linears`): the pass then costs 1.0-1.3 steps (the products are equal up to rounding).
Eagerly, a draft with a sixth of the target's layer weights still costs 0.2-0.4 of a step: at
these sizes a step's time goes kernel by kernel, in Python and dispatch as much as in arithmetic.
Compiled, most of that overhead goes: a draft step costs 0.05-0.1 of an eager target step, and
the compiled pass over $k + 1$ tokens, with the packed weights, 0.45-0.7 (1.05-1.5 of the
target's own compiled one-token step).  The guesses are written straight into the output buffer,
where the target's pass reads them and where an accepted guess already sits; the loop's own Python
work is 0.3-0.5 ms per round.

Shapes: `b` batch, `k` guesses per round, `V` vocabulary.

**Evidence.**  `tests/generation/test_speculative.py` checks the rule on a hand-made example, checks
by chi-square tests (fixed seed, 40 000 rows) that every emitted token follows the target's
distribution whichever guesses were accepted, and checks that greedy output equals the target's own,
with left padding and end-of-sequence tokens, eager and compiled (with `aot_eager`, and with
Inductor calling the packed operator).  The speed on a CPU ([benchmarks](../../docs/benchmarks.md)),
with a target (`dim=256, depth=4`) trained for a few minutes on the standard library's sources and
a two-layer, 128-wide draft distilled from it (a sixth of its layer weights): $\alpha$, the fraction
of guesses accepted, is 0.53 at $k = 3$ on the benchmark's prompts (2.57 tokens per target pass), and greedy decoding with `compile=True` runs **1.54-2.12x** the
target alone over three runs on a quiet machine (2 threads, wall clock; the goal was 1.5x), where the
eager loop stays at 0.93-1.15x.  Against the target's own `compile=True` decoding it is 0.64-1.14x:
at this size, on a CPU, compiling the target alone is about as fast.  A pass over $k + 1$ tokens
costs 1.05-1.5 compiled one-token steps, and what the parts timed alone leave out (the Python
between the graphs, the draft's extra step after a round that accepted every guess, each graph
running slower between the other model's calls than alone) is about half of a round.

## Differences from the papers

* **Batches advance in lockstep.**  Rows accept different numbers of guesses; every row keeps the
  same number $m + 1$ of tokens, $m = \min_b a_b$ the fewest accepted.  A row that accepted more
  keeps its accepted guess at position $m + 1$: it is the token the rule emits there, and cutting a
  row's output at a point chosen by the *other* rows does not change its distribution.  At batch 1
  this is the papers' algorithm.
* The guesses are drawn by the exponential race of `generate` and the rule uses one uniform per
  guess, $u_i < p_i(\tilde x_i) / q_i(\tilde x_i)$, written as $u_i\, q_i(\tilde x_i) < p_i(\tilde x_i)$.
* The draft and the number of guesses are fixed; the papers also study choosing $k$ adaptively.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .compiled_decoding import DirectStep
from .head_positions import last_logits
from .kv_cache import LayersCache
from .static_cache import StaticLayersCache, round_up, static_blocker


@dataclass
class SpeculativeStats:
    """Counts of one `generate` call with a draft model."""

    rounds: int = 0  # target passes
    proposed: int = 0  # guesses made, summed over rows
    accepted: int = 0  # guesses accepted by the rule, summed over rows
    emitted: int = 0  # tokens kept per row, summed over rounds

    @property
    def acceptance_rate(self) -> float:
        r"""$\alpha$: the fraction of guesses the rule accepted."""
        return self.accepted / max(self.proposed, 1)

    @property
    def tokens_per_round(self) -> float:
        """Tokens each target pass produced."""
        return self.emitted / max(self.rounds, 1)


def race(probs: Tensor) -> Tensor:
    r"""Sample an index per row of `probs` `(..., V)`: $\operatorname{argmax}_x p_x / E_x$, $E_x \sim \operatorname{Exp}(1)$."""
    return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)


#
# ## The acceptance rule
def accept_draft(p: Tensor, q: Tensor, guesses: Tensor, uniform: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    r"""How many guesses each row accepts, and the token that follows them.

    `p` `(b, k + 1, V)` are the target's distributions at the $k$ guessed positions and one more,
    `q` `(b, k, V)` the draft's, `guesses` `(b, k)` the draft's tokens; `uniform` `(b, k)` the
    draws in $[0, 1)$ (random when `None`).  Returns `(a, x)`: `a` `(b,)` the number of guesses
    accepted before the first rejection, `x` `(b,)` the token at position $a + 1$: drawn from the
    corrected distribution, $\max(0, p_{a+1} - q_{a+1})$ normalised, after a rejection, from $p_{k+1}$
    when all were accepted.

    >>> p = torch.tensor([[[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]]])   # target at guess 1, and after it
    >>> q = torch.tensor([[[0.2, 0.6, 0.2]]])                    # the draft preferred token 1
    >>> accept_draft(p, q, torch.tensor([[1]]), uniform=torch.tensor([[0.4]]))   # 0.4 < 0.3 / 0.6
    (tensor([1]), tensor([0]))
    >>> accept_draft(p, q, torch.tensor([[1]]), uniform=torch.tensor([[0.6]]))[0]   # rejected
    tensor([0])
    """
    b, k = guesses.shape
    if uniform is None:
        uniform = torch.rand(b, k, device=p.device)
    # $p_i(\tilde x_i)$ and $q_i(\tilde x_i)$, `(b, k)`
    p_guess = p[:, :k].gather(-1, guesses[..., None])[..., 0]
    q_guess = q.gather(-1, guesses[..., None])[..., 0]
    # Accept with probability $\min(1, p_i(\tilde x_i) / q_i(\tilde x_i))$: $u_i\, q_i(\tilde x_i) < p_i(\tilde x_i)$.
    accepted = uniform * q_guess < p_guess  # (b, k)
    # $a$: accepted guesses before the first rejection
    a = accepted.long().cumprod(dim=-1).sum(dim=-1)  # (b,)
    # $q_{k+1} = 0$, so that after $k$ acceptances the "correction" is $p_{k+1}$ itself.
    q = F.pad(q, (0, 0, 0, 1))  # (b, k + 1, V)
    rows = torch.arange(b, device=p.device)
    p_next, q_next = p[rows, a], q[rows, a]  # (b, V)
    # $\max(0, p - q)$, normalised by the race; where it vanishes ($p = q$ up to rounding) use $p$.
    residual = (p_next - q_next).clamp(min=0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_next)
    return a, race(residual)


def accept_draft_greedy(target_logits: Tensor, guesses: Tensor) -> tuple[Tensor, Tensor]:
    """The rule at temperature 0: accept a guess when it is the target's argmax; `(a, x)` as `accept_draft`.

    >>> logits = torch.tensor([[[0., 5.], [5., 0.], [0., 5.]]])   # target argmax: 1, then 0, then 1
    >>> accept_draft_greedy(logits, torch.tensor([[1, 1]]))
    (tensor([1]), tensor([0]))
    """
    best = target_logits.argmax(dim=-1)  # (b, k + 1)
    a = (guesses == best[:, :-1]).long().cumprod(dim=-1).sum(dim=-1)  # (b,)
    return a, best.gather(1, a[:, None])[:, 0]


#
# ## A verification pass that costs about one step
#
# On the CPU, `nn.Linear` multiplies a few rows by a weight through the BLAS's general product,
# which repacks the weight at every call: $k + 1$ rows cost well over one row (1.6-1.7x at 3-4
# rows of a `256 x 1024` layer here), while the one-row step takes the matrix-vector path.  oneDNN
# with the weight packed **once**, for a few rows, reads each weight once per call whatever the
# rows: 3-5 rows then cost about one row (`docs/benchmarks.md`).  During a speculative `generate`
# the target's linear layers run that way; the products are the same up to rounding.
PACKED_PASS = True  # (set to False to measure the pass through `nn.Linear`)
PACK_MIN_NUMEL = 2 ** 16  # weights of at least 256 KiB (a 256 x 256 layer)


def logits_into(net, cache, tokens: Tensor, out: Tensor, kwargs: dict) -> None:
    """A compiled call: the network on `tokens` `(b, j)` after its cache; the logits overwrite `out` `(b, j, V)`
    (the draft's steps: $j = 1$; the target's passes: $j = k + 1$)."""
    out.copy_(net(tokens, cache=cache, **kwargs))


def _packable() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packed_forward(layer: nn.Linear, rows: int) -> Callable[[Tensor], Tensor]:
    """`layer`'s product through oneDNN, its weight packed once for `rows` rows."""
    packed, bias = torch.ops.mkldnn._reorder_linear_weight(layer.weight, rows), layer.bias

    def forward(x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return forward


# A compiled pass cannot hold a packed weight (a oneDNN tensor has no strides for the compiler to
# follow), so there the product is an operator of its own: the graph passes the layer's weight (for
# the shape of the result) and a key, and at run time the operator multiplies by the weight packed
# under that key for the current `generate` call.
_PACKED: dict[int, Tensor] = {}


@torch.library.custom_op("labml_style_nn::packed_linear", mutates_args=(),
                         schema="(Tensor x, Tensor weight, Tensor? bias, int key) -> Tensor")
def packed_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], key: int) -> Tensor:
    """`F.linear(x, weight, bias)` through the weight packed under `key` by `packed_linears(..., traceable=True)`."""
    return torch.ops.mkldnn._linear_pointwise(x, _PACKED[key], bias, "none", [], "")


@packed_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], key: int) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def traceable_forward(layer: nn.Linear, rows: int) -> Callable[[Tensor], Tensor]:
    """`layer`'s product through the `packed_linear` operator, its weight packed once for `rows` rows."""
    key = id(layer)
    _PACKED[key] = torch.ops.mkldnn._reorder_linear_weight(layer.weight, rows)

    def forward(x: Tensor) -> Tensor:
        return packed_linear(x, layer.weight, layer.bias, key)
    return forward


@contextmanager
def packed_linears(net: nn.Module, rows: int, traceable: bool = False) -> Iterator[None]:
    """Within the block, the float32 CPU `nn.Linear` layers of `net` multiply by a weight packed for `rows` rows
    (`traceable`: through an operator that `torch.compile` can put in a graph)."""
    # (Small weights are left alone: there the call's own overhead outweighs what packing saves.)
    layers = [m for m in net.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"
              and m.weight.dtype == torch.float32 and m.weight.numel() >= PACK_MIN_NUMEL] \
        if PACKED_PASS and _packable() else []
    try:
        for m in layers:
            try:
                forward = traceable_forward(m, rows) if traceable else packed_forward(m, rows)
            except RuntimeError:  # a oneDNN build that cannot pack this weight: `nn.Linear` for all
                for done in layers:
                    done.__dict__.pop("forward", None)
                    _PACKED.pop(id(done), None)
                layers = []
                break
            # An attribute of this module, shadowing `nn.Linear.forward` (set by name: the type of a
            # bound method is not that of a plain function).
            setattr(m, "forward", forward)  # noqa: B010
        yield
    finally:
        for m in layers:
            m.__dict__.pop("forward", None)
            _PACKED.pop(id(m), None)


#
# ## The decoding loop
#
# `seq` holds prompt and output; `cur` tokens of it are final.  The draft writes its guesses into
# `seq` itself, after the final tokens, so that the target's pass reads them in place and an
# accepted guess is already where it belongs; only the token after the accepted ones is written.
# Each cache holds the first `fed` tokens (plus memory tokens); a model is fed what it has not seen
# yet, so a round starts with one or two tokens for the draft.
def speculative_decode(target, draft, tokens: Tensor, starts: Optional[Tensor], *, seq_len: int,
                       num_speculative: int, probs: Optional[Callable[[Tensor], Tensor]],
                       eos_token: Optional[int], pad_value: int, num_memory_tokens: tuple[int, int],
                       kwargs: dict, compile_options: Optional[dict] = None) -> tuple[Tensor, SpeculativeStats]:
    """Decode `seq_len` tokens after `tokens` `(b, n)` with `target` checking `draft`'s guesses.

    `target` and `draft` are `TransformerWrapper`s over one vocabulary; `probs` turns logits into
    the sampling distribution (temperature and filter), `None` for greedy decoding.  With
    `compile_options` (keywords of `torch.compile`) the draft's one-token steps and the target's
    passes over $k + 1$ tokens run as compiled graphs on [static caches](static_cache.md), called
    directly ([compiled decoding](compiled_decoding.md)); a target whose stack cannot use a static
    cache runs eagerly.
    """
    b, n = tokens.shape
    total = n + seq_len
    seq = tokens.new_full((b, total), pad_value)
    seq[:, :n] = tokens
    mask = None if starts is None else torch.arange(total, device=seq.device)[None] >= starts[:, None]
    pos_kwargs = {} if starts is None else {"seq_start_pos": starts}
    models = (target, draft)
    caches = [LayersCache(m.attn_layers, b, total + mem) for m, mem in zip(models, num_memory_tokens, strict=True)]
    draft_step = target_step = None
    if compile_options is not None:
        step_kwargs = {**pos_kwargs, **kwargs}  # (read by a step's first call only: later ones reuse its inputs)
        static = StaticLayersCache(draft.attn_layers, b, round_up(total + num_memory_tokens[1]))
        draft_step, caches[1] = DirectStep(logits_into, compile_options), static
        # The step's input and output: buffers that every step reads and overwrites.
        token, out = seq.new_empty(b, 1), torch.empty(b, 1, draft.num_tokens, device=seq.device)
        static.mark_static(token, out)
        if static_blocker(target.attn_layers) is None:
            # The target's passes over $k + 1$ tokens: a graph of their own, on buffers of their own.
            static = StaticLayersCache(target.attn_layers, b, round_up(total + num_memory_tokens[0]))
            target_step, caches[0] = DirectStep(logits_into, compile_options), static
            window = seq.new_empty(b, num_speculative + 1)
            passed = torch.empty(b, num_speculative + 1, target.num_tokens, device=seq.device)
            static.mark_static(window, passed)
    fed = [0, 0]
    ended = torch.zeros(b, dtype=torch.bool, device=seq.device)
    stats = SpeculativeStats()

    def run(which: int, end: int, keep: int = 1) -> Tensor:
        """Feed `seq[:, fed:end]` to a model after its `fed` tokens; the logits of the last `keep`
        positions `(b, keep, V)` (the draft reads one, the target the $k + 1$ it verifies), the
        output layer run on those alone ([head positions](head_positions.md))."""
        start = fed[which]
        fed[which] = end
        if which == 1 and draft_step is not None and start:
            # One compiled step per token; a round may begin with two unseen tokens.
            for i in range(start, end):
                token.copy_(seq[:, i:i + 1])
                draft_step(draft, caches[1], token, out, step_kwargs)
            return out  # (b, 1, V)
        if which == 0 and target_step is not None and start and end - start == window.shape[1]:
            # (The prompt, and the last rounds with fewer guesses, run eagerly.)
            window.copy_(seq[:, start:end])
            target_step(target, caches[0], window, passed, step_kwargs)
            return passed  # (b, k + 1, V): a full window is all $k + 1$ positions read
        m = None if mask is None or start else mask[:, :end]
        return last_logits(models[which], seq[:, start:end], keep, cache=caches[which], mask=m, **pos_kwargs,
                           **kwargs)

    def distribution(logits: Tensor) -> Tensor:
        assert probs is not None  # called only when sampling (greedy decoding takes the argmax)
        return probs(logits.flatten(0, -2)).view_as(logits)

    cur = n
    with packed_linears(target, b * (num_speculative + 1), traceable=target_step is not None):
        while cur < total:
            k = min(num_speculative, total - cur - 1)
            # The draft guesses $\tilde x_1 \dots \tilde x_k$ one at a time, $\tilde x_i \sim q_i$,
            # written to `seq[:, cur:cur + k]`.
            q = []
            for i in range(k):
                logits = run(1, cur + i)[:, -1]  # (b, V)
                if probs is None:
                    seq[:, cur + i] = logits.argmax(dim=-1)
                else:
                    q.append(distribution(logits))
                    seq[:, cur + i] = race(q[-1])
            guesses = seq[:, cur:cur + k]
            # One target pass over the unseen tokens and all guesses: $p_1 \dots p_{k+1}$.
            logits = run(0, cur + k, keep=k + 1)  # (b, k + 1, V)
            if probs is None:
                a, correction = accept_draft_greedy(logits, guesses)
            else:
                a, correction = accept_draft(distribution(logits), torch.stack(q, 1) if q else logits[:, :0],
                                             guesses)
            # Lockstep: every row keeps $m + 1$ tokens; a row that accepted more keeps its guess $m + 1$.
            counts = a.tolist()  # (one transfer; the loop's control needs the numbers)
            m = min(counts)
            keep_guess = max(counts) > m and m < k
            seq[:, cur + m] = torch.where(a > m, seq[:, cur + m], correction) if keep_guess else correction
            if eos_token is not None:
                for i in range(cur, cur + m + 1):
                    # Rows that already ended are padded; a row ends at its first eos.
                    seq[:, i] = seq[:, i].masked_fill(ended, pad_value)
                    ended |= seq[:, i] == eos_token
            stats.rounds += 1
            stats.proposed += b * k
            stats.accepted += sum(counts)
            stats.emitted += m + 1
            # Forget what was computed past the kept tokens: the target saw $m$ of its guesses.
            fed[0], fed[1] = cur + m, min(fed[1], cur + m)
            for cache, mem, f in zip(caches, num_memory_tokens, fed, strict=True):
                cache.rewind(mem + f)
            cur += m + 1
            if eos_token is not None and bool(ended.all()):
                break
    # Rejected guesses past the last kept token (after every row ended) are not output.
    seq[:, cur:] = pad_value
    return seq[:, n:], stats
