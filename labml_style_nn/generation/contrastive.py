r"""
# Contrastive decoding: prefer what the expert knows and the amateur does not

*Papers:* [Contrastive Decoding: Open-ended Text Generation as Optimization](https://arxiv.org/abs/2210.15097)
(Li et al., 2022); [Contrastive Decoding Improves Reasoning in Large Language Models](https://arxiv.org/abs/2309.09117)
(O'Brien and Lewis, 2023)

A small "amateur" model shares the large "expert"'s failure modes (repetition, generic and
incoherent continuations) but not its knowledge.  Scoring each candidate token by how much more the
expert likes it than the amateur does removes the shared failures; a plausibility cut keeps the
tokens the expert itself finds unlikely out of reach, since an amateur that is even more wrong
would otherwise promote them.  In O'Brien and Lewis' form, on the logits $s^{e}$ and $s^{a}$ of the
next token,

$$\operatorname{CD}(v) = \begin{cases} (1 + \beta)\, s^{e}_v - \beta\, s^{a}_v & \text{if } s^{e}_v \ge \log\alpha + \max_w s^{e}_w, \\
-\infty & \text{otherwise,} \end{cases}$$

with $\alpha = 0.1$ and $\beta = 0.5$ by default; greedy decoding takes the argmax, sampling draws from
$\operatorname{softmax}(\operatorname{CD} / T)$.  Where the amateur's logits are the same for every
token (it has no opinion), $\operatorname{CD}$ is the expert's logits scaled by $1 + \beta$ and
shifted, so the greedy choice is the expert's.

`generate(prompts, n, amateur_model=small, contrastive_decode_kwargs=dict(alpha=0.1, beta=0.5))`;
several amateurs (a tuple, with a tuple of keyword dicts) are applied one after the other.  As in
x-transformers, the logit filters (top-$k$, ...) are turned off, since the plausibility cut replaces
them.

Tests: `tests/generation/test_contrastive.py` (the formula, greedy equals the expert's choice under a
uniform amateur, a disagreeing amateur changes the choice).

## Differences from x-transformers

* The expert and the amateurs decode without a key/value cache here (each step reruns the
  sequence, which gives the same logits; each model's output layer runs on the last position
  only, [head positions](head_positions.md)); x-transformers keeps a cache for each.
* The amateurs' Transformer-XL memories and feedback memories are not carried; they must be
  `TransformerWrapper`s (or autoregressive wrappers of one) over the expert's vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .head_positions import last_logits


def contrastive_logits(expert: Tensor, amateur: Tensor, alpha: float = 0.1, beta: float = 0.5) -> Tensor:
    r"""$(1 + \beta) s^e - \beta s^a$ where $s^e \ge \log\alpha + \max s^e$, the most negative number elsewhere.

    >>> contrastive_logits(torch.tensor([2.0, 1.9, -5.0]), torch.tensor([3.0, 0.0, -9.0])).tolist()
    [1.5, 2.8499999046325684, -3.4028234663852886e+38]
    """
    cutoff = math.log(alpha) + expert.amax(dim=-1, keepdim=True)
    scores = (1 + beta) * expert - beta * amateur
    return scores.masked_fill(expert < cutoff, -torch.finfo(expert.dtype).max)


def check_amateurs(amateur_model, contrastive_decode_kwargs) -> tuple[tuple, tuple]:
    """The amateurs' networks and their keywords, as tuples of one length."""
    amateurs = amateur_model if isinstance(amateur_model, (tuple, list)) else (amateur_model,)
    options = contrastive_decode_kwargs if isinstance(contrastive_decode_kwargs, (tuple, list)) \
        else (contrastive_decode_kwargs,) * len(amateurs)
    if len(options) != len(amateurs):
        raise ValueError(f"contrastive_decode_kwargs: expected one dict per amateur_model ({len(amateurs)}), "
                         f"got {len(options)}")
    nets = tuple(getattr(a, "net", a) for a in amateurs)  # an AutoregressiveWrapper's network
    for net in nets:
        if not isinstance(net, nn.Module) or not hasattr(net, "num_tokens"):
            raise ValueError("amateur_model: expected a TransformerWrapper (or an AutoregressiveWrapper of one), "
                             f"got {type(net).__name__}")
    for o in options:
        if not isinstance(o, dict) or set(o) - {"alpha", "beta"}:
            raise ValueError(f"contrastive_decode_kwargs: expected dict(alpha=..., beta=...), got {o!r}")
    return nets, tuple(options)


class ContrastiveNetwork(nn.Module):
    """The expert's logits turned into contrastive scores against each amateur's; what `generate` decodes from."""

    def __init__(self, expert: nn.Module, amateurs: tuple, options: tuple):
        super().__init__()
        self.expert, self.amateurs, self.options = expert, nn.ModuleList(amateurs), options
        # What the decoding loop reads of its network.
        self.learned_positions = getattr(expert, "learned_positions", False)

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The contrastive scores `(b, n, V)` of every position."""
        return self._scores(lambda net: net(x, **kwargs))

    def last_logits(self, x: Tensor, keep: int, **kwargs: Any) -> Tensor:
        """The contrastive scores `(b, keep, V)` of the last `keep` positions, each model's output layer
        run on those alone ([head positions](head_positions.md)); what decoding reads."""
        return self._scores(lambda net: last_logits(net, x, keep, **kwargs))

    def _scores(self, logits_of: Callable[[nn.Module], Tensor]) -> Tensor:
        scores = logits_of(self.expert)  # (b, n, V)
        if scores.shape[-1] != self.expert.num_tokens:
            raise ValueError("amateur_model: contrastive decoding needs the expert's logits over its vocabulary")
        for amateur, options in zip(self.amateurs, self.options, strict=True):
            amateur_scores = logits_of(amateur)
            if amateur_scores.shape != scores.shape:
                raise ValueError(f"amateur_model: its logits {tuple(amateur_scores.shape)} differ in shape from the "
                                 f"expert's {tuple(scores.shape)} (the vocabularies must be the same)")
            scores = contrastive_logits(scores, amateur_scores, **options)
        return scores
