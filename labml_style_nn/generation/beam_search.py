r"""
# Beam search

Sampling picks one token at a time; greedy decoding picks the most likely one, which can lead into
a sequence that is unlikely as a whole.  Beam search keeps the $B$ most likely *prefixes* (beams)
and extends each by every token, keeping the $B$ best of the $B \cdot V$ candidates by their total
log-probability:

$$s(y_{\le t}) = \sum_{t' \le t} \log p(y_{t'} \mid y_{<t'}), \qquad
\text{beams}_{t} = \operatorname{top-}B\big\{\, s(y_{<t}) + \log p(v \mid y_{<t}) : y_{<t} \in \text{beams}_{t-1},\ v \in V \big\}$$

Stochastic beam search ([Kool et al., 2019](https://arxiv.org/abs/1903.06059)) draws the candidates
with the Gumbel top-$k$ trick instead of taking the largest: $\operatorname{top-}B(z / T + G)$ with
$G \sim \operatorname{Gumbel}(0, 1)$ samples $B$ tokens without replacement.

The key/value cache follows the beams: after each step its rows are gathered from their parent
beams (`select_rows` in [intermediates](intermediates.md)).  Only the last position's logits are
read, so the prompt pass (and, without a cache, every step) runs the output layer on that position
alone ([head positions](head_positions.md)).

**Differences from x-transformers.**  The same keywords and outputs (the best beam `(b, n)`, or with
`return_beams_and_scores=True` all beams `(B, b, n)` and their scores `(B, b)`); as there,
`eos_token` is not supported yet.

Shapes: `b` batch, `B` beams, `n` new tokens, `V` vocabulary.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .head_positions import last_logits
from .intermediates import select_rows
from .kv_cache import LayersCache


def gumbel_noise(t: Tensor) -> Tensor:
    r"""$-\log(-\log u)$, $u \sim U(0, 1)$."""
    u = torch.rand_like(t).clamp(1e-20, 1.0)
    return -(-u.log()).clamp(min=1e-20).log()


def random_key_mask(inp: Tensor, mask_prob: float, mask: Optional[Tensor]) -> Tensor:
    """Hide `mask_prob` of the keys of each row at random (never the first), on top of `mask` `(b, n)`."""
    b, n = inp.shape
    scores = torch.rand(b, n, device=inp.device)
    scores[:, 0] = -1.0  # the first token stays visible
    num_hidden = min(int(n * mask_prob), n - 1)
    keep = torch.ones(b, n, dtype=torch.bool, device=inp.device)
    if num_hidden:
        keep.scatter_(1, scores.topk(num_hidden, dim=-1).indices, False)
    return keep if mask is None else mask & keep


@torch.no_grad()
def beam_search(wrapper, prompts: Tensor, seq_len: int, *, beams: int, return_beams_and_scores: bool,
                eos_token: Optional[int], temperature: float, stochastic: bool, prompt_lens: Optional[Tensor],
                filter_fn, filter_kwargs: dict, cache_kv: bool, restrict_to_max_seq_len: bool, kwargs: dict):
    """Beam search around `wrapper.net` (see the page introduction)."""
    if eos_token is not None:
        raise ValueError("eos_token: beam search does not support an end-of-sequence token yet")
    if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
        raise ValueError(f"beams: expected a positive integer, got {beams!r}")
    net = wrapper.net
    squeeze = prompts.dim() == 1
    prompts = prompts[None] if squeeze else prompts
    b, n = prompts.shape
    starts = None
    if prompt_lens is not None:
        # Right-padded rows move right, behind left padding.
        aligned = prompts.new_full(prompts.shape, wrapper.pad_value)
        for row, length in enumerate(prompt_lens.tolist()):
            aligned[row, n - length:] = prompts[row, :length]
        prompts, starts = aligned, n - prompt_lens.to(prompts.device)
    total = n + seq_len
    cache = None
    if cache_kv and wrapper._cache_blocker(total) is None:
        cache = LayersCache(wrapper._stack(), b, total + wrapper._num_memory_tokens())
    was_training = net.training
    net.eval()
    try:
        out, scores = prompts, torch.zeros(b, device=prompts.device)
        for i in range(seq_len):
            first = i == 0
            mask = None if starts is None else \
                torch.arange(out.shape[1], device=out.device)[None] >= starts[:, None]  # (rows, t)
            pos = {} if starts is None else {"seq_start_pos": starts}
            if cache is not None:
                inp = out if first else out[:, -1:]
                logits = last_logits(net, inp, cache=cache, mask=mask if first else None, **pos, **kwargs)[:, -1]
            else:
                lo = max(0, out.shape[1] - wrapper.max_seq_len) \
                    if restrict_to_max_seq_len and wrapper._learned_positions() and wrapper.max_seq_len else 0
                if lo:
                    pos = {} if starts is None else {"seq_start_pos": (starts - lo).clamp(min=0)}
                logits = last_logits(net, out[:, lo:], mask=None if mask is None else mask[:, lo:], **pos,
                                     **kwargs)[:, -1]
            log_probs = logits.log_softmax(dim=-1)  # (rows, V)
            if stochastic and temperature > 0:
                # Gumbel top-k: $B$ draws without replacement.
                logits = filter_fn(logits, **filter_kwargs) / temperature + gumbel_noise(logits)
            samples = logits.topk(beams, dim=-1).indices  # (rows, B)
            # $s(y_{<t}) + \log p(v \mid y_{<t})$ for each kept candidate
            cand = scores[:, None] + log_probs.gather(-1, samples)  # (rows, B)
            out = torch.cat((out.repeat_interleave(beams, dim=0), samples.reshape(-1, 1)), dim=1)
            if first:
                rows = torch.arange(b, device=out.device).repeat_interleave(beams)
                if cache is not None:
                    select_rows(cache, rows)
                if starts is not None:
                    starts = starts[rows]
            cand = cand.reshape(b, -1)  # (b, parents * B)
            if cand.shape[1] > beams:
                cand, order = cand.sort(dim=-1, descending=True)
                cand = cand[:, :beams]
                # Candidate $c$ of batch row $r$ is row $r \cdot (\text{parents} \cdot B) + c$ of `out`.
                picked = (order[:, :beams] + torch.arange(b, device=out.device)[:, None] * order.shape[1]).reshape(-1)
                out = out[picked]
                parents = picked // beams
                if cache is not None:
                    select_rows(cache, parents)
                if starts is not None:
                    starts = starts[parents]
            scores = cand.reshape(-1)
    finally:
        net.train(was_training)
    out = out[:, n:].reshape(b, beams, -1)  # (b, B, n)
    if squeeze:
        out, scores = out[0], scores.reshape(1, beams)[0]
    if not return_beams_and_scores:
        return out[..., 0, :]
    if squeeze:
        return out, scores
    return out.transpose(0, 1), scores.reshape(b, beams).t()  # (B, b, n), (B, b)
