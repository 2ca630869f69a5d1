r"""
# Full-bandwidth transformer

*Paper:* [Full-bandwidth transformer](https://arxiv.org/abs/2608.08888) (Wang, Cai, Zhan, Dong, Fan,
de Rosa, Pearce and Langford, 2026)

A decoder passes only a token from one position to the next: everything its deep layers computed
about position $t - 1$ is squeezed through the sampled token before position $t$ starts.  The
full-bandwidth transformer hands the deep *latent* over as well: the output $h^{(o)}_{t-1}$ of a deep
block $o$ is fused into the input of a shallow block $i$ at the next position.  In training that is a
recurrence over positions, so the paper unrolls it in *temporal parallel passes*: pass $p$ reads the
latents of pass $p - 1$, shifted one position right, and after $P$ passes every position has seen
$P - 1$ steps of feedback, all positions computed at once.  The fusion is a gated cross transition
(eq. 4) of the latent and the stream:

$$x^{(i)}_t \leftarrow \operatorname{RMSNorm}\big(W_s \operatorname{RMSNorm}(h^{(o)}_{t-1}) \odot
\sigma(W_g \operatorname{RMSNorm}(x^{(i)}_t))\big), \qquad t \ge 1.$$

Each pass is scored by next-token cross-entropy (the feedback passes only on positions $t \ge 1$,
which received a latent); the loss is the first pass's plus `feedback_pass_weight` times the mean of
the others.  With `dynamic_rollout_loss_weight=True` feedback pass $p$ is weighted by
$\exp(-\lambda \sum_{q < p} \max(\mathcal{L}_q - \tau, 0))$: errors compound through the rollout, and
$\tau$ (about one nat) is the entropy no model removes.  Uniform noise of width
`jitter_noise_delta` ($\sigma = 0.02$ in the paper) on the latents in training keeps the transition
robust to the first pass's imprecision.  In generation the prompt gets the same passes, then each new
token receives the latent of the token before it, computed in the previous step: exact feedback.

```python
net = TransformerWrapper(num_tokens=256, max_seq_len=64, tie_embedding=True, post_emb_norm=True,
                         attn_layers=Decoder(dim=64, depth=4, heads=4, depth_scale_residual=True))
model = FullBandwidth(net, temporal_parallel_passes=2)
loss = model(seq)            # (b, n + 1) token ids -> scalar
out = model.generate(prompt, 8)
```

Routes are `recirc_pairs`, `(out_depth, in_depth)` pairs of blocks counted from 1 (an optional third
entry names the transition), or a shortcut: `"paper"` (the top block into the first, the default),
`"prev"`, `"top_and_prev"`, `"prev_with_self"`, `"self"`, `"full"`, `"dense"`.  The transitions are
`"glu"` (eq. 4), `"residual"`, `"gru"`, `"linear"` and `"residual_glu"`, or a module, or a function
of the width.  Into block 1 the latent is fused with the token embedding, before positions are
added ([block inputs](../models/block_inputs.md)).

The equation and section numbers are those x-transformers' implementation cites.

**Differences from x-transformers.**  None in meaning.  Its `return_loss_breakdown`,
`return_all_pass_logits` and `return_all` give a named tuple of the requested outputs, as here.

Shapes: `b` batch, `n` tokens, `D` model width, `V` vocabulary, `P` passes.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation.sampling import resolve_filter, top_k
from ..norms import RMSNorm

LossBreakdown = namedtuple("LossBreakdown", ["first_pass_loss", "feedback_pass_losses", "all_pass_losses"])


#
# ## Transitions: a latent and the stream in, the new stream out
class GLUCrossTransition(nn.Module):
    r"""$\operatorname{N}(W_s \operatorname{N}(h) \odot \sigma(W_g \operatorname{N}(x)))$ (eq. 4)."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_state, self.to_gate = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.latent_norm, self.stream_norm, self.norm = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)

    def forward(self, latents: Tensor, stream: Tensor) -> Tensor:
        state = self.to_state(self.latent_norm(latents))
        gate = self.to_gate(self.stream_norm(stream)).sigmoid()
        return self.norm(state * gate)


class ResidualTransition(nn.Module):
    r"""$\operatorname{N}(x + s\, W \operatorname{N}(h))$, the scale $s$ learned from 0.1."""

    def __init__(self, dim: int, scale_init: float = 0.1):
        super().__init__()
        self.proj, self.latent_norm = nn.Linear(dim, dim, bias=False), RMSNorm(dim)
        self.scale, self.norm = nn.Parameter(torch.tensor(scale_init)), RMSNorm(dim)

    def forward(self, latents: Tensor, stream: Tensor) -> Tensor:
        return self.norm(stream + self.proj(self.latent_norm(latents)) * self.scale)


class GRUGatingTransition(nn.Module):
    r"""A GRU-style update: $z = \sigma(W_z [\operatorname{N}(h); \operatorname{N}(x)] + b)$,
    $\operatorname{N}((1 - z) x + z \tanh(W_c [\cdot; \cdot]))$, the gate biased shut ($b = -1$)."""

    def __init__(self, dim: int):
        super().__init__()
        self.latent_norm, self.stream_norm, self.norm = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)
        self.gate, self.to_candidate = nn.Linear(dim * 2, dim), nn.Linear(dim * 2, dim, bias=False)
        nn.init.constant_(self.gate.bias, -1.0)

    def forward(self, latents: Tensor, stream: Tensor) -> Tensor:
        both = torch.cat((self.latent_norm(latents), self.stream_norm(stream)), dim=-1)  # (b, n, 2D)
        z = self.gate(both).sigmoid()
        return self.norm(stream.lerp(self.to_candidate(both).tanh(), z))


class LinearTransition(nn.Module):
    r"""$\operatorname{N}(W_s \operatorname{N}(h) + W_x \operatorname{N}(x))$."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_state, self.to_stream = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.latent_norm, self.stream_norm, self.norm = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)

    def forward(self, latents: Tensor, stream: Tensor) -> Tensor:
        return self.norm(self.to_state(self.latent_norm(latents)) + self.to_stream(self.stream_norm(stream)))


class ResidualGLUTransition(nn.Module):
    r"""$\operatorname{N}(x + s \cdot \operatorname{GLU}(h, x))$, eq. 4 added to the stream."""

    def __init__(self, dim: int, scale_init: float = 1.0):
        super().__init__()
        self.glu, self.scale, self.norm = GLUCrossTransition(dim), nn.Parameter(torch.tensor(scale_init)), RMSNorm(dim)

    def forward(self, latents: Tensor, stream: Tensor) -> Tensor:
        return self.norm(stream + self.glu(latents, stream) * self.scale)


TRANSITIONS: dict[str, Callable[[int], nn.Module]] = dict(
    glu=GLUCrossTransition, residual=ResidualTransition, gru=GRUGatingTransition, linear=LinearTransition,
    residual_glu=ResidualGLUTransition)


def resolve_transition(spec, dim: int) -> nn.Module:
    """A transition module: given, named in `TRANSITIONS`, or built by `spec(dim)`."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        if spec not in TRANSITIONS:
            raise ValueError(f"transition: unknown '{spec}', expected one of {sorted(TRANSITIONS)}")
        return TRANSITIONS[spec](dim)
    module = spec(dim) if callable(spec) else None
    if isinstance(module, nn.Module):
        return module
    raise ValueError(f"transition: expected a name, a module or a function of the width, got {spec!r}")


# `(out_depth, in_depth)` routes of a stack of `d` blocks, by name.
RECIRC_SHORTCUTS: dict[str, Callable[[int], tuple]] = dict(
    paper=lambda d: ((d, 1),),
    prev=lambda d: tuple((i, i - 1) for i in range(2, d + 1)),
    top_and_prev=lambda d: tuple(dict.fromkeys(((d, 1), *((i, i - 1) for i in range(2, d + 1))))),
    prev_with_self=lambda d: tuple((i, max(i - 1, 1)) for i in range(1, d + 1)),
    self=lambda d: tuple((i, i) for i in range(1, d + 1)),
    full=lambda d: tuple((i, 1) for i in range(1, d + 1)),
    dense=lambda d: tuple((o, i) for o in range(1, d + 1) for i in range(1, d + 1)),
)


def resolve_recirc_pairs(depth: int, recirc_pairs) -> tuple:
    """The routes: the paper's `((depth, 1),)` by default, a shortcut's, or those given.

    >>> resolve_recirc_pairs(3, "prev")
    ((2, 1), (3, 2))
    """
    if recirc_pairs is None:
        return ((depth, 1),)
    if isinstance(recirc_pairs, str):
        if recirc_pairs not in RECIRC_SHORTCUTS:
            raise ValueError(f"recirc_pairs: unknown shortcut '{recirc_pairs}', expected one of {sorted(RECIRC_SHORTCUTS)}")
        return RECIRC_SHORTCUTS[recirc_pairs](depth)
    return tuple(recirc_pairs)


def shift_and_fuse_latents(latents: Tensor, stream: Tensor, transition: nn.Module) -> Tensor:
    r"""$x_t \leftarrow T(h_{t-1}, x_t)$ for $t \ge 1$; position 0 has no latent before it."""
    if latents.shape[1] <= 1:
        return stream
    fused = transition(latents[:, :-1], stream[:, 1:])  # (b, n - 1, D)
    return torch.cat((stream[:, :1], fused), dim=1)


def fuse_last_latent(latents: Tensor, stream: Tensor, transition: nn.Module) -> Tensor:
    """In generation: the newest token's stream takes the latent of the token before it."""
    return torch.cat((stream[:, :-1], transition(latents[:, -1:], stream[:, -1:])), dim=1)


def dynamic_rollout_loss_weights(step_losses: Tensor, decay: float = 1.0, threshold: float = 1.0) -> Tensor:
    r"""$w_p = \exp(-\lambda \sum_{q < p} \max(\mathcal{L}_q - \tau, 0))$ of each pass `(P,)`.

    >>> dynamic_rollout_loss_weights(torch.tensor([3.0, 2.0, 1.0]), decay=1.0, threshold=1.0).log().tolist()
    [0.0, -2.0, -3.0]
    """
    excess = (step_losses - threshold).clamp(min=0.0)
    before = excess.cumsum(dim=0) - excess  # exclusive cumulative sum
    return (-decay * before).exp()


def _block_latent(intermediates, depth: int) -> Tensor:
    """The output of block `depth` (from 1) in a pass's intermediates, else its last hidden state."""
    blocks = intermediates.block_hiddens
    if blocks and 0 <= depth - 1 < len(blocks):
        return blocks[depth - 1]
    return intermediates.last_hidden


class FullBandwidth(nn.Module):
    """A decoder whose deep latents feed the next position's shallow blocks, trained in parallel passes."""

    def __init__(self, net: nn.Module, temporal_parallel_passes: int = 2, recirc_pairs=None, transition=None,
                 transitions: Optional[dict] = None, feedback_pass_weight: float = 1.0, ignore_index: int = -100,
                 jitter_noise_delta: float = 0.02, dynamic_rollout_loss_weight: bool = False,
                 dynamic_loss_decay: float = 0.5, dynamic_loss_threshold: float = 1.0):
        super().__init__()
        layers = getattr(net, "attn_layers", None)
        if layers is None or not hasattr(layers, "len_default_block") or not layers.causal:
            raise ValueError("net: expected a TransformerWrapper over a Decoder")
        o = layers.options
        numeric_scale = isinstance(o.scale_residual, (int, float)) and not isinstance(o.scale_residual, bool)
        if not o.depth_scale_residual and not numeric_scale:
            raise ValueError("net: the full-bandwidth transformer needs depth-scaled residuals "
                             "(Decoder(..., depth_scale_residual=True))")
        if getattr(net, "to_logits", True) is not None or getattr(net, "return_only_embed", False):
            raise ValueError("net: the full-bandwidth transformer needs tied embeddings (tie_embedding=True)")
        if isinstance(getattr(net, "post_emb_norm", nn.Identity()), nn.Identity):
            raise ValueError("net: the full-bandwidth transformer needs post_emb_norm=True")
        if isinstance(temporal_parallel_passes, bool) or not isinstance(temporal_parallel_passes, int) \
                or temporal_parallel_passes < 1:
            raise ValueError(f"temporal_parallel_passes: expected an integer >= 1, got {temporal_parallel_passes!r}")
        self.net = net
        self.temporal_parallel_passes, self.ignore_index = temporal_parallel_passes, ignore_index
        self.jitter_noise_delta, self.feedback_pass_weight = jitter_noise_delta, feedback_pass_weight
        self.dynamic_rollout_loss_weight = dynamic_rollout_loss_weight
        self.dynamic_loss_decay, self.dynamic_loss_threshold = dynamic_loss_decay, dynamic_loss_threshold
        dim = layers.dim
        self.depth = depth = -(-len(layers.blocks) // layers.len_default_block)
        pairs, modules, routes = [], {}, {}
        for item in resolve_recirc_pairs(depth, recirc_pairs):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise ValueError(f"recirc_pairs: expected (out_depth, in_depth[, transition]) entries, got {item!r}")
            out_d, in_d = item[0], item[1]
            if not (1 <= out_d <= depth and 1 <= in_d <= depth):
                raise ValueError(f"recirc_pairs: pair ({out_d}, {in_d}) out of range, blocks are 1 to {depth}")
            spec = item[2] if len(item) == 3 else None
            if spec is None and transitions is not None:
                spec = transitions.get((out_d, in_d), transitions.get(in_d))
            spec = spec if spec is not None else (transition if transition is not None else "glu")
            pairs.append((out_d, in_d))
            modules[f"{out_d}->{in_d}"] = resolve_transition(spec, dim)
            routes.setdefault(in_d, []).append(out_d)
        self.transitions = nn.ModuleDict(modules)
        self.recirc_pairs, self.routes_by_in_depth = tuple(pairs), routes

    def make_transforms(self, intermediates, training: bool = False, override_transition=None,
                        generate: bool = False) -> dict[int, Callable[[Tensor], Tensor]]:
        r"""`transform_block_inputs` of the next pass: block $i$ fuses the latents of its routes' blocks $o$."""
        fuse = fuse_last_latent if generate else shift_and_fuse_latents

        def transform(stream: Tensor, in_d: int) -> Tensor:
            for out_d in self.routes_by_in_depth[in_d]:
                trans = override_transition if override_transition is not None else self.transitions[f"{out_d}->{in_d}"]
                latent = _block_latent(intermediates, out_d)  # (b, n, D)
                if training and self.jitter_noise_delta > 0:
                    # $h + u$, $u \sim U(-\delta, \delta)$
                    latent = latent + torch.empty_like(latent).uniform_(-self.jitter_noise_delta, self.jitter_noise_delta)
                # $x^{(i)}_t \leftarrow T(h^{(o)}_{t-1}, x^{(i)}_t)$
                stream = fuse(latent, stream, trans)
            return stream

        return {in_d: (lambda stream, in_d=in_d: transform(stream, in_d)) for in_d in self.routes_by_in_depth}

    #
    # ## Training: temporal parallel passes
    def forward(self, token_ids: Tensor, return_loss: bool = True, temporal_parallel_passes: Optional[int] = None,
                return_loss_breakdown: bool = False, return_all_pass_logits: bool = False, transition=None,
                dynamic_rollout_loss_weight: Optional[bool] = None, dynamic_loss_decay: Optional[float] = None,
                dynamic_loss_threshold: Optional[float] = None, return_all: bool = False, **kwargs: Any):
        """The loss of `token_ids` `(b, n + 1)` (or, with `return_loss=False`, the last pass's logits
        `(b, n, V)`); with `return_loss_breakdown` / `return_all_pass_logits` a named tuple with them too."""
        if not torch.is_tensor(token_ids) or token_ids.dim() != 2 or (return_loss and token_ids.shape[1] < 2):
            raise ValueError(f"token_ids: expected token ids (batch, n) with n >= 2 for the loss, got "
                             f"{getattr(token_ids, 'shape', type(token_ids))}")
        passes = self.temporal_parallel_passes if temporal_parallel_passes is None else temporal_parallel_passes
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise ValueError(f"temporal_parallel_passes: expected an integer >= 1, got {passes!r}")
        dynamic = self.dynamic_rollout_loss_weight if dynamic_rollout_loss_weight is None else dynamic_rollout_loss_weight
        decay = self.dynamic_loss_decay if dynamic_loss_decay is None else dynamic_loss_decay
        threshold = self.dynamic_loss_threshold if dynamic_loss_threshold is None else dynamic_loss_threshold
        inp, target = (token_ids[:, :-1], token_ids[:, 1:]) if return_loss else (token_ids, None)

        logits, intermediates = self.net(inp, return_intermediates=True, **kwargs)  # the plain first pass
        all_logits = [logits]
        losses = [self._ce(logits, target)] if target is not None else []
        for _ in range(passes - 1):
            transforms = self.make_transforms(intermediates, training=self.training, override_transition=transition)
            logits, intermediates = self.net(inp, transform_block_inputs=transforms, return_intermediates=True, **kwargs)
            all_logits.append(logits)
            if target is not None:
                # Only positions $t \ge 1$ received a latent.
                losses.append(self._ce(logits[:, 1:], target[:, 1:]) if logits.shape[1] > 1 else self._ce(logits, target))

        wanted = dict(loss_breakdown=return_loss_breakdown or return_all,
                      all_pass_logits=return_all_pass_logits or return_all)
        if target is None:
            return _outputs("logits", all_logits[-1], wanted, dict(all_pass_logits=all_logits))
        first, feedback = losses[0], losses[1:]
        feedback_loss = first.new_zeros(())
        if feedback:
            stacked = torch.stack(feedback)  # (P - 1,)
            if dynamic:
                weights = dynamic_rollout_loss_weights(torch.stack(losses).detach(), decay, threshold)[1:]
                feedback_loss = (stacked * weights).sum() / weights.sum().clamp(min=1e-8)
            else:
                feedback_loss = stacked.mean()
        # $\mathcal{L} = \mathcal{L}_1 + w_{\text{fb}} \cdot \mathcal{L}_{\text{feedback}}$
        loss = first + feedback_loss * self.feedback_pass_weight
        breakdown = LossBreakdown(first, feedback, losses)
        return _outputs("loss", loss, wanted, dict(loss_breakdown=breakdown, all_pass_logits=all_logits))

    def _ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """The mean cross-entropy over the targets that are not `ignore_index`."""
        valid = target != self.ignore_index
        per_token = F.cross_entropy(logits.transpose(1, 2), target.masked_fill(~valid, 0), reduction="none")
        return (per_token * valid).sum() / valid.sum().clamp(min=1)

    #
    # ## Generation: the prompt in passes, then exact feedback token by token
    @torch.no_grad()
    def generate(self, prompts: Union[Tensor, list[Tensor]], seq_len: int, temperature: float = 1.0,
                 filter_logits_fn: Union[Callable, str] = top_k, filter_kwargs: Optional[dict] = None,
                 should_fuse_latent: Optional[Callable[[int], bool]] = None, transition=None,
                 temporal_parallel_passes: Optional[int] = None, process_prompt: bool = True,
                 eos_token: Optional[int] = None, **kwargs: Any) -> Tensor:
        """`seq_len` new tokens after `prompts` `(b, n)` (or `(n,)`, or a list of equal-length prompts)."""
        if isinstance(prompts, (list, tuple)):
            prompts = torch.stack(list(prompts))
        if not torch.is_tensor(prompts) or prompts.dim() not in (1, 2):
            raise ValueError("prompts: expected token ids (n,) or (batch, n), or a list of equal-length prompts")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len: expected a positive integer, got {seq_len!r}")
        single = prompts.dim() == 1
        out = prompts[None] if single else prompts
        n = out.shape[1]
        passes = self.temporal_parallel_passes if temporal_parallel_passes is None else temporal_parallel_passes
        fuse_at = should_fuse_latent or (lambda step: True)
        filter_fn, filter_kwargs = resolve_filter(filter_logits_fn), dict(filter_kwargs or {})
        was_training = self.training
        self.eval()
        try:
            logits, cache = self.net(out, return_intermediates=True, **kwargs)
            if process_prompt:
                for _ in range(passes - 1):
                    transforms = self.make_transforms(cache, override_transition=transition)
                    logits, cache = self.net(out, transform_block_inputs=transforms, return_intermediates=True, **kwargs)
            for step in range(seq_len):
                last = logits[:, -1]  # (b, V)
                if temperature == 0:
                    sample = last.argmax(dim=-1, keepdim=True)
                else:
                    sample = torch.multinomial(F.softmax(filter_fn(last, **filter_kwargs) / temperature, dim=-1), 1)
                out = torch.cat((out, sample), dim=-1)
                if (eos_token is not None and bool((sample == eos_token).all())) or step == seq_len - 1:
                    break
                # The new token's shallow blocks take the latents of the token before it.
                transforms = self.make_transforms(cache, override_transition=transition, generate=True) \
                    if passes > 1 and fuse_at(step) else None
                logits, cache = self.net(out, transform_block_inputs=transforms, cache=cache,
                                         return_intermediates=True, **kwargs)
        finally:
            self.train(was_training)
        out = out[:, n:]
        return out[0] if single else out


def _outputs(primary: str, value, wanted: dict[str, bool], fields: dict[str, Any]):
    """x-transformers' return convention: the primary output alone, or a named tuple with the requested fields."""
    names = [name for name in ("loss_breakdown", "all_pass_logits") if wanted[name]]
    if not names:
        return value
    return namedtuple("Output", [primary, *names])(value, *(fields.get(name) for name in names))
