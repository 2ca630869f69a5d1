r"""
# The Belief State Transformer

*Paper:* [The Belief State Transformer](https://arxiv.org/abs/2410.23506) (Hu et al., 2024)

A next-token predictor only has to be good at the next token; nothing forces its state to hold
what the rest of the sequence needs.  The Belief State Transformer pairs a forward decoder, which
reads a prefix $x_{\le i}$ into $f_i$, with a backward decoder, which reads a suffix $x_{\ge j}$
from right to left into $b_j$, and trains one head on every pair with at least one token between
them to predict *both* the token after the prefix and the token before the suffix:

$$\mathcal{L} = \frac{1}{|P|} \sum_{(i, j) \in P}
\Big[-\log p_\theta(x_{i+1} \mid f_i, b_j) - \log p_\theta(x_{j-1} \mid f_i, b_j)\Big],
\qquad P = \{(i, j) : j - i \ge 2\}$$

The paper proves that, at the optimum, $f_i$ is a *belief state*: it holds all the information the
prefix gives about every possible future.  A learned suffix token starts the backward decoder, so
$b_n$ (the empty suffix) exists and the head can also predict plain next tokens; generation can then
aim at a goal: encode the wanted ending as $b$ and decode forward with $(f_i, b)$.

```python
forward = TransformerWrapper(num_tokens=256, max_seq_len=512, attn_layers=Decoder(dim=512, depth=6, heads=8))
backward = TransformerWrapper(num_tokens=256, max_seq_len=512, attn_layers=Decoder(dim=512, depth=6, heads=8))
model = BeliefStateWrapper(forward_decoder=forward, backward_decoder=backward)
loss = model(seq)                                                     # seq (b, n), a scalar
out = model.generate_with_suffix_cond(seq[:, :4], 16, suffix=goal)    # (b, 16)
```

Without `backward_decoder` one network reads both ways (the suffix token tells it which).
`pred_distance=True` adds a head that predicts $j - i$ from $(f_i, b_j)$; `cond_on_distance=True`
scales the pair's features by a learned function of $j - i$ on a random share of the batches;
`train_frac_forward_backward_pairs` trains on a random subset of the pairs.

**Differences from the paper.**  The paper's head is used as in x-transformers: an MLP on the
concatenation $[f_i; b_j]$ with $2V$ outputs.

**Differences from x-transformers.**  With `lens`, x-transformers 2.31.10 flips the backward
decoder's outputs over the real tokens only, so $b_j$ there reads $x_{\ge j+1}$ and the pair skips a
token (lens equal to the full length give another loss than no lens); here $b_j$ always reads
$x_{j..\text{len}-1}$, and pairs whose suffix starts beyond the length are left out.  x-transformers
applies `cond_on_distance` after the text head and then skips the distance head, so it changes no
loss; here it scales the head's input.  Its `loss_weight_by_fb_indices` acts only when
`backward_ar_loss_weight != 1`; here it always acts, the weighted loss is the weighted mean over the
kept labels and the distance loss is added once.  Without `lens` and `cond_on_distance` the loss
(with `pred_distance`, or with `backward_ar_loss_weight` but no distance head), its gradients and
greedy goal-conditioned generation equal x-transformers' with the same weights (a test checks it).

Shapes: `b` batch, `n` tokens, `P` pairs, `D` width, `V` vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation.sampling import min_p, resolve_filter
from .nonautoregressive import int_attr


def pair_indices(n: int, device=None) -> Tensor:
    r"""The pairs $(i, j)$, $0 \le i < n$, $1 \le j \le n$, $j - i \ge 2$, prefix-major: `(P, 2)`.

    `pair_indices(3).tolist()` is `[[0, 2], [0, 3], [1, 3]]`."""
    pos = torch.arange(n, device=device)
    pairs = torch.cartesian_prod(pos, pos + 1)
    return pairs[pairs[:, 1] - pairs[:, 0] >= 2]


def reverse_rows(x: Tensor, lens: Optional[Tensor]) -> Tensor:
    """Each row's first `lens` tokens reversed, the rest left in place: `(b, n)`."""
    if lens is None:
        return x.flip(1)
    pos = torch.arange(x.shape[1], device=x.device)
    index = torch.where(pos < lens[:, None], lens[:, None] - 1 - pos, pos)
    return x.gather(1, index)


class BeliefStateWrapper(nn.Module):
    """The belief-state loss over a forward and a backward `TransformerWrapper`, and goal-conditioned generation."""

    loss_weights: Tensor  # (2,): the forward and the backward side's weight

    def __init__(self, forward_decoder: nn.Module, backward_decoder: Optional[nn.Module] = None,
                 train_frac_forward_backward_pairs: float = 1.0, text_head: Optional[nn.Module] = None,
                 backward_ar_loss_weight: float = 1.0, pred_distance: bool = False,
                 pred_distance_loss_weight: float = 1.0, cond_on_distance: bool = False,
                 cond_on_distance_prob: float = 0.5, max_pred_distance: Optional[int] = None):
        super().__init__()
        backward_decoder = forward_decoder if backward_decoder is None else backward_decoder
        dim, num_tokens = int_attr(forward_decoder, "emb_dim"), int_attr(forward_decoder, "num_tokens")
        if dim != int_attr(backward_decoder, "emb_dim") or num_tokens != int_attr(backward_decoder, "num_tokens"):
            raise ValueError("forward_decoder and backward_decoder: expected the same emb_dim and num_tokens")
        if not 0 < train_frac_forward_backward_pairs <= 1:
            raise ValueError(f"train_frac_forward_backward_pairs: expected a fraction in (0, 1], "
                             f"got {train_frac_forward_backward_pairs!r}")
        if not 0 < cond_on_distance_prob < 1:
            raise ValueError(f"cond_on_distance_prob: expected a probability in (0, 1), got {cond_on_distance_prob!r}")
        self.num_tokens = num_tokens
        self.forward_decoder, self.backward_decoder = forward_decoder, backward_decoder
        self.max_seq_len = int_attr(forward_decoder, "max_seq_len")
        # The token that starts every suffix, so the empty suffix has a state $b_n$.
        self.suffix_token = nn.Parameter(torch.randn(dim) * 0.02)
        # $p_\theta(x_{i+1}, x_{j-1} \mid f_i, b_j)$: next-token and previous-token logits side by side.
        self.text_head: nn.Module = text_head if text_head is not None else nn.Sequential(
            nn.Linear(dim * 2, dim), nn.LeakyReLU(), nn.Linear(dim, self.num_tokens * 2))
        self.max_pred_distance: int = max_pred_distance or self.max_seq_len
        self.to_distance_logits = nn.Sequential(
            nn.Linear(dim * 2, dim), nn.LeakyReLU(), nn.Linear(dim, self.max_pred_distance)) if pred_distance else None
        self.pred_distance_loss_weight = pred_distance_loss_weight
        self.cond_on_distance, self.cond_on_distance_prob = cond_on_distance, cond_on_distance_prob
        self.to_distance_cond = nn.Sequential(
            nn.Linear(1, dim), nn.LeakyReLU(), nn.Linear(dim, dim * 2)) if cond_on_distance else None
        self.train_frac_fb_pairs = train_frac_forward_backward_pairs
        self.backward_ar_loss_weight = backward_ar_loss_weight
        self.register_buffer("loss_weights", torch.tensor([1.0, backward_ar_loss_weight]))

    def _suffix_states(self, seq: Tensor, lens: Optional[Tensor]) -> Tensor:
        r"""$b_j$ for $j = 0 \dots n$ `(b, n + 1, D)`: $b_j$ reads $x_{j..\text{len}-1}$ right to left."""
        b, n = seq.shape
        start = self.suffix_token.expand(b, 1, -1)
        states = self.backward_decoder(reverse_rows(seq, lens), prepend_embeds=start, return_embeddings=True)
        # output $k$ has read the last $k$ tokens: $b_j$ is output $\text{len} - j$
        length = torch.full((b,), n, device=seq.device) if lens is None else lens
        pos = torch.arange(n + 1, device=seq.device)
        index = torch.where(pos <= length[:, None], length[:, None] - pos, pos)  # (b, n + 1)
        return states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))

    def forward(self, seq: Tensor, lens: Optional[Tensor] = None,
                loss_weight_by_fb_indices: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """The mean belief-state loss of token ids `seq` `(b, n)` (`lens` `(b,)`: real tokens per row)."""
        if not torch.is_tensor(seq) or seq.dim() != 2 or seq.is_floating_point():
            raise ValueError("seq: expected token ids of shape (batch, seq_len)")
        b, n = seq.shape
        device = seq.device
        if lens is not None and (lens.shape != (b,) or lens.min() < 0 or lens.max() > n):
            raise ValueError(f"lens: expected one length in [0, {n}] per row, shape ({b},)")
        prefix_states = self.forward_decoder(seq, return_embeddings=True)  # $f_i$: (b, n, D)
        suffix_states = self._suffix_states(seq, lens)  # $b_j$: (b, n + 1, D)
        pairs = pair_indices(n, device)  # (P, 2)
        if self.train_frac_fb_pairs < 1:
            keep = max(int(pairs.shape[0] * self.train_frac_fb_pairs), 1)
            pairs = pairs[torch.randperm(pairs.shape[0], device=device)[:keep]]
        fi, bj = pairs.unbind(-1)
        # the token after the prefix, $x_{i+1}$, and the one before the suffix, $x_{j-1}$
        labels = torch.stack((seq[:, fi + 1], seq[:, bj - 1]), dim=1)  # (b, 2, P)
        valid = torch.ones_like(labels, dtype=torch.bool) if lens is None else \
            (bj[None, None] <= lens[:, None, None]).expand_as(labels)
        features = torch.cat((prefix_states[:, fi], suffix_states[:, bj]), dim=-1)  # $[f_i; b_j]$: (b, P, 2D)
        distance = (bj - fi).float()
        conditioned = self.cond_on_distance and random.random() < self.cond_on_distance_prob
        if conditioned:
            assert self.to_distance_cond is not None
            features = features * self.to_distance_cond(distance[:, None])
        logits = self.text_head(features).unflatten(-1, (2, self.num_tokens))  # (b, P, 2, V)
        ce = F.cross_entropy(logits.permute(0, 3, 2, 1), labels, reduction="none")  # (b, 2, P)
        weight = self.loss_weights[None, :, None].expand_as(ce)
        if loss_weight_by_fb_indices is not None:
            w = loss_weight_by_fb_indices(pairs)  # (P,) or (P, 2)
            if w.shape not in ((pairs.shape[0],), (pairs.shape[0], 2)):
                raise ValueError(f"loss_weight_by_fb_indices: expected weights of shape ({pairs.shape[0]},) "
                                 f"or ({pairs.shape[0]}, 2), got {tuple(w.shape)}")
            weight = weight * (w[None, None] if w.dim() == 1 else w.t()[None])
        loss = (ce * weight)[valid].sum() / valid.sum().clamp(min=1)
        if self.to_distance_logits is not None and not conditioned:
            # $j - i$, the steps from the prefix to the suffix
            target = (bj - fi).clamp(max=self.max_pred_distance - 1).expand(b, -1)
            dist_ce = F.cross_entropy(self.to_distance_logits(features).transpose(1, 2), target, reduction="none")
            keep = valid[:, 0]
            loss = loss + dist_ce[keep].mean() * self.pred_distance_loss_weight
        return loss

    @torch.no_grad()
    def generate_with_suffix_cond(self, prompts: Tensor, seq_len: int, temperature: float = 1.25,
                                  cache_kv: bool = False, suffix: Optional[Tensor] = None,
                                  filter_logits_fn: Union[Callable, str] = min_p,
                                  filter_kwargs: Optional[dict] = None, decode_backwards: bool = False,
                                  **kwargs) -> Tensor:
        """`seq_len` tokens after `prompts` `(b, t)` or `(t,)`, aiming at `suffix` (the goal) when given."""
        if not torch.is_tensor(prompts) or prompts.dim() not in (1, 2):
            raise ValueError("prompts: expected token ids of shape (batch, t) or (t,)")
        filter_fn = resolve_filter(filter_logits_fn)
        filter_kwargs = dict(min_p=0.1) if filter_kwargs is None else filter_kwargs
        one = prompts.dim() == 1
        out = prompts[None] if one else prompts
        b, t = out.shape
        was_training = self.training
        self.eval()
        start = self.suffix_token.expand(b, 1, -1)
        decoder = self.forward_decoder
        if decode_backwards:
            # right to left, with a random token standing in for the prefix (as x-transformers)
            out, decoder = out.flip(1), self.backward_decoder
            other = self.forward_decoder(torch.randint(0, self.num_tokens, (b, 1), device=out.device),
                                         return_embeddings=True)
        else:
            if suffix is not None:
                suffix = (suffix.expand(b, -1) if suffix.dim() == 1 else suffix).flip(1)
            # $b$ of the goal: the backward decoder's last state
            other = self.backward_decoder(suffix, prepend_embeds=start, return_embeddings=True)[:, -1:]
        cache = None
        for _ in range(seq_len):
            states, new_cache = decoder(out, prepend_embeds=start if decode_backwards else None,
                                        return_intermediates=True, return_embeddings=True, cache=cache, **kwargs)
            last = states[:, -1:]
            features = torch.cat((other, last) if decode_backwards else (last, other), dim=-1)
            if cache_kv:
                cache = new_cache
            logits = self.text_head(features).unflatten(-1, (2, self.num_tokens))[:, -1, int(decode_backwards)]
            if temperature == 0:
                sample = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = (filter_fn(logits, **filter_kwargs) / temperature).softmax(dim=-1)
                sample = torch.multinomial(probs, 1)
            out = torch.cat((out, sample), dim=-1)
        self.train(was_training)
        out = out[:, t:]
        return out[0] if one else out
