r"""
# Computing the experts: tokens grouped by expert

*Papers:* [Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer](https://arxiv.org/abs/1701.06538) (Shazeer et al., 2017),
[GShard](https://arxiv.org/abs/2006.16668) (Lepikhin et al., 2020)

A mixture-of-experts layer has $E$ feed-forward networks, the *experts*, and sends each token to
only $k$ of them.  After routing (the [Switch](switch.md), [Mixtral](mixtral.md) and
[DeepSeek](deepseek.md) pages) the layer holds a list of $S$ *assignments*
$(t_s, e_s, g_s)$: token $t_s$ goes to expert $e_s$ with gate $g_s$.  The output of token $t$ is

$$y_t = \sum_{s : t_s = t} g_s \, \operatorname{FFN}_{e_s}(x_t).$$

Computed one assignment at a time this is $S$ small matrix-vector products; computed densely
(every expert on every token) it is $E / k$ times the work.  Instead the assignments are **sorted
by expert**, so that each expert's tokens lie in one contiguous block of rows, and every expert
multiplies its whole block at once:

1. `order = argsort(e)`: the assignments grouped by expert, $c_e$ rows for expert $e$;
2. gather the rows $X_s = x_{t_s}$ in that order, `(S, D)`;
3. one matrix product per expert block, $H = \phi(X W^{(e)}_1)$ then $Y = H W^{(e)}_2$: PyTorch's
   grouped matrix multiply `torch.nn.functional.grouped_mm` does all blocks in one call, given
   the block ends $\operatorname{cumsum}(c)$ (on the CPU without gradients, and on CUDA in
   bfloat16); where it cannot run (rows not a multiple of 16 bytes, float64, gradients on the CPU,
   whose backward of it fails on empty blocks) a loop over the $E$ experts (never over tokens)
   calls `mm` once per block;
4. scale each row by its gate and add it back to its token with `index_add_`.

The experts' weights are stored as three-dimensional tensors, expert first and **input first**, so
that every product is $X W$ with $W$ read row by row: `w_in` `(E, D, H)` (or `(E, D, 2H)` for gated
experts, value half first as on the [GLU page](../feedforward/glu.md)) and `w_out` `(E, H, D)`.
That is the transpose of `nn.Linear`'s `(out, in)` and of Hugging Face's fused `gate_up_proj`
`(E, 2H, D)`; the conversions transpose once at loading.  The layout matters on the CPU: a
product with a transposed view, $X (W^\top)^\top$, was 1.3 to 1.7 times slower per call than with
the contiguous $W$ at these sizes (PyTorch 2.13, one thread; see the
[benchmark](../../experiments/benchmarks/moe.md)).

## Speed on a CPU

Hugging Face `transformers` 5 computes a Mixtral layer's experts the same way by default (its
`grouped_mm` experts: sort the assignments, `grouped_mm` on transposed views of its `(E, 2H, D)`
weights, un-permute, sum the $k$ rows of each token).  Against that block, on the same weights, this
layer is 1.4 to 3.1 times faster at widths 64 and 128 on one CPU thread (with its inference step,
[fused inference](fused_inference.md)), and greedy generation 2.3 to 2.9 times (the figures and the
commands are on the
[benchmarks page](../../docs/benchmarks.md#the-mixture-of-experts-layer-against-hugging-faces-mixtral)).
What makes the difference, besides the layout:

* **few passes over memory.**  At these sizes the products themselves take a third to a half of
  a forward over 256 tokens; the rest is the small operators, which on a CPU cost what their
  memory traffic costs: each ran 2 to 3 times slower inside the pass than alone (an `argsort` of 512 indices, 7 µs
  alone, took 60 µs after 4 MB had been written).  So without gradients the activation and the gate
  scaling are written in place (`_activate` below), rows are gathered with `index_select`, and the
  tokens are not un-permuted before they are summed (`index_add_` takes the sorted rows);
* **inference runs straight through** (`infer` below): without gradients the layer skips its
  helpers, and the block ends come from one `searchsorted` over the sorted experts.  A whole
  layer in evaluation goes one step further: [fused inference](fused_inference.md) writes router,
  experts and combination as one function with the same four ways below (these experts' `infer`
  is what runs for the layers it does not cover, and for `Experts` used alone).

**The way of computing follows the size of the step**, decided by plain numbers ($t$ tokens, $S$
assignments, $E$ experts of $P$ numbers each):

| step | way | why |
|---|---|---|
| one token, on the CPU | its $k$ experts, weights read in place (`_one_token`) | no sort and no copy: $k$ pairs of products |
| $S < E$ and $S P \le 2^{18}$ | the chosen experts' weights gathered, one batched product (`_gathered`) | copies fewer numbers than all experts hold |
| $S \ge E$ and $t E P \le 2^{22}$, not float16 | every expert on every token, zero gates elsewhere (`_dense`) | nearly every expert's weights are read anyway; no sort, count or scatter |
| otherwise | grouped by expert, `grouped_mm` | the fastest form of the products at these counts (below) |

The forms of the two products, timed alone at the benchmark's counts (512 assignments over 8
experts; one thread; multiply-adds of the assignments per second): at width 64, `grouped_mm` 68 G/s,
one `mm` per expert 61, one `bmm` with every expert's rows padded to the largest block 70; at width
128, 81, 77 and 75.  `grouped_mm` runs near one core's peak, so padding buys nothing there, and
would cost the positions of the rows within their blocks.  At 16 assignments (a step of 8 tokens)
the padded `bmm` reached 25 G/s against `grouped_mm`'s 12 at width 64 (at width 128, 11 and 11), but
the dense form (18 and 9) needs no sort at all: it wins the whole step where its extra arithmetic
is small (the rule at `dense_limit` below).

What is left is the floor at width 128: the two grouped products (0.7 ms of a 1.05 to 1.1 ms
forward with the fused step), and in a step of 8 tokens, reading nearly every expert's weights (16
assignments over 8 experts), which both libraries must do.

## Expert parallelism

When the experts outgrow one device they are split across $P$ devices, $E / P$ experts each,
while attention and the rest of the layer stay data-parallel (GShard).  Each process routes its own
tokens, then the grouped layout above is exactly what the exchange needs:

1. sort the local assignments by expert; since the experts of device $p$ are the contiguous range
   $[pE/P, (p+1)E/P)$, the sorted rows are already grouped by destination device;
2. `torch.distributed.all_to_all_single(recv, send, output_split_sizes, input_split_sizes)` sends
   every device its rows (the split sizes are the row counts per device, exchanged first with a
   small `all_to_all_single` of the counts per expert);
3. each device runs the grouped multiply above over the rows it received (re-sorted by its local
   experts);
4. a second `all_to_all_single`, with the split sizes swapped, returns the results to the devices
   the tokens came from, where the gates and `index_add_` combine them.

Two exchanges per layer per direction (the backward of an all-to-all is the reverse all-to-all);
with a capacity factor the row counts are bounded, which is why Switch and GShard drop tokens
beyond it: fixed-size buffers.  [`ExpertParallel`](expert_parallel.md) is these steps, with a test
on two CPU processes; the keyword API itself runs every expert on every process (the
[experiment](../../experiments/moe_lm.md) is data-parallel under `torchrun`).

Shapes: `t` tokens, `S` assignments ($t k$, fewer after dropping), `E` experts, `D` width,
`H` hidden width of one expert.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..feedforward.activations import activation as make_activation

# `grouped_mm` (torch 2.10+) or its older private name; `None` on older versions.
_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def group_by_expert(experts: Tensor, num_experts: int) -> tuple[Tensor, Tensor]:
    """`(order, counts)`: the assignments sorted by expert (stable) and the rows of each expert.

    >>> order, counts = group_by_expert(torch.tensor([2, 0, 2, 1]), 4)
    >>> order.tolist(), counts.tolist()
    ([1, 3, 0, 2], [1, 1, 2, 0])
    """
    order = torch.argsort(experts, stable=True)  # (S,)
    counts = torch.bincount(experts, minlength=num_experts)  # (E,)
    return order, counts


def grouped_linear(x: Tensor, weight: Tensor, counts: Optional[Tensor], *, grouped_mm: Optional[bool] = None,
                   ends: Optional[Tensor] = None) -> Tensor:
    r"""Rows of `x` `(S, I)` grouped by expert (`counts` `(E,)` rows each) times `weight[e]` `(E, I, O)`.

    Three ways, the same numbers:

    * with `grouped_mm=True` (or `None` where it runs and pays: without gradients on the CPU, CUDA in
      bfloat16; float32 or 16-bit rows a multiple of 16 bytes long) PyTorch's grouped multiply,
      one call for all experts;
    * without gradients, one `mm` per expert that has rows, written in place into one output;
    * otherwise one `matmul` per expert, concatenated.

    `ends`, the block ends $\operatorname{cumsum}(c)$ as `int32`, when the caller has them already
    (then `counts` may be `None`).
    """
    if grouped_mm is None:
        grouped_mm = _grouped_mm_runs(x, weight)
    if ends is None:
        if counts is None:
            raise ValueError("grouped_linear: expected counts or ends, got neither")
        # Block $e$ ends at row $\sum_{e' \le e} c_{e'}$
        ends = torch.cumsum(counts, 0, dtype=torch.int32)  # (E,)
    if grouped_mm and _GROUPED_MM is not None:
        return _GROUPED_MM(x, weight, offs=ends)  # (S, O)
    # The block of each expert, read once on the host
    stops = ends.tolist()
    starts = [0] + stops[:-1]
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        out = x.new_empty(len(x), weight.shape[2])  # (S, O)
        for e, (a, b) in enumerate(zip(starts, stops, strict=True)):
            if b > a:
                torch.mm(x[a:b], weight[e], out=out[a:b])
        return out
    return torch.cat([x[a:b] @ weight[e] for e, (a, b) in enumerate(zip(starts, stops, strict=True))])  # (S, O)


def _grouped_mm_runs(x: Tensor, *weights: Tensor) -> bool:
    """Whether `grouped_mm` runs on `x` times each of `weights` and is the faster choice."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))
    return _grouped_mm_pays(x, [size for w in weights for size in w.shape[1:]], needs_grad)


def _grouped_mm_pays(x: Tensor, sizes, needs_grad: bool) -> bool:
    """`_grouped_mm_runs` for weights of the given matrix `sizes`, from plain numbers (no weight is read)."""
    if _GROUPED_MM is None or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if any(size * x.element_size() % 16 for size in sizes):
        return False
    if x.is_cuda:
        return x.dtype == torch.bfloat16
    # On the CPU its backward fails when an expert has no rows: there, only without gradients
    return x.device.type == "cpu" and not needs_grad


class Experts(nn.Module):
    r"""$E$ feed-forward networks with weights stored expert-first, run on grouped assignments.

    >>> experts = Experts(4, 8, 16)
    >>> x = torch.randn(3, 8)                                  # 3 tokens
    >>> token, expert = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 3, 1, 0])
    >>> experts(x, expert, torch.ones(4), token).shape          # 4 assignments
    torch.Size([3, 8])

    Args:
        num_experts: $E$.
        dim: model width $D$.
        hidden: hidden width $H$ of each expert.
        glu: gated experts, $\phi(x W_g) \odot x W_u$ (SwiGLU with `activation="silu"`).
        activation: a name of `ff_activation`.
        bias: biases on both projections.
        dropout: dropout on the hidden layer.
    """

    expert_ids: Tensor  # $0, \dots, E - 1$ (a buffer)

    def __init__(self, num_experts: int, dim: int, hidden: int, *, glu: bool = True, activation: str = "silu",
                 bias: bool = False, dropout: float = 0.0):
        super().__init__()
        if num_experts < 1 or hidden < 1:
            raise ValueError(f"ff_num_experts: expected at least one expert of width >= 1, got {num_experts} "
                             f"of width {hidden}")
        self.num_experts, self.dim, self.hidden, self.glu = num_experts, dim, hidden, glu
        self.width = width = 2 * hidden if glu else hidden
        # Input first: $x W$ with $W$ `(in, out)` (see the layout above)
        self.w_in = nn.Parameter(torch.empty(num_experts, dim, width))
        self.w_out = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b_in = nn.Parameter(torch.zeros(num_experts, width)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(num_experts, dim)) if bias else None
        # $P$, the numbers in one expert's weights (the size rules of the inference paths read it)
        self.expert_numbers = dim * (width + hidden)
        # $0, \dots, E - 1$, to find the block ends in the sorted experts
        self.register_buffer("expert_ids", torch.arange(num_experts), persistent=False)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        # `None`: the grouped multiply where it runs and pays (see `grouped_linear`); `False`: never; `True`: always.
        self.grouped_mm: Optional[bool] = None
        self._grouped_choice: dict[tuple[torch.dtype, str], bool] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each expert initialised as `nn.Linear` would be: uniform in $\pm 1/\sqrt{\text{fan-in}}$
        for w, fan_in in ((self.w_in, self.dim), (self.w_out, self.hidden)):
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: Tensor, expert: Tensor, gate: Tensor, token: Optional[Tensor] = None) -> Tensor:
        r"""$y_t = \sum_{s: t_s = t} g_s \operatorname{FFN}_{e_s}(x_t)$ for `x` `(t, D)` and assignments `(S,)`.

        `token=None`: the assignments are each token's $k$ choices in turn, $t_s = \lfloor s / k \rfloor$.
        """
        if not torch.is_grad_enabled():
            return self.infer(x, expert, gate, token)
        if token is None and self._gather_pays(x, expert):
            k = len(expert) // len(x)
            return self._gathered(x, expert.view(-1, k), gate.view(-1, k))
        order, counts = group_by_expert(expert, self.num_experts)
        ends = torch.cumsum(counts, 0, dtype=torch.int32)  # (E,)
        # The token of each row, expert by expert
        token = order // (len(expert) // max(1, len(x))) if token is None else token[order]  # (S,)
        # One choice of the multiply for both products, from plain numbers
        grouped = self.grouped_mm
        if grouped is None:
            needs_grad = x.requires_grad or self.w_in.requires_grad or self.w_out.requires_grad
            grouped = _grouped_mm_pays(x, (self.dim, self.width, self.hidden), needs_grad)
        # $X_s = x_{t_s}$ `(S, D)`, then $X W^{(e)}_1$ block by block
        h = grouped_linear(x.index_select(0, token), self.w_in, counts, grouped_mm=grouped, ends=ends)  # (S, width)
        if self.b_in is not None:
            h = h + self.b_in[expert[order]]
        h = self._activate(h, False)  # (S, H)
        if self.training:
            h = self.dropout(h)
        y = grouped_linear(h, self.w_out, counts, grouped_mm=grouped, ends=ends)  # (S, D)
        if self.b_out is not None:
            y = y + self.b_out[expert[order]]
        # $g_s \operatorname{FFN}_{e_s}(x_{t_s})$, summed into token $t_s$
        y = y * gate.index_select(0, order)[:, None].to(y.dtype)  # (S, D)
        return x.new_zeros(x.shape).index_add_(0, token, y)  # (t, D)

    #
    # ### Inference: the same steps, straight through
    #
    # Without gradients a layer of this size takes a few hundred microseconds on a CPU core, and
    # every Python layer around its dozen operators shows: the pass above calls a helper per step,
    # reads each weight through the module and decides the multiply anew.  `infer` is that pass
    # written straight through, with nothing recorded, so intermediate results are overwritten in
    # place (see `_activate`).  `forward` calls it whenever no gradient is recorded
    # (`torch.no_grad`, `torch.inference_mode`).  It also picks its way by plain sizes (the table
    # at the top; each way's measurements are with its code below): a step of a few tokens runs
    # every expert densely (`_dense`), one token runs its $k$ experts (`_one_token`), a handful of
    # assignments gathers its experts' weights (`_gathered`), and anything larger is grouped as
    # above.  Tests check each against the recorded pass.
    def infer(self, x: Tensor, expert: Tensor, gate: Tensor, token: Optional[Tensor] = None) -> Tensor:
        r"""`forward` without a graph: $y_t = \sum_{s: t_s = t} g_s \operatorname{FFN}_{e_s}(x_t)$, `x` `(t, D)`."""
        t, S, E, P = len(x), len(expert), self.num_experts, self.expert_numbers
        if E <= S and t * E * P <= self.dense_limit and x.dtype is not torch.float16:
            return self._dense(x, expert, gate, token)
        if token is None and t == 1 and x.device.type == "cpu":
            return self._one_token(x, expert, gate)
        if token is None and 0 < t and S * P <= self.gather_limit:
            return self._gathered(x, expert.view(t, -1), gate.view(t, -1))
        # 1. Sorted by expert; block $e$ ends after the last row of expert $e$
        sorted_expert, order = torch.sort(expert, stable=True)  # (S,)
        ends = torch.searchsorted(sorted_expert, self.expert_ids, right=True, out_int32=True)  # (E,)
        token = order // (S // t if t else 1) if token is None else token.index_select(0, order)  # (S,)
        g = gate.index_select(0, order)[:, None].to(x.dtype)  # (S, 1)
        grouped = self.grouped_mm
        if grouped is None:
            # Decided once per kind of input
            key = (x.dtype, x.device.type)
            grouped = self._grouped_choice.get(key)
            if grouped is None:
                grouped = self._grouped_choice[key] = _grouped_mm_pays(x, (self.dim, self.width, self.hidden), False)
        # 2. $X_s = x_{t_s}$ `(S, D)`; 3. $H = \phi(X W^{(e)}_1)$, $Y = H W^{(e)}_2$ block by block
        h = grouped_linear(x.index_select(0, token), self.w_in, None, grouped_mm=grouped, ends=ends)  # (S, width)
        if self.b_in is not None:
            h += self.b_in[sorted_expert]
        h = self._activate(h, True)  # (S, H)
        if self.training:
            h = self.dropout(h)
        y = grouped_linear(h, self.w_out, None, grouped_mm=grouped, ends=ends)  # (S, D)
        if self.b_out is not None:
            y += self.b_out[sorted_expert]
        # 4. $g_s Y_s$, added into row $t_s$
        return x.new_zeros(x.shape).index_add_(0, token, y.mul_(g))  # (t, D)

    def _activate(self, h: Tensor, in_place: bool) -> Tensor:
        r"""$\phi(h)$, or $\phi(h W_g) \odot h W_u$ on the two halves of a gated expert's `h`.

        `in_place`: no gradient is recorded, so the activation writes over the gate half of `h`
        (SiLU) and the product over the activation: two fewer `(S, H)` tensors written and read per
        pass (see "Speed on a CPU" above).
        """
        if not self.glu:
            return self.act(h)
        value, g = h[..., :self.hidden], h[..., self.hidden:]  # two views of `h`
        # $\phi(x W_g) \odot x W_u$
        if not in_place:
            return self.act(g) * value
        g = F.silu(g, inplace=True) if isinstance(self.act, nn.SiLU) else self.act(g)
        return g.mul_(value)

    #
    # ### One token: its experts' weights in place
    #
    # A decoding step of one sequence is one token and its $k$ experts: no sorting or grouping is
    # needed, only a loop over those $k$ experts (never over tokens) with the weights read where
    # they lie.  At width 128 this took 48 µs against 79 µs for the gathered weights below, which
    # copy 786 KB per step (the benchmark's layer, the router included, one thread).  Only on the
    # CPU: reading the expert numbers to the host would make a GPU step wait for its queue.
    def _one_token(self, x: Tensor, expert: Tensor, gate: Tensor) -> Tensor:
        r"""$y = \sum_{i < k} g_i \operatorname{FFN}_{e_i}(x)$ for one token `x` `(1, D)` and its `expert`, `gate` `(k,)`."""
        w_in, w_out = self.w_in, self.w_out
        y = x.new_zeros(x.shape)  # (1, D)
        for i, e in enumerate(expert.tolist()):
            h = torch.mm(x, w_in[e])  # (1, width)
            if self.b_in is not None:
                h += self.b_in[e]
            h = self._activate(h, True)  # (1, H)
            if self.training:
                h = self.dropout(h)
            g = gate[i:i + 1].to(x.dtype)  # (1,)
            if self.b_out is not None:
                y.add_(self.b_out[e] * g)
            # $y \mathrel{+}= (g_i h) W^{(e_i)}_2$
            y.addmm_(h.mul_(g), w_out[e])
        return y

    #
    # ### Small decoding steps: gather the weights instead of the tokens
    #
    # A decoding step of a few tokens at small sizes is a dozen tiny operations (sort, count, gather,
    # one product per expert, scatter back), each costing more in overhead than in arithmetic.  When
    # the assignments are few and the experts small, copying each assignment's expert weights,
    # $W^{(e_s)}$, and running one batched product is cheaper.  It is taken only without gradients and
    # while the copied weights stay under `gather_limit` numbers: 256K (1 MB in float32), about where
    # the copy starts to cost more than the operations it saves on a CPU (measured in the
    # [benchmark](../../experiments/benchmarks/moe.md): 2 experts of 98K numbers each, gathered, took
    # 0.10 ms against 0.14 ms grouped; 16 of 24K, 0.15 ms against 0.13 ms; a Mixtral expert has 176M).
    gather_limit = 1 << 18

    def _gather_pays(self, x: Tensor, expert: Tensor) -> bool:
        if torch.is_grad_enabled() and (x.requires_grad or self.w_in.requires_grad):
            return False
        return 0 < len(x) and len(expert) * self.expert_numbers <= self.gather_limit

    def _gathered(self, x: Tensor, expert: Tensor, gate: Tensor) -> Tensor:
        r"""$y_t = \sum_{i < k} g_{t,i} \operatorname{FFN}_{e_{t,i}}(x_t)$ with the weights gathered, `expert` `(t, k)`."""
        t, k = expert.shape
        # $x_t W^{(e_{t,i})}_1$ for the $k$ experts of each token: one product per assignment
        flat = expert.flatten()  # (t k,)
        xs = x[:, None, :].expand(t, k, self.dim).reshape(t * k, 1, self.dim)  # (t k, 1, D)
        # (`index_select` copies whole expert matrices; advanced indexing is several times slower here)
        h = torch.bmm(xs, self.w_in.index_select(0, flat))  # (t k, 1, 2H) or (t k, 1, H)
        if self.b_in is not None:
            h = h + self.b_in[flat, None]
        # Taken only where no graph is recorded through `h`: the activation may overwrite it
        h = self._activate(h, True)  # (t k, 1, H)
        y = torch.bmm(h, self.w_out.index_select(0, flat)).view(t, k, self.dim)  # (t, k, D)
        if self.b_out is not None:
            y = y + self.b_out[expert]
        # $\sum_i g_{t,i} y_{t,i}$
        return torch.bmm(gate[:, None, :].to(y.dtype), y).view(t, self.dim)  # (t, D)

    #
    # ### Steps of a few tokens: every expert on every token
    #
    # With at least as many assignments as experts, a step reads nearly every expert's weights
    # whichever way it runs (16 assignments over 8 experts miss on average 0.8 experts).  Then the
    # sort, the counts, the gathers and the scatter, a dozen small operators, cost more than the
    # arithmetic they save, and computing *every* expert on every token is faster: two batched
    # products over the experts, the token rows shared by all of them (an expanded view, no copy),
    # and the combination as one more batched product with the gate matrix $G$, zero where a token
    # did not choose an expert:
    #
    # $$y_t = \sum_e G_{te} \operatorname{FFN}_e(x_t), \qquad G_{te} = \sum_{s: t_s = t, e_s = e} g_s.$$
    #
    # It does $E / k$ times the multiply-adds, $t E P$ for experts of $P$ numbers, so it is taken
    # only while they stay under `dense_limit`, $2^{22}$ (about 0.06 ms of products on one CPU
    # core).  On the benchmark's Mixtral layers, the whole block, one thread, CPU time, the layer
    # with the dense path against the same layer without it: 8 tokens at width 64 (1.6M
    # multiply-adds) 91 µs against 140 µs; 4 tokens at width 128 (3.1M) 272 against 302; at 6.3M
    # (8 tokens at width 128, 32 at width 64) the two were within 4% either way (316/324,
    # 205/195 µs), and beyond that the grouped path is as fast or faster.
    # The results equal the grouped path's within float32 rounding (the $k$ products are added in
    # a different order).  One thing the grouped path never meets: an expert that overflows to
    # infinity on a token that did not choose it would give $0 \cdot \infty$, not a number.  In
    # float32 and bfloat16 that takes values beyond $3 \cdot 10^{38}$; in float16 it takes 65504,
    # so float16 never runs densely (a test makes an unchosen expert overflow).
    dense_limit = 1 << 22

    def _dense(self, x: Tensor, expert: Tensor, gate: Tensor, token: Optional[Tensor]) -> Tensor:
        r"""$y_t = \sum_e G_{te} \operatorname{FFN}_e(x_t)$: every expert on every token, weighed by the gates."""
        t, E = len(x), self.num_experts
        # $G_{te}$ `(t, E)`: each assignment's gate in its token's row, its expert's column
        G = x.new_zeros(t, E)
        if token is None:
            G.scatter_add_(1, expert.view(t, -1), gate.view(t, -1).to(x.dtype))
        else:
            G.index_put_((token, expert), gate.to(x.dtype), accumulate=True)
        # $x_t W^{(e)}_1$ for all $e$ and $t$
        h = torch.bmm(x.expand(E, t, self.dim), self.w_in)  # (E, t, width)
        if self.b_in is not None:
            h += self.b_in[:, None]
        h = self._activate(h, True)  # (E, t, H)
        if self.training:
            h = self.dropout(h)
        y = torch.bmm(h, self.w_out)  # (E, t, D)
        if self.b_out is not None:
            y += self.b_out[:, None]
        # $\sum_e G_{te} y_{et}$: one `(1, E)` by `(E, D)` product per token
        return torch.bmm(G[:, None, :], y.transpose(0, 1)).view(t, self.dim)  # (t, D)
