r"""
# Recirculation

*Paper:* [Recirculation](https://arxiv.org/abs/2608.17981) (Mozer, Siddiqui, Sawyer, Sanyal and Liu, 2026)

A decoder computes each token's deep representation once and never lets the shallow layers of that
token see it.  Recirculation leaks it back down: after the usual pass over token $t$ (whose logits are
read as usual), the residual stream of a deep *source* layer $s$ is mixed into that of a shallow
*destination* layer $d$, and the token is run again from layer $d$ upwards.  The second pass replaces
the token's keys and values in the cache, so every *later* token attends to a representation of $t$
that has already seen its own depth.  A convex mixture keeps the injected stream on the scale the
destination layer was trained for (eq. 1), with the source rescaled to the destination's norm (eq. 2):

$$\tilde z_d = \alpha\, \hat z_s + \beta\, z_d, \qquad
\hat z_s = z_s \frac{\lVert z_d \rVert}{\lVert z_s \rVert}, \qquad \beta = 1 - \alpha$$

$\alpha$ ramps up linearly over the first `ramp_steps` positions (appendix B.3).  With
`use_learned=True` a small MLP reads $[z_s; z_d]$ and gives $\alpha, \beta \in (0, 1)^D$ per token and
feature (section 4.6, initialised at $\alpha = 0.1$, $\beta = 0.9$); `learn_parameters` trains it by
backpropagation through time on next-token prediction with the model frozen.  Several routes may be
given at once (`source_layer=(2, 3), destination_layer=(0, 1)`); layers count self-attention layers
from 0.

Because token $t$'s second pass needs its own first pass, the prompt is read one token at a time
(it cannot be run in parallel), which is the price of the technique.

```python
net = TransformerWrapper(num_tokens=256, max_seq_len=64, attn_layers=Decoder(dim=64, depth=4, heads=4))
model = Recirculation(net, source_layer=3, destination_layer=1)
logits = model(x)                                  # (b, n, V), token by token
out = AutoregressiveWrapper(model).generate(x, 8)  # a drop-in network for generation
```

The equation, section and appendix numbers are those x-transformers' implementation cites.

**Differences from x-transformers.**  None in meaning: as there, the mixture replaces the input of the
destination layer's branch (its pre-norm input), while the residual sum around that branch keeps
$z_d$.  Here the cache is this library's preallocated one, so stripping a token's keys rewinds its
offset by one; a decoding call takes exactly one new token.  The `Recirculation` needs a causal stack
of plain residual blocks (no reversible coupling or hyper-connections, whose streams a single
hidden state does not describe, and no token shift or running state, which cannot be rewound).
Memory tokens (`num_memory_tokens`) are allowed, where x-transformers refuses a network with them: they
enter the cache on the first token's pass, and the mixture reads the latest token's position.  Every
pass runs on the cache, where stochastic depth (`layer_dropout`) skips no block, so in training too
each layer's stream is read and written.

Shapes: `b` batch, `n` tokens, `D` model width, `V` vocabulary.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..generation.intermediates import LayerIntermediates, _SharedCache, resume, snapshot
from ..generation.kv_cache import LayersCache, SelfAttentionCache


def norm_matched(z_source: Tensor, z_dest: Tensor, eps: float = 1e-8) -> Tensor:
    r"""$z_s \lVert z_d \rVert / \lVert z_s \rVert$ (eq. 2), and $0$ where $z_s$ vanishes.

    >>> norm_matched(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])).tolist()
    [6.0, 8.0]
    """
    source_norm = z_source.norm(dim=-1, keepdim=True)  # (..., 1)
    # $\lVert z_d \rVert / \lVert z_s \rVert$
    scale = z_dest.norm(dim=-1, keepdim=True) / source_norm.clamp(min=eps)
    return z_source * scale.masked_fill(source_norm <= eps, 0.0)


class RecirculationMixer(nn.Module):
    r"""Per-token mixture coefficients (section 4.6).

    $\alpha, \beta = \sigma(\operatorname{MLP}(\operatorname{LN}([z_s; z_d])))$
    """

    def __init__(self, dim: int, hidden: Optional[int] = None, init_alpha: float = 0.1, init_beta: float = 0.9):
        super().__init__()
        hidden = hidden or dim
        self.input_norm = nn.LayerNorm(dim * 2)
        self.mlp = nn.Sequential(nn.Linear(dim * 2, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, dim * 2))
        out = self.mlp[-1]
        assert isinstance(out, nn.Linear)
        # Small weights and a bias of $\operatorname{logit}(\alpha_0), \operatorname{logit}(\beta_0)$: the
        # mixer starts at the fixed mixture it replaces.
        nn.init.normal_(out.weight, std=0.02)
        with torch.no_grad():
            out.bias.copy_(torch.cat((torch.full((dim,), math.log(init_alpha / (1 - init_alpha))),
                                      torch.full((dim,), math.log(init_beta / (1 - init_beta))))))

    def forward(self, z_source: Tensor, z_dest: Tensor) -> tuple[Tensor, Tensor]:
        """`(alpha, beta)`, each `(b, 1, D)`, for the streams `(b, 1, D)` of the two layers."""
        coefficients = self.mlp(self.input_norm(torch.cat((z_source, z_dest), dim=-1))).sigmoid()  # (b, 1, 2D)
        alpha, beta = coefficients.chunk(2, dim=-1)
        return alpha, beta


def _routes(name: str, value) -> tuple[int, ...]:
    layers = value if isinstance(value, tuple) else (value,)
    if not layers or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
        raise ValueError(f"{name}: expected a self-attention layer index (from 0) or a tuple of them, got {value!r}")
    return layers


class Recirculation(nn.Module):
    """A decoder whose deep residual stream is mixed back into a shallow layer for each token's keys and values."""

    def __init__(self, net: nn.Module, source_layer: Union[int, tuple[int, ...]],
                 destination_layer: Union[int, tuple[int, ...]], alpha: Union[float, tuple[float, ...]] = 0.15,
                 beta: Union[float, tuple[float, ...], None] = None, ramp_steps: int = 10, use_learned: bool = False,
                 learned_hidden: Optional[int] = None):
        super().__init__()
        layers = getattr(net, "attn_layers", None)
        if layers is None or not hasattr(layers, "blocks") or getattr(net, "return_only_embed", False) \
                or not hasattr(net, "logits"):
            raise ValueError("net: expected a TransformerWrapper with an output layer (to logits)")
        if not layers.causal:
            raise ValueError("net: recirculation needs a causal stack (Decoder) that can cache keys and values")
        if layers.reversible_pairs is not None or layers.streams is not None \
                or any(b.shift is not None for b in layers.blocks):
            raise ValueError("net: recirculation needs plain residual blocks (no reversible, hyper-connections or "
                             "token shift)")
        self.net = net
        sources, destinations = _routes("source_layer", source_layer), _routes("destination_layer", destination_layer)
        if len(sources) != len(destinations):
            raise ValueError(f"source_layer and destination_layer: one destination per source, got {len(sources)} "
                             f"and {len(destinations)}")
        if len(set(destinations)) != len(destinations):
            raise ValueError(f"destination_layer: each route needs its own destination, got {destinations}")
        if any(d >= s for s, d in zip(sources, destinations, strict=True)):
            raise ValueError(f"destination_layer: each must be shallower than its source_layer, got "
                             f"{destinations} for {sources}")
        self.attn_block_indices = [i for i, kind in enumerate(layers.layer_types) if kind == "a"]
        if max(sources) >= len(self.attn_block_indices):
            raise ValueError(f"source_layer: the stack has {len(self.attn_block_indices)} self-attention layers "
                             f"(0 to {len(self.attn_block_indices) - 1}), got {sources}")
        if isinstance(ramp_steps, bool) or not isinstance(ramp_steps, int) or ramp_steps < 0:
            raise ValueError(f"ramp_steps: expected an integer >= 0, got {ramp_steps!r}")
        self.source_layers, self.destination_layers = sources, destinations
        n = len(sources)
        self.alphas = alpha if isinstance(alpha, tuple) else (alpha,) * n
        self.betas = (beta if isinstance(beta, tuple) else (beta,) * n) if beta is not None else (None,) * n
        if len(self.alphas) != n or len(self.betas) != n:
            raise ValueError(f"alpha and beta: one value, or one per route ({n})")
        self.attn_layers = layers
        self.learned_mixers = nn.ModuleList(RecirculationMixer(layers.dim, learned_hidden) for _ in range(n)) \
            if use_learned else None
        # The learned mixer sets each token's mixture itself: no ramp.
        self.ramp_steps = 0 if use_learned else ramp_steps

    # What `AutoregressiveWrapper` reads of the network it drives.
    @property
    def max_seq_len(self) -> int:
        max_len: Any = self.net.max_seq_len
        return max_len

    @property
    def memory_tokens(self):
        return getattr(self.net, "memory_tokens", None)

    @property
    def output_is_log_prob(self) -> bool:
        return bool(getattr(self.net, "output_is_log_prob", False))

    #
    # ## The mixture (eq. 1)
    def mix_coefficients(self, route: int, z_source: Tensor, z_dest: Tensor, step: int):
        r"""$\alpha, \beta$ of one route at position `step` $= t$.

        Learned, or $\alpha \min(t / T_{\text{ramp}}, 1)$ and $1 - \alpha$ (or the given $\beta$).
        """
        if self.learned_mixers is not None:
            return self.learned_mixers[route](z_source, z_dest)
        alpha = self.alphas[route]
        if self.ramp_steps > 0:
            alpha = alpha * min(step / self.ramp_steps, 1.0)
        beta = self.betas[route]
        return alpha, 1.0 - alpha if beta is None else beta

    def mix(self, hiddens: list[Tensor], step: int = 0) -> dict[int, Tensor]:
        r"""$\tilde z_d = \alpha \hat z_s + \beta z_d$ of the latest token `(b, 1, D)`, by destination layer."""
        mixed = {}
        for route, (source, dest) in enumerate(zip(self.source_layers, self.destination_layers, strict=True)):
            z_source, z_dest = hiddens[source][:, -1:], hiddens[dest][:, -1:]  # (b, 1, D)
            alpha, beta = self.mix_coefficients(route, z_source, z_dest, step)
            # $\tilde z_d = \alpha \hat z_s + \beta z_d$
            mixed[dest] = alpha * norm_matched(z_source, z_dest) + beta * z_dest
        return mixed

    #
    # ## One token: a first pass, then the recirculated one
    #
    # Each self-attention block's branch input (its pre-norm's input, the residual stream $z_l$) is
    # read, and written, by forward pre-hooks, so the stack itself is not changed.
    def _branch_entry(self, layer: int) -> nn.Module:
        block = self.attn_layers.blocks[self.attn_block_indices[layer]]
        return block.pre_norm if block.pre_norm is not None else block.fn

    def _step(self, token: Tensor, cache: LayersCache, step: int, kwargs: dict) -> Tensor:
        """Logits `(b, 1, V)` of the first pass over `token` `(b, 1)`; the cache ends with its recirculated keys."""
        hiddens: list[Tensor] = []
        handles = [self._branch_entry(layer).register_forward_pre_hook(
            lambda _module, args: hiddens.append(args[0])) for layer in range(len(self.attn_block_indices))]
        try:
            _fresh_buffers(cache)
            logits = self.net(token, cache=cache, **kwargs)  # (b, 1, V)
        finally:
            for handle in handles:
                handle.remove()
        mixed = self.mix(hiddens, step)
        # Forget the token's keys and values, then run it again with $\tilde z_d$ entering layer $d$.
        cache.rewind(cache.offset - 1)
        handles = [self._branch_entry(dest).register_forward_pre_hook(_inject(z)) for dest, z in mixed.items()]
        try:
            _fresh_buffers(cache)
            self.net(token, cache=cache, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return logits

    #
    # ## Reading a prompt, then decoding
    def forward(self, x: Tensor, cache: Union[LayersCache, LayerIntermediates, None] = None,
                return_intermediates: bool = False, seq_start_pos: Optional[Tensor] = None,
                mask: Optional[Tensor] = None, input_not_include_cache: bool = False, **kwargs: Any):
        """Logits `(b, n, V)` of `x` `(b, n)`, read token by token with recirculation.

        With `cache=` (the intermediates of an earlier call, x-transformers' spelling, or a
        `LayersCache` that `AutoregressiveWrapper` drives), one new token is decoded; with
        `return_intermediates=True` also the cache to continue from: `(logits, intermediates)`.
        """
        if not torch.is_tensor(x) or x.dim() != 2:
            raise ValueError(f"x: expected token ids of shape (batch, n), got {getattr(x, 'shape', type(x))}")
        if seq_start_pos is not None:
            kwargs["seq_start_pos"] = seq_start_pos
        shared = None
        if isinstance(cache, LayerIntermediates):
            new = x if input_not_include_cache else x[:, cache.cache_length:]
            if new.shape[1] != 1:
                raise ValueError(f"x: with cache= intermediates covering {cache.cache_length} tokens, a call "
                                 f"decodes exactly one new token, got {new.shape[1]}")
            shared, layers_cache = resume(cache, 1)
            x, mask = new, None if mask is None else mask[:, -1:]
        elif cache is None:
            layers_cache = LayersCache(self.attn_layers, x.shape[0], x.shape[1] + self._num_memory_tokens())
            shared = _SharedCache(layers_cache, self._num_memory_tokens())
            shared.write_starts.append(0)
        else:
            layers_cache = cache
        start = layers_cache.offset - self._num_memory_tokens() if layers_cache.offset else 0
        logits = []
        for t in range(x.shape[1]):
            step_kwargs = kwargs if mask is None else {**kwargs, "mask": mask[:, t:t + 1]}
            logits.append(self._step(x[:, t:t + 1], layers_cache, start + t, step_kwargs))
        out = torch.cat(logits, dim=1)  # (b, n, V)
        if not return_intermediates:
            return out
        if shared is None:
            raise ValueError("return_intermediates: a LayersCache passed as cache= is itself the cache to continue from")
        return out, snapshot(shared)

    def _num_memory_tokens(self) -> int:
        memory = self.memory_tokens
        return memory.num if memory is not None else 0

    #
    # ## Learning the mixer (section 4.6)
    def learn_parameters(self, x: Tensor, steps: int = 100, optimizer_cls=torch.optim.AdamW,
                         optimizer_kwargs: Optional[dict] = None, batch_size: int = 32) -> float:
        r"""Fit the learned mixers on token ids `x` `(N, n)`, the model frozen; returns the last loss.

        The loss is next-token cross-entropy (token 0 is padding), backpropagated through the
        token-by-token reading, so each mixer learns what its injected stream does to later tokens.
        """
        if self.learned_mixers is None:
            raise ValueError("learn_parameters: build the Recirculation with use_learned=True")
        options: dict[str, Any] = optimizer_kwargs or {"lr": 3e-4, "weight_decay": 1e-4}
        optim = optimizer_cls(self.learned_mixers.parameters(), **options)
        was_training = self.net.training
        self.net.eval()
        loss = torch.tensor(float("nan"))
        try:
            for _ in range(steps):
                batch = x[torch.randint(0, x.shape[0], (batch_size,), device=x.device)]
                logits = self(batch)[:, :-1]  # (B, n - 1, V)
                loss = nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], ignore_index=0)
                optim.zero_grad()
                loss.backward()
                optim.step()
        finally:
            self.net.train(was_training)
        return loss.item()


def _inject(z_mixed: Tensor):
    """A pre-hook that puts the mixed stream `(b, 1, D)` in place of the latest token's stream."""
    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (torch.cat((args[0][:, :-1], z_mixed.to(args[0].dtype)), dim=1), *args[1:])  # (b, n, D)
    return hook


def _fresh_buffers(cache: LayersCache) -> None:
    """With gradients on, give each layer new key/value buffers before a pass writes into them.

    The cache writes in place; a pass through the mixers saves the old keys for the backward pass, and
    writing into the same buffers again would overwrite them (`learn_parameters`)."""
    if not torch.is_grad_enabled():
        return
    for block in cache.blocks:
        attn = block.attn
        if isinstance(attn, SelfAttentionCache) and attn.k is not None and attn.v is not None:
            attn.k, attn.v = attn.k.clone(), attn.v.clone()
