r"""
# Rotary positional embeddings

*Paper:* [RoFormer: Enhanced Transformer with Rotary Position Embedding](https://arxiv.org/abs/2104.09864) (Su et al., 2021)

Rotary embeddings rotate each query and key by an angle proportional to its position, so that the
score between them depends only on how far apart they are.

Split the first $r$ features of a head into $r/2$ pairs and treat each pair as a point in the
plane.  At position $p$, rotate pair $k$ by the angle $p\,\theta_k$ with $\theta_k = 10000^{-2k/r}$,
$k = 0 \dots r/2 - 1$.  Write $R_p$ for all these rotations together (block-diagonal, one
$2 \times 2$ block per pair).  Every block is orthogonal and rotations compose by adding angles, so
$R_i^\top R_j = R_{j-i}$ and

$$\langle R_i q, R_j k \rangle = q^\top R_i^\top R_j k = \langle q, R_{j-i} k \rangle,$$

which depends on $j - i$ alone: the model sees relative positions although every token was rotated
by its absolute position.  No parameters are learned.

## The rotation of one pair, step by step

The code pairs feature $k$ with feature $k + r/2$ (see the differences below).  For one pair of a
query, $(q_1, q_2) = (q_k, q_{k + r/2})$, at position $i$ with $\phi = i\,\theta_k$:

$$\begin{aligned}
R(\phi) \begin{pmatrix} q_1 \\ q_2 \end{pmatrix}
&= \begin{pmatrix} \cos\phi & -\sin\phi \\ \sin\phi & \cos\phi \end{pmatrix}
   \begin{pmatrix} q_1 \\ q_2 \end{pmatrix}
 = \begin{pmatrix} q_1 \cos\phi - q_2 \sin\phi \\ q_1 \sin\phi + q_2 \cos\phi \end{pmatrix} \\
&= \begin{pmatrix} q_1 \\ q_2 \end{pmatrix} \cos\phi + \begin{pmatrix} -q_2 \\ q_1 \end{pmatrix} \sin\phi
 = q \cos\phi + \operatorname{rotate\_half}(q) \sin\phi,
\end{aligned}$$

the line `apply_rotary` computes for all pairs at once.  For the score, rotate the key's pair
$(k_1, k_2)$ by $\psi = j\,\theta_k$ and use $R(\phi)^\top = R(-\phi)$, $R(-\phi) R(\psi) = R(\psi - \phi)$:

$$\begin{aligned}
\big(R(\phi) q\big)^\top R(\psi) k &= q^\top R(\psi - \phi)\, k \\
&= (q_1 k_1 + q_2 k_2) \cos\big((j - i)\theta_k\big) + (q_2 k_1 - q_1 k_2) \sin\big((j - i)\theta_k\big).
\end{aligned}$$

The positions $i$ and $j$ appear only as $j - i$.  The score sums this over the $r/2$ pairs (plus the
unrotated features): each pair contributes its content terms modulated by a wave of frequency
$\theta_k$ in the distance.

## Worked numbers: a fast and a slow pair

With $r = 64$ the fastest pair ($k = 0$) turns by $\theta_0 = 1$ radian per token, the slowest
($k = 31$) by $\theta_{31} = 10000^{-62/64} \approx 1.33 \times 10^{-4}$:

| position $p$ | fast: $p\,\theta_0$ (rad) | $\cos p\,\theta_0$ | slow: $p\,\theta_{31}$ (rad) | $\cos p\,\theta_{31}$ |
|---|---|---|---|---|
| 0 | 0 | 1.000 | 0 | 1.000000 |
| 1 | 1 | 0.540 | 0.000133 | 1.000000 |
| 2 | 2 | -0.416 | 0.000267 | 1.000000 |
| 3 | 3 | -0.990 | 0.000400 | 1.000000 |
| 100 | 100 | 0.862 | 0.0133 | 0.999911 |
| 1000 | 1000 | 0.562 | 0.133 | 0.991122 |

The fast pair tells neighbours apart (its cosine changes sign within three tokens) but comes back
near the same angle every $2\pi \approx 6.28$ tokens, never exactly, since positions are integers
($p = 44$ lands 0.018 rad from $p = 0$, $p = 710$ only 0.00006 rad), so far-apart positions can look
almost alike to it; the slow pair hardly moves over a thousand tokens, so it carries the
coarse position.  Together they are a positional code, read relatively.

![Where three pairs land at nine positions](../../docs/figures/rotary_angles.png)

*Drawn by `python docs/figures/make_figures.py` from `RotaryEmbedding.angles`.*

Because each key is rotated by its own position when it is computed, keys kept in a cache stay
valid: the stack only has to give the new tokens the positions that follow them, $m \dots m + n - 1$
after $m$ cached tokens, and a cached pass equals one pass over the whole sequence.  With a
Transformer-XL memory the memory's keys are recomputed in each pass, so they get positions
$0 \dots m - 1$ and the segment $m \dots m + n - 1$: only the distances count, so a segment with its
memory gives what one pass over the memory and the segment gives.  That equals a pass over the
whole sequence only while the memory holds the whole prefix; once the prefix is longer than
`max_mem_len`, the oldest tokens are gone and the chunked pass sees a sliding window instead (tests
check both equalities: `tests/positional/test_pos_rope_scaling.py`, `tests/generation/`).

The stack computes the angles once per forward pass, `(2, j, r)`, and every self-attention layer
applies them to its queries (the last $n$ rows) and keys: the "transform of queries and keys"
extension point of [attention](../attention/extension_points.md).  [ALiBi](alibi.md) and
[T5's bias](t5_bias.md) use the other point, an additive bias on the scores;
[RoPE scaling](rope_scaling.md) stretches the angles for longer contexts.  The
[extrapolation experiment](../../docs/results.md#alibi-extrapolation) measures rotary against ALiBi:
best at the training length, worse past it.  Tests: `tests/positional/test_pos_rotary.py` (the
score depends only on the distance, the closed form, norms preserved).

Shapes: `b` batch, `h` heads, `n` tokens, `d` head dim, `r` rotated dims ($r \le d$).

## Differences from the paper

* We pair feature $k$ with feature $k + r/2$ (the "rotate half" layout) instead of neighbours
  $2k, 2k+1$.  It is the same rotation after a fixed permutation of the features, which the
  projections absorb, and it needs no strided indexing.  It is also the layout of Hugging Face's
  LLaMA (and Qwen2, Mistral): with `rotary_emb_dim` equal to the head width and `rotary_theta` the
  checkpoint's base, their weights load without permuting a feature.  x-transformers pairs
  neighbours; so that one seed builds the same model in both libraries, a new stack draws its query
  and key rows in x-transformers' pairing order ([initialisation](../models/initialisation.md)).
* Only the first $r$ features of each head are rotated (`rotary_emb_dim`, by default half the head,
  `dim_head // 2`, as in x-transformers 2.31.10, which has no minimum and only warns below 32 with
  `verbose=True`; so does this library); the rest carry content without position.  This partial
  rotation is common practice rather than part of the paper.  Before, this library rotated at least 32
  features (all of a narrower head): `rotary_emb_dim=32` gives that back.

## Evidence

* Measured: in distribution, rotary is the best position scheme of
  [`compare_variants.py`](../../experiments/compare_variants.py) (2.387 ± 0.025 bpc against
  2.879 ± 0.036 for learned absolute positions over three seeds, 250 steps;
  [results](../../docs/results.md#comparing-techniques)); trained on 64 bytes it does not extrapolate:
  2.835 bpc at 64 bytes, 3.363 at 256 ([results](../../docs/results.md#alibi-extrapolation)).
* Invariant: the score of a rotated query and key depends only on their distance,
  `test_score_depends_only_on_distance` in `tests/positional/test_pos_rotary.py`.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..keywords import Keyword, declare
from .rope_scaling import RopeScaling, scaled_frequencies

KEYWORDS = declare(__name__, "stack",
    Keyword("rotary_pos_emb", False, "rotary position embedding of queries and keys"),
    Keyword("rotary_emb_dim", None, "features per head that rotate (default: half of dim_head)",
            type=int, example=16),
    Keyword("rotary_theta", 10000.0, "rotary base b of the frequencies b^(-2k/r)", example=500000.0,
            xtransformers=False))


class RotaryEmbedding(nn.Module):
    r"""Computes the rotation angles of a set of positions, once per forward pass.

    `scaling` stretches the angles for contexts longer than the training length (position
    interpolation, NTK-aware base, YaRN: see [RoPE scaling](rope_scaling.md)).

    >>> RotaryEmbedding(4).angles(torch.tensor([0, 1])).shape   # cos and sin, 2 positions, r = 4
    torch.Size([2, 2, 4])
    """

    inv_freq: Tensor  # buffer `(r/2,)`

    def __init__(self, dim: int, base: float = 10000.0, *, scaling: Optional[RopeScaling] = None):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"rotary_emb_dim: expected an even integer >= 2, got {dim}")
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
            raise ValueError(f"rotary_theta: expected a positive number, got {base!r}")
        self.dim = dim
        self.scaling = scaling or RopeScaling()
        # $\theta_k = \text{base}^{-2k/r}$ for $k = 0 \dots r/2 - 1$ (changed by NTK or YaRN scaling), and
        # the magnitude YaRN gives to $\cos$ and $\sin$ (1 otherwise)
        inv_freq, self.magnitude = scaled_frequencies(dim, float(base), self.scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def angles(self, positions: Tensor, magnitude: bool = True) -> Tensor:
        r"""Stacked $(\cos, \sin)$ of $p\,\theta_k$: `(2, n, r)` for `positions` `(n,)`, `(2, b, n, r)` for `(b, n)`.

        `magnitude=False` leaves out YaRN's temperature: a pure rotation, for turning keys that
        were already rotated (attention sinks).
        """
        positions = positions.float()
        # Position interpolation: $p \to p / s$
        if self.scaling.interpolation_factor != 1:
            positions = positions / self.scaling.interpolation_factor
        # $p\,\theta_k$, repeated for both halves of the "rotate half" layout
        freqs = positions[..., None] * self.inv_freq  # (n, r/2) or (b, n, r/2)
        freqs = torch.cat((freqs, freqs), dim=-1)  # (n, r) or (b, n, r)
        out = torch.stack((freqs.cos(), freqs.sin()))
        # YaRN: $\sqrt{1/t}$ on queries and keys, so $1/t$ on the rotated part of each score
        return out * self.magnitude if magnitude and self.magnitude != 1 else out

    def forward(self, positions: Tensor) -> Tensor:
        """The same as `angles`: `(2, n, r)` (or `(2, b, n, r)`)."""
        return self.angles(positions)


def rotate_half(x: Tensor) -> Tensor:
    r"""Map feature pairs $(x_1, x_2) \mapsto (-x_2, x_1)$, a quarter turn of every pair.

    >>> rotate_half(torch.tensor([1., 2., 3., 4.])).tolist()   # pairs (1, 3) and (2, 4)
    [-3.0, -4.0, 1.0, 2.0]
    """
    x1, x2 = x.chunk(2, dim=-1)  # first and second members of each pair
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: Tensor, angles: Tensor) -> Tensor:
    r"""Rotate the first $r$ features of `t` `(b, h, n, d)` by `angles` `(2, n, r)`.

    $$R_p x = x \cos p\theta + \operatorname{rotate\_half}(x) \sin p\theta$$
    """
    if angles.dtype != t.dtype:
        angles = angles.to(t.dtype)
    cos, sin = angles.unbind(0)  # (n, r) each
    if not (torch.is_grad_enabled() or torch.compiler.is_compiling()
            or torch.jit.is_tracing()):  # pyright: ignore[reportPrivateImportUsage]
        # Inference (generation): the kernel's own forward, without the autograd function around it,
        # whose call costs more than the rotation of one token (the same numbers: no graph is kept anyway).
        # `torch.export`, and ONNX's exporter with it, counts as compiling; the older ONNX exporter traces.
        return _rotate_into(t, cos, sin)
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()  # pyright: ignore[reportPrivateImportUsage]
    if not (cos.requires_grad or sin.requires_grad or torch.compiler.is_compiling() or tracing):
        # The same rotation written straight into its output, with a backward of its own (below); always
        # this path, so that a pass recomputed with gradients (reversible layers) repeats the first exactly.
        return _Rotate.apply(t, cos, sin)
    r = cos.shape[-1]
    if r == t.shape[-1]:
        # Every feature carries position (the common case: one operator fewer per call, no slicing)
        return t * cos + rotate_half(t) * sin
    # Only the first $r$ features carry position.
    t_rot, t_pass = t[..., :r], t[..., r:]  # (b, h, n, r), (b, h, n, d - r)
    # $R_p x = x \cos p\theta + \operatorname{rotate\_half}(x) \sin p\theta$, pair $k$ is $(x_k, x_{k + r/2})$
    t_rot = t_rot * cos + rotate_half(t_rot) * sin
    return torch.cat((t_rot, t_pass), dim=-1) if t_pass.shape[-1] else t_rot


#
# ## The rotation as one kernel, for training
#
# Written with `rotate_half` and `cat`, autograd keeps a graph of slices, a negation and two
# concatenations, and its backward fills a zero tensor of the full size for each slice and adds
# them up.  A rotation's gradient is the rotation backwards, $\partial L / \partial x = R_p^\top g$,
# with $R(\phi)^\top = R(-\phi)$: the backward is the forward with the sines negated (each half of
# the output takes the *other* half's sines, which are the same numbers unless a variant scales the
# halves apart).  Both passes are one product over the whole head and two in-place updates:
# about 6.6 ms against 4.3 ms for the forward and backward of the rotary training step's queries
# `(8, 4, 256, 64)` with $r = 32$, laid out as the fused projection leaves them (one thread).  The
# composed form above stays the definition; it runs when the angles need a gradient, inside
# `torch.compile` (which fuses it anyway) and while tracing or exporting to ONNX.  Without gradients
# (generation) the kernel's forward is called directly: the autograd function's own call (binding
# its arguments, a context) cost more than rotating one token, about 10% of a decoding step of the
# [benchmark](../../experiments/benchmarks/hf_llama.md)'s LLaMA, for the same numbers.
def _rotate_into(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""$(x_1 \cos\phi - x_2 \sin\phi,\ x_2 \cos\phi + x_1 \sin\phi)$ for each pair, the rest unchanged."""
    r, d = cos.shape[-1], t.shape[-1]
    half = r // 2
    # $x \cos\phi$ over the whole head at once (the unrotated features times exactly 1): long
    # contiguous rows, where a product per half and a copy of the rest took about 20% longer.
    out = t * (torch.cat((cos, cos.new_ones(cos.shape[:-1] + (d - r,))), dim=-1) if d > r else cos)
    # ... then $\mp x_{2,1} \sin\phi$ added in place to each half of the pairs
    out[..., :half].addcmul_(t[..., half:r], sin[..., :half], value=-1)
    out[..., half:r].addcmul_(t[..., :half], sin[..., half:])
    return out


class _Rotate(torch.autograd.Function):
    """`apply_rotary` for angles without a gradient; its backward is the inverse rotation."""

    @staticmethod
    def forward(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # type: ignore[override]
        return _rotate_into(t, cos, sin)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(inputs[1], inputs[2])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        half = sin.shape[-1] // 2
        # $R^\top$: pair $(g_1, g_2) \to (g_1 \cos\phi + g_2 \sin\phi,\ g_2 \cos\phi - g_1 \sin\phi)$, i.e. the
        # forward with the sines' halves swapped and negated (differentiable again: a linear map of `grad`)
        sin_t = -torch.cat((sin[..., half:], sin[..., :half]), dim=-1)
        return _Rotate.apply(grad, cos, sin_t), None, None
