r"""
# The looped language model: one stack, run several times, with a learned exit

*Paper:* [Scaling Latent Reasoning via Looped Language Models](https://arxiv.org/abs/2510.25741) (Zhu et al., 2025)

A looped model buys depth by reuse, running the same stack several times on its own output.  The
stack $f$ runs $T$ times,

$$h^{(0)} = e, \qquad h^{(t)} = f\big(h^{(t-1)}\big), \quad t = 1 \dots T,$$

with every loop differentiated (unlike [recycling](recycling.md), which trains only the last pass
and feeds a projection of the output back beside the embeddings).  After each loop an *exit gate*
$\lambda_t = \sigma(w^\top h^{(t)})$ (one linear map, no bias) gives, per token, the probability of
stopping there given that the model got that far, so the probability of exiting at loop $t$ is

$$p(t) = \lambda_t \prod_{s < t} (1 - \lambda_s), \qquad \text{the last loop taking what is left.}$$

**Training.**  Every loop predicts the next token with the shared head, $L^{(t)}$ its cross-entropy.
The loss weighs the loops by the (stop-gradient) exit distribution, and the gate learns from how
much the next loop helps: it should exit where one more loop lowers the loss by less than a
threshold $\tau$,

$$\mathcal L = \frac1T \sum_t \operatorname{sg}\big(p(t)\big) L^{(t)}
 + w\, \operatorname{BCE}\Big(\lambda_t,\ \sigma\big(k\,(L^{(t+1)} - L^{(t)} + \tau)\big)\Big),$$

averaged over the real targets (the BCE over the loops $t < T$ too), with slope $k$ (`looped_loss_slope`, 50), $\tau$
(`looped_loss_threshold_exit`, 0.05) and $w$ (`looped_exit_loss_weight`, 1), keywords of the
[autoregressive wrapper](../generation/autoregressive.md).

**Inference.**  With `looped_inference=True` (what `generate` passes) the model stops looping once
the cumulative exit probability of the last token reaches `looped_exit_prob_threshold` (0.9), or
after `max_looped_steps`; `looped_steps=t` runs exactly $t$ loops instead.

`TransformerWrapper(looped=True, max_looped_steps=4, attn_layers=Decoder(..., pre_and_post_norm=True))`
turns it on (the stack must normalise both branch inputs and residual sums, so that the stream keeps
its scale from loop to loop).  The forward keywords: `looped_steps`, `max_looped_steps` (overrides
the constructor's), `looped_pred_all_logits` (default: while training) fills
`intermediates.all_pred_logits`, and `intermediates.exit_logits` holds the gate's logits of each loop,
`intermediates.exit_indices` the loop each call stopped at.

Tests: `tests/wrapping/test_looped.py` (weight-copied parity with x-transformers for the logits of
every loop, the gate and the training loss; the early exit; the refusals).

Shapes: `b` batch, `n` tokens, `D` model width, `T` loops, `V` vocabulary.

## Differences from the paper

* Ouro trains the exit distribution with an entropy regulariser in a first stage and the gate from
  the loss improvement in a second; here, as in x-transformers, only the second (the gate's target
  above), with the loops weighted by the current exit distribution.

## Differences from x-transformers

* A key/value cache is not used: x-transformers decodes each new token's loops against the earlier
  tokens' keys and values of their own last loop (and the prompt's of the same loop), an
  approximation of the looped model; here generation reruns the sequence, so each token's loops are
  exactly those the training pass computes.  `cache=` with `looped=True` is a `ValueError`, and
  `generate` decodes without one.  With the same number of loops the outputs equal x-transformers'
  uncached ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def exit_probabilities(exit_logits: Tensor) -> Tensor:
    r"""$p(t) = \lambda_t \prod_{s<t}(1-\lambda_s)$ along axis 1, the last loop taking the rest.

    >>> exit_probabilities(torch.zeros(1, 3, 1)).flatten().tolist()
    [0.5, 0.25, 0.25]
    """
    log_exit, log_continue = F.logsigmoid(exit_logits), F.logsigmoid(-exit_logits)
    # $\sum_{s<t} \log(1 - \lambda_s)$
    before = F.pad(log_continue[:, :-1], (0, 0) * (exit_logits.dim() - 2) + (1, 0)).cumsum(dim=1)
    log_exit = torch.cat((log_exit[:, :-1], torch.zeros_like(log_exit[:, -1:])), dim=1)  # the last loop exits
    return (log_exit + before).exp()


def run_loops(run: Callable[[Tensor], tuple[Tensor, Any]], h: Tensor, exit_gate: Callable[[Tensor], Tensor],
              head: Callable[[Tensor], Tensor], *, steps: int, fixed: bool, pred_all: bool, inference: bool,
              threshold: float) -> tuple[Tensor, Any, list[Tensor], list[Tensor], int]:
    r"""$h^{(t)} = f(h^{(t-1)})$ up to `steps` times; returns the last $h$, the last pass's intermediates, the
    gate's logits and the head's logits of each loop, and the index of the last loop run."""
    exit_logits, all_logits = [], []
    cum_exit, cum_continue = 0.0, 0.0
    out, inter, last = h, None, 0
    for t in range(steps):
        out, inter = run(out)
        # Early exit is decided on the last token, when neither the count is fixed nor this is the last loop.
        decide = inference and not fixed and t < steps - 1
        stop = False
        if not inference or decide:
            logit = exit_gate(out)  # (b, n, 1): $w^\top h^{(t)}$
            exit_logits.append(logit)
            if decide:
                # $\sum_{s \le t} p(s)$ for the last token
                cum_exit = cum_exit + (cum_continue + F.logsigmoid(logit[:, -1])).exp()
                cum_continue = cum_continue + F.logsigmoid(-logit[:, -1])
                stop = bool((cum_exit >= threshold).all())
        if pred_all:
            all_logits.append(head(out))
        last = t
        if stop:
            break
    return out, inter, exit_logits, all_logits, last


def looped_loss(exit_logits: Tensor, pred_logits: Tensor, target: Tensor, ignore_index: int, *, slope: float,
                threshold: float, exit_weight: float, log_probs: bool = False) -> Tensor:
    r"""The training loss above, from the gate's logits `(b, T, n, 1)`, every loop's logits `(b, T, n, V)` and
    the targets `(b, n)`."""
    b, loops, n, _ = pred_logits.shape
    targets = target[:, None].expand(b, loops, n)  # (b, T, n)
    loss_fn = F.nll_loss if log_probs else F.cross_entropy
    # $L^{(t)}$ per token and loop
    losses = loss_fn(pred_logits.flatten(0, 2), targets.flatten(), ignore_index=ignore_index,
                     reduction="none").view(b, loops, n)
    exit_logits = exit_logits[..., 0]  # (b, T, n)
    with torch.no_grad():
        # $\sigma(k (L^{(t+1)} - L^{(t)} + \tau))$: exit where one more loop gains less than $\tau$
        exit_target = torch.sigmoid(slope * (losses[:, 1:] - losses[:, :-1] + threshold))
    real = targets != ignore_index
    exit_loss = F.binary_cross_entropy_with_logits(exit_logits[:, :-1], exit_target, reduction="none")
    exit_loss = exit_loss[real[:, 1:]].mean()
    # $\sum_t \operatorname{sg}(p(t)) L^{(t)}$, averaged over the real targets
    weighted = losses * exit_probabilities(exit_logits.detach())
    return weighted[real].sum() / real.sum().clamp(min=1) + exit_loss * exit_weight


def check_looped(looped: bool, recycling: bool, attn_layers, max_looped_steps: int) -> None:
    """The constructor's checks."""
    if looped and recycling:
        raise ValueError("looped and recycling cannot be combined: both rerun the stack on its own output")
    if looped and not attn_layers.options.pre_and_post_norm:
        raise ValueError("looped needs pre_and_post_norm=True on the stack (attn_layers): the stream must keep its "
                         "scale from loop to loop")
    if isinstance(max_looped_steps, bool) or not isinstance(max_looped_steps, int) or max_looped_steps < 1:
        raise ValueError(f"max_looped_steps: expected a positive integer, got {max_looped_steps!r}")


def loop_count(looped_steps: Optional[int], max_looped_steps: Optional[int], default: int) -> tuple[int, bool]:
    """How many loops to run at most, and whether that number is fixed (`looped_steps=`)."""
    steps = looped_steps if looped_steps is not None else max_looped_steps if max_looped_steps is not None \
        else default
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        name = "looped_steps" if looped_steps is not None else "max_looped_steps"
        raise ValueError(f"{name}: expected a positive integer, got {steps!r}")
    return steps, looped_steps is not None
