r"""
# RoPE scaling: position interpolation, NTK-aware bases and YaRN

*Paper:* [Extending Context Window of Large Language Models via Positional Interpolation](https://arxiv.org/abs/2306.15595) (Chen et al., 2023),
[NTK-Aware Scaled RoPE](https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/) (bloc97, 2023),
[YaRN: Efficient Context Window Extension of Large Language Models](https://arxiv.org/abs/2309.00071) (Peng et al., 2023)

A model trained with [rotary embeddings](rotary.md) on sequences of $L$ tokens has only ever seen
rotation angles $p\,\theta_k$ with $p < L$.  At $p \ge L$ the slow (low-frequency) pairs turn to
angles it never saw, and perplexity explodes a little past $L$.  The three methods here change the
angles so that a longer context $sL$ maps back into (or close to) the range the model knows.  Each
is a keyword of the stack and changes only the angles, so cached generation and Transformer-XL
memories keep working unchanged.

**Position interpolation** (`rotary_interpolation_factor=s`) divides every position by $s$:

$$p\,\theta_k \;\to\; \frac{p}{s}\,\theta_k ,$$

so positions $0 \dots sL$ land in $0 \dots L$.  Every pair is slowed down, the fast ones too, so
neighbouring tokens become harder to tell apart: it needs a short fine-tune at the longer length.

**NTK-aware scaling** (`rotary_base_rescale_factor=s`) raises the base instead of dividing the
positions, $b \to b\, s^{r/(r-2)}$:

$$\theta'_k = \left(b\, s^{\frac{r}{r-2}}\right)^{-2k/r} = \theta_k\, s^{-\frac{2k}{r-2}} .$$

The fastest pair ($k = 0$) is untouched, the slowest ($k = r/2 - 1$) is interpolated by exactly
$s$, and the pairs in between by a geometric blend: local order stays sharp while the long
wavelengths stretch.  It works to some extent without any fine-tune.

**YaRN** (`rotary_yarn_factor=s`, `rotary_yarn_original_max_len=L`) decides per pair, by how many
full turns it makes within the training length, $\rho_k = L \theta_k / 2\pi$ (the paper's $r(d)$).  A
pair that turns many times ($\rho_k > \beta$) has seen every angle already and is left alone; a pair
that does not complete a turn ($\rho_k < \alpha$) is interpolated like PI; in between a linear ramp
$\gamma$ blends the two:

$$\theta'_k = \big(1 - \gamma(\rho_k)\big)\frac{\theta_k}{s} + \gamma(\rho_k)\,\theta_k, \qquad
\gamma(\rho) = \operatorname{clamp}\!\left(\frac{\rho - \alpha}{\beta - \alpha}, 0, 1\right),$$

with $\alpha = 1$, $\beta = 32$.  Interpolation makes attention flatter (more keys at similar
angles), so YaRN also sharpens it: queries and keys are both multiplied by
$\sqrt{1/t} = 0.1 \ln s + 1$, the logits by $1/t$.

Shapes: `r` rotated dims, `n` positions.

## Differences from the papers

* The YaRN temperature multiplies the cosines and sines, i.e. the rotated features of $q$ and $k$.
  When the whole head is rotated (`rotary_emb_dim` equal to `attn_dim_head`, as in LLaMA) this is
  exactly the paper's $1/t$ on the logits; with partial rotation (this library's default rotates
  half the head) only the positional part of each score is sharpened.
* YaRN's ramp uses the paper's $\gamma(\rho)$ on each pair's number of turns directly; some
  implementations ramp linearly over the pair index between rounded boundaries instead, which
  gives slightly different frequencies in the blend region.
* Dynamic scaling (choosing $s$ from the current length at inference) is not implemented: $s$ is a
  fixed setting of the model.
## Evidence

* `tests/positional/test_pos_rope_scaling.py`: factor 1 gives exactly the unscaled angles for each
  method; interpolation at $s$ gives exactly the unscaled angles of positions $p / s$; NTK keeps the
  fastest pair and divides the slowest by $s$; YaRN leaves the pairs above $\beta$ turns, divides
  those below $\alpha$ by $s$ and blends between; a cached generation equals one pass and a
  Transformer-XL memory equals one joint pass with every scaling.
* [`experiments/long_context.py`](../../experiments/long_context.md): a character model trained on
  64 bytes (2.533 bpc) scores at 128 / 256 bytes without fine-tuning: no scaling 2.809 / 3.846,
  position interpolation 3.531 / 4.369, NTK 2.520 / 3.171, YaRN 3.196 / 3.822; after 60 steps at
  the longer length: 2.437 / 2.397, 2.511 / 2.742, 2.429 / 2.384, 2.462 / 2.495.  YaRN's defaults
  ($\beta = 32$ turns) are meant for training lengths in the thousands: at 64 even the fastest pair
  turns only about 10 times, so every pair is partly interpolated.

![bits per byte against evaluation length](../../docs/results/long_context_rope_scaling.png)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..keywords import Keyword, declare

KEYWORDS = declare(__name__, "stack",
    Keyword("rotary_interpolation_factor", 1.0, "position interpolation: divide positions by s >= 1", example=2.0),
    Keyword("rotary_base_rescale_factor", 1.0, "NTK-aware scaling: raise the rotary base for s times longer contexts",
            example=2.0),
    Keyword("rotary_yarn_factor", None, "YaRN: extend the context s times, per-frequency interpolation and a "
            "temperature (needs rotary_yarn_original_max_len)", type=float, example=2.0, xtransformers=False),
    Keyword("rotary_yarn_original_max_len", None, "YaRN: the training length it extends", type=int,
            xtransformers=False))


@dataclass(frozen=True)
class RopeScaling:
    """How rotary angles are stretched beyond the training length; all defaults leave them alone."""

    # Position interpolation: positions are divided by this factor $s \ge 1$.
    interpolation_factor: float = 1.0
    # NTK-aware scaling: the base becomes $b\, s^{r/(r-2)}$.
    base_rescale_factor: float = 1.0
    # YaRN: the factor $s$ and the training length $L$ it extends; `None` turns YaRN off.
    yarn_factor: Optional[float] = None
    yarn_original_max_len: Optional[int] = None
    # YaRN's ramp boundaries in turns per training length ($\alpha$, $\beta$ of the paper).
    yarn_beta_slow: float = 1.0
    yarn_beta_fast: float = 32.0

    def __post_init__(self):
        for name in ("interpolation_factor", "base_rescale_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
                raise ValueError(f"rotary_{name}: expected a number >= 1, got {value!r}")
        if self.yarn_factor is None:
            if self.yarn_original_max_len is not None:
                raise ValueError("rotary_yarn_original_max_len: only meaningful with rotary_yarn_factor")
            return
        s, n = self.yarn_factor, self.yarn_original_max_len
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s >= 1:
            raise ValueError(f"rotary_yarn_factor: expected a number >= 1, got {s!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"rotary_yarn_original_max_len: expected the training length (a positive integer) "
                             f"with rotary_yarn_factor, got {n!r}")
        if self.interpolation_factor != 1 or self.base_rescale_factor != 1:
            raise ValueError("rotary_yarn_factor: YaRN already interpolates; it cannot be combined with "
                             "rotary_interpolation_factor or rotary_base_rescale_factor")
        if not 0 < self.yarn_beta_slow < self.yarn_beta_fast:
            raise ValueError(f"yarn_beta_slow, yarn_beta_fast: expected 0 < slow < fast, got "
                             f"{self.yarn_beta_slow}, {self.yarn_beta_fast}")


def ntk_scaled_base(base: float, factor: float, dim: int) -> float:
    r"""The NTK-aware base $b\, s^{r/(r-2)}$ for `dim` $= r$ rotated features.

    >>> ntk_scaled_base(10000.0, 1.0, 8)   # factor 1 leaves the base alone
    10000.0
    """
    # With $r = 2$ there is a single pair, $k = 0$, which no base changes.
    return base * factor ** (dim / (dim - 2)) if dim > 2 else base


def yarn_ramp(turns: Tensor, beta_slow: float, beta_fast: float) -> Tensor:
    r"""$\gamma(\rho)$: 0 for pairs making fewer than $\alpha$ turns, 1 above $\beta$, linear between.

    >>> yarn_ramp(torch.tensor([0.5, 1.0, 16.5, 32.0, 100.0]), 1.0, 32.0).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    return ((turns - beta_slow) / (beta_fast - beta_slow)).clamp(0.0, 1.0)


def yarn_inv_freq(inv_freq: Tensor, factor: float, original_max_len: int,
                  beta_slow: float = 1.0, beta_fast: float = 32.0) -> Tensor:
    r"""YaRN's frequencies $\theta'_k = (1 - \gamma)\,\theta_k / s + \gamma\,\theta_k$."""
    # $\rho_k = L / \lambda_k$ turns within the training length, wavelength $\lambda_k = 2\pi / \theta_k$
    turns = original_max_len * inv_freq / (2 * math.pi)
    gamma = yarn_ramp(turns, beta_slow, beta_fast)
    # $(1 - \gamma)/s + \gamma = (1 + \gamma (s - 1)) / s$, which is exactly 1 at $s = 1$
    return inv_freq * (1 + gamma * (factor - 1)) / factor


def yarn_attention_factor(factor: float) -> float:
    r"""$\sqrt{1/t} = 0.1 \ln s + 1$, applied to queries and keys alike.

    >>> yarn_attention_factor(1.0)
    1.0
    """
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def scaled_frequencies(dim: int, base: float, scaling: RopeScaling) -> tuple[Tensor, float]:
    r"""The frequencies $\theta_k$ `(r/2,)` of `dim` rotated features and the magnitude of $\cos, \sin$."""
    if scaling.base_rescale_factor != 1:
        base = ntk_scaled_base(base, scaling.base_rescale_factor, dim)
    # $\theta_k = b^{-2k/r}$ for $k = 0 \dots r/2 - 1$
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if scaling.yarn_factor is None:
        return inv_freq, 1.0
    # `RopeScaling` refuses a YaRN factor without the training length
    assert scaling.yarn_original_max_len is not None
    inv_freq = yarn_inv_freq(inv_freq, scaling.yarn_factor, scaling.yarn_original_max_len,
                             scaling.yarn_beta_slow, scaling.yarn_beta_fast)
    return inv_freq, yarn_attention_factor(scaling.yarn_factor)
