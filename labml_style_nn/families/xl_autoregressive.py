r"""
# Transformer-XL autoregressive training and generation

*Paper:* [Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context](https://arxiv.org/abs/1901.02860)
(Dai et al., 2019)

A model trained on windows of `max_seq_len` tokens can still read a long document if it reads it
the way Transformer-XL does: in consecutive segments, each one attending to the hidden states that
the previous segments left behind (the [memories](../memory/xl_recurrence.md) of a
`TransformerWrapper(max_mem_len=M)`).  `XLAutoregressiveWrapper` turns that into a language model
loss over a sequence of any length: it cuts the sequence into segments of $L$ = `max_seq_len`
tokens, runs them in order, carries the memories from one to the next, and weights each segment's
next-token loss by its share of the tokens,

$$\mathcal{L} = \sum_{s} \frac{n_s}{n}\ \frac{1}{b} \sum_{r=1}^{b}
\operatorname{mean}_{t \in T_{r,s}} \big(-\log p_\theta(x_{t+1} \mid x_{\le t} \text{ in segment } s,\ \text{mem}_{s-1})\big),$$

where $n_s$ is the segment's length and $T_{r,s}$ are row $r$'s positions in it whose target is not
`ignore_index`.  The paper stops gradients at the memory ($\operatorname{sg}(h_{\tau})$);
`tbptt_steps=k` lets them flow through $k$ segments and cuts them after every $k$-th (truncated
backpropagation through time).  `dropout_mems=True` trains each segment without its memories.

Generation reads the prompt segment by segment to build the memories, then samples token by token:
each step runs the current segment with the memories of all the segments before it, and when a
segment is full it is committed to the memories, so the model keeps going far past `max_seq_len`.

**Episodic memories** (`episodic_mem_len=E`): $E$ learned key/value slots per attention layer,
prepended to the keys of every segment (x-transformers' `self_attn_additional_kv`), always visible.

```python
model = TransformerWrapper(num_tokens=20000, max_seq_len=512, max_mem_len=2048,
                           attn_layers=Decoder(dim=512, depth=6, heads=8, rel_pos_bias=True))
xl = XLAutoregressiveWrapper(model)
loss = xl(seg)                         # seg: (b, 4096), eight segments
out = xl.generate(seg[:, :1024], 256)  # (b, 256)
```

Shapes: `b` batch, `n` tokens, `L` segment length (`max_seq_len`), `V` vocabulary, `h` key/value
heads, `E` episodic slots, `d` head dim.

**Test-time training** (`ttt_module_paths`, `ttt_low_rank_paths`, `ttt_use_muon`,
`ttt_next_latent_loss`, `ttt_custom_loss_module`; `forward(..., ttt_recurrent_steps=k)` runs each
segment $k$ times, one inner step after each): chosen modules get per-sequence fast weights that
take a gradient step after every segment, explained on [its own page](xl_test_time_training.md).

**Differences from x-transformers.**  Generation runs the current segment again at every step
(this library keeps no key/value cache next to XL memories; a cache would give the same tokens),
with the output layer on the last position only.
When generation itself fills a segment, x-transformers commits it with memories that already hold
the hidden state of the segment's second-to-last token (from its cached step), so that position
appears twice; here the memories hold each position once, and greedy generation predicts exactly
what the segment-recurrent forward pass predicts (a test checks it; within a segment the two
libraries generate the same tokens).  With test-time training, generation trains the fast weights
on the rest of the prompt without adding it to the memories (x-transformers adds it and then runs
it again as the current segment).  TTT module paths name this library's modules.  `eos_token`
looks only at the generated tokens (x-transformers also counts an eos in the prompt).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..generation.head_positions import position_head
from ..generation.sampling import resolve_filter, top_k
from .xl_test_time_training import LowRankLinear, TTTModuleWrapper, TTTNextLatentPredictionLoss, newton_schulz


class EpisodicMemories(nn.Module):
    """$E$ learned key/value slots for each attention layer: `mem_kv` `(2, layers, h, E, d)`."""

    def __init__(self, depth: int, heads: int, seq_len: int, dim_head: int):
        super().__init__()
        self.mem_kv = nn.Parameter(torch.randn(2, depth, heads, seq_len, dim_head) * 0.02)

    def forward(self) -> Tensor:
        return self.mem_kv


def episodic_kv(mem_kv: Tensor, batch: int) -> list[tuple[Tensor, Tensor]]:
    """One `(k, v)` pair `(b, h, E, d)` per attention layer, lowest first, from `(2, layers, h, E, d)` slots
    (shared) or `(b, 2, layers, h, E, d)` (per-sequence fast weights)."""
    if mem_kv.dim() == 5:
        mem_kv = mem_kv.expand(batch, *mem_kv.shape)
    mem_k, mem_v = mem_kv.unbind(1)  # (b, layers, h, E, d) each
    return list(zip(mem_k.unbind(1), mem_v.unbind(1), strict=True))


def _attention_shape(net: nn.Module) -> tuple[int, int, int]:
    """(number of self-attention layers, key/value heads, head dim) of a `TransformerWrapper`'s stack."""
    blocks = [b for b in net.attn_layers.blocks if b.kind == "a"]  # type: ignore[union-attr]
    if not blocks:
        raise ValueError("episodic_mem_len: the model's stack has no self-attention layer to give memories to")
    attn = blocks[0].fn
    if attn.value_dim_head != attn.dim_head:
        raise ValueError("episodic_mem_len: the memories need keys and values of one head dim (attn_value_dim_head "
                         "differs)")
    return len(blocks), attn.kv_heads, attn.dim_head


def masked_row_mean(values: Tensor, mask: Tensor) -> Tensor:
    """The mean of `values` `(b, n)` over the positions `mask` keeps, per row `(b,)` (0 for an empty row)."""
    return (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


class XLAutoregressiveWrapper(nn.Module):
    """Segment-recurrent next-token loss and generation around a `TransformerWrapper` with `max_mem_len > 0`."""

    def __init__(self, net: nn.Module, ignore_index: int = -100, pad_value: int = 0, tbptt_steps: int = 1,
                 ttt_module_paths=(), ttt_lr: float = 1e-3, ttt_wd: float = 0.01, ttt_use_muon: bool = False,
                 ttt_muon_steps: int = 5, ttt_muon_lr: float = 1e-2, ttt_low_rank_paths=(),
                 ttt_custom_loss_module: Optional[nn.Module] = None, ttt_next_latent_loss: bool = False,
                 episodic_mem_len: int = 0):
        super().__init__()
        if not isinstance(tbptt_steps, int) or isinstance(tbptt_steps, bool) or tbptt_steps < 1:
            raise ValueError(f"tbptt_steps: expected an integer >= 1, got {tbptt_steps!r}")
        if not isinstance(episodic_mem_len, int) or isinstance(episodic_mem_len, bool) or episodic_mem_len < 0:
            raise ValueError(f"episodic_mem_len: expected an integer >= 0, got {episodic_mem_len!r}")
        if not getattr(net, "max_mem_len", 0):
            raise ValueError("net: the XL wrapper carries memories between segments; build the TransformerWrapper "
                             "with max_mem_len > 0")
        self.net = net
        self.ignore_index, self.pad_value, self.tbptt_steps = ignore_index, pad_value, tbptt_steps
        self.max_seq_len: int = net.max_seq_len  # type: ignore[assignment]
        self.output_is_log_prob = bool(getattr(net, "output_is_log_prob", False))
        self.episodic_mems: Optional[nn.Module] = None
        if episodic_mem_len:
            depth, heads, dim_head = _attention_shape(net)
            self.episodic_mems = EpisodicMemories(depth, heads, episodic_mem_len, dim_head)
        # Test-time training ([its page](xl_test_time_training.md)): the fast-weight modules and their rule.
        self.ttt_lr, self.ttt_wd, self.ttt_use_muon = ttt_lr, ttt_wd, ttt_use_muon
        self.ttt_muon_steps, self.ttt_muon_lr = ttt_muon_steps, ttt_muon_lr
        if ttt_next_latent_loss:
            if ttt_custom_loss_module is not None:
                raise ValueError("ttt_next_latent_loss and ttt_custom_loss_module: give one inner loss")
            ttt_custom_loss_module = TTTNextLatentPredictionLoss(dim=net.attn_layers.dim)  # type: ignore[union-attr]
        self.ttt_custom_loss_module = ttt_custom_loss_module
        low_rank = {path: rank for path, rank in ttt_low_rank_paths}
        pairs = [(p, p) if isinstance(p, str) else tuple(p) for p in ttt_module_paths]
        self.ttt_paths_map: list[tuple[str, str]] = [*pairs, *((p, p) for p in low_rank)]  # (source, target)
        self.ttt_wrappers: dict[str, TTTModuleWrapper] = {}
        for path in dict.fromkeys(p for pair in self.ttt_paths_map for p in pair):
            parent, name = self._parent(path)
            module = getattr(parent, name)
            if path in low_rank:
                module = LowRankLinear(module, low_rank[path])
            wrapper = TTTModuleWrapper(module)
            setattr(parent, name, wrapper)
            self.ttt_wrappers[path] = wrapper
        if self.has_ttt and tbptt_steps < 2:
            raise ValueError("tbptt_steps: test-time training needs tbptt_steps > 1 (the inner steps train across "
                             "segments)")

    @property
    def has_ttt(self) -> bool:
        return bool(self.ttt_wrappers)

    def _parent(self, path: str) -> tuple[nn.Module, str]:
        """The module holding `path` (relative to the network; `episodic_mems` is the wrapper's) and the last name."""
        *parts, name = path.split(".")
        parent: nn.Module = self if parts[:1] == [] and name == "episodic_mems" else self.net
        try:
            for part in parts:
                parent = getattr(parent, part)
            getattr(parent, name)
        except AttributeError:
            raise ValueError(f"ttt_module_paths: no module at {path!r} in the network") from None
        return parent, name

    def init_ttt(self, batch: int) -> None:
        """Fresh fast weights: each row of the batch starts from the slow weights."""
        for wrapper in self.ttt_wrappers.values():
            wrapper.batch_params = {name: p.expand(batch, *p.shape) for name, p in wrapper.module.named_parameters()}

    def reset_ttt(self) -> None:
        for wrapper in self.ttt_wrappers.values():
            wrapper.reset()

    def update_ttt(self, logits: Tensor, labels: Tensor, create_graph: bool = False, intermediates=None) -> None:
        r"""One inner step on the segment just run: $W \leftarrow W - \eta \nabla_W \ell - \eta \lambda W$."""
        if not self.has_ttt:
            return
        keep = labels != self.ignore_index  # (b, n)
        if self.ttt_custom_loss_module is not None:
            losses = self.ttt_custom_loss_module(intermediates, mask=keep)
            per_row = masked_row_mean(losses, keep) if losses.dim() > 1 else losses  # (b,)
        else:
            per_row = masked_row_mean(self._token_losses(logits, labels), keep)
        sources = [self.ttt_wrappers[src] for src, _ in self.ttt_paths_map]
        params = [p for w in sources for p in w.batch_params.values()]  # type: ignore[union-attr]
        # Rows are independent, so the gradient of the sum is each row's own.
        grads = iter(torch.autograd.grad(per_row.sum(), params, create_graph=create_graph,
                                         retain_graph=create_graph, allow_unused=True))
        for (_, tgt), source in zip(self.ttt_paths_map, sources, strict=True):
            target = self.ttt_wrappers[tgt]
            assert source.batch_params is not None and target.batch_params is not None
            if len(source.batch_params) != len(target.batch_params):
                raise ValueError(f"ttt_module_paths: {tgt!r} must have the parameters of its source")
            new = {}
            for (name, w), src_w in zip(target.batch_params.items(), source.batch_params.values(), strict=True):
                if w.shape != src_w.shape:
                    raise ValueError(f"ttt_module_paths: {tgt}.{name} must have its source's shape {tuple(src_w.shape)}")
                g = next(grads)
                if g is not None:
                    orthogonal = False
                    if self.ttt_use_muon:
                        g, orthogonal = newton_schulz(g, steps=self.ttt_muon_steps)
                    lr = self.ttt_muon_lr if orthogonal else self.ttt_lr
                    w = w - lr * g - lr * self.ttt_wd * w
                new[name] = w if create_graph else w.detach().requires_grad_()
            target.batch_params = new

    def _net(self, x: Tensor, **kwargs):
        """The model with the episodic memories as extra keys and values, returning `(logits, intermediates)`."""
        if self.episodic_mems is not None:
            kwargs["self_attn_additional_kv"] = episodic_kv(self.episodic_mems(), x.shape[0])
        return self.net(x, return_mems=True, return_intermediates=True, **kwargs)

    def _token_losses(self, logits: Tensor, labels: Tensor) -> Tensor:
        r"""$-\log p(x_{t+1})$ per position `(b, n)`, 0 where the label is `ignore_index`."""
        loss_fn = F.nll_loss if self.output_is_log_prob else F.cross_entropy
        return loss_fn(logits.transpose(1, 2), labels, ignore_index=self.ignore_index, reduction="none")

    def forward(self, x: Tensor, mems: Optional[list[Tensor]] = None, dropout_mems: bool = False,
                ttt_recurrent_steps: int = 1, **kwargs) -> Tensor:
        """The segment-weighted next-token loss of token ids `x` `(b, n)`, a scalar."""
        if isinstance(ttt_recurrent_steps, bool) or not isinstance(ttt_recurrent_steps, int) or ttt_recurrent_steps < 1:
            raise ValueError(f"ttt_recurrent_steps: expected an integer >= 1, got {ttt_recurrent_steps!r}")
        if ttt_recurrent_steps > 1 and not self.has_ttt:
            raise ValueError("ttt_recurrent_steps: needs test-time training (ttt_module_paths or ttt_low_rank_paths)")
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] < 2:
            raise ValueError(f"x: expected token ids of shape (batch, n) with n >= 2, got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        inp, labels = x[:, :-1], x[:, 1:]
        n = inp.shape[1]
        total = inp.new_zeros((), dtype=torch.float)
        segments = list(zip(inp.split(self.max_seq_len, dim=1), labels.split(self.max_seq_len, dim=1), strict=True))
        # The inner steps need gradients even when the caller evaluates under `no_grad`; the meta-gradient
        # differentiates them again, which PyTorch's fused attention kernels cannot, its math backend can.
        meta = self.has_ttt and self.training
        with torch.enable_grad() if self.has_ttt else contextlib.nullcontext(), \
                sdpa_kernel([SDPBackend.MATH]) if meta else contextlib.nullcontext():
            self.init_ttt(x.shape[0])
            try:
                for s, (segment, segment_labels) in enumerate(segments):
                    # Every `tbptt_steps`-th segment hands on memories (and fast weights) without their graph.
                    detach = (s + 1) % self.tbptt_steps == 0
                    for step in range(ttt_recurrent_steps):
                        last_step = step == ttt_recurrent_steps - 1
                        logits, inter = self._net(segment, mems=None if dropout_mems else mems, detach_mems=detach,
                                                  **kwargs)
                        if last_step:
                            # $\frac{n_s}{n} \cdot \frac{1}{b}\sum_r \operatorname{mean}_{t \in T_{r,s}} \ell_t$
                            keep = segment_labels != self.ignore_index  # (b, n_s)
                            per_row = masked_row_mean(self._token_losses(logits, segment_labels), keep)  # (b,)
                            total = total + per_row.mean() * (segment.shape[1] / n)
                        if self.has_ttt and not (last_step and s == len(segments) - 1):
                            self.update_ttt(logits, segment_labels, create_graph=self.training, intermediates=inter)
                    mems = inter.mems
                    if detach:
                        for wrapper in self.ttt_wrappers.values():
                            assert wrapper.batch_params is not None
                            wrapper.batch_params = {k: w.detach().requires_grad_(w.requires_grad)
                                                    for k, w in wrapper.batch_params.items()}
            finally:
                self.reset_ttt()
        return total

    #
    # ## Generation
    #
    # Segments start at multiples of $L$ from the first prompt token.  The memories `mems` hold the
    # segments before the current one; a segment is committed when it is full.
    @torch.no_grad()
    def generate(self, start_tokens: Tensor, seq_len: int, eos_token: Optional[int] = None,
                 temperature: float = 1.0, filter_logits_fn: Union[Callable, str] = top_k,
                 filter_kwargs: Optional[dict] = None, mems: Optional[list[Tensor]] = None, **kwargs) -> Tensor:
        """`seq_len` new tokens after `start_tokens` `(b, t)` (or `(t,)`): `(b, seq_len)` (or `(seq_len,)`)."""
        if not torch.is_tensor(start_tokens) or start_tokens.dim() not in (1, 2) or start_tokens.shape[-1] < 1:
            raise ValueError("start_tokens: expected token ids of shape (batch, t) or (t,), with t >= 1")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"seq_len: expected a non-negative integer, got {seq_len!r}")
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
        filter_fn, filter_kwargs = resolve_filter(filter_logits_fn), dict(filter_kwargs or {})
        no_batch = start_tokens.dim() == 1
        out = start_tokens[None] if no_batch else start_tokens
        t, L = out.shape[1], self.max_seq_len
        was_training = self.training
        self.eval()
        try:
            # The prompt's full segments before the last token's segment become memories (and, with
            # test-time training, each teaches the fast weights, as does the rest of the prompt).
            seg = (t - 1) // L * L
            self.init_ttt(out.shape[0])
            with torch.enable_grad() if self.has_ttt else contextlib.nullcontext():
                for start in range(0, seg, L):
                    # (Test-time training learns from the segment's logits; without it they are not read.)
                    logits, inter = self._net(out[:, start:start + L], mems=mems, return_embeddings=not self.has_ttt,
                                              **kwargs)
                    self.update_ttt(logits, out[:, start + 1:start + L + 1], intermediates=inter)
                    mems = inter.mems
                if self.has_ttt and t - seg > 1:
                    logits, inter = self._net(out[:, seg:-1], mems=mems, **kwargs)
                    self.update_ttt(logits, out[:, seg + 1:], intermediates=inter)
            ended = torch.zeros(out.shape[0], dtype=torch.bool, device=out.device)
            # Only the last position is sampled: where the head works position by position it runs on that
            # position alone ([head positions](../generation/head_positions.md)).
            head = position_head(self.net, kwargs)
            for _ in range(seq_len):
                if out.shape[1] - seg > L:
                    # The segment is full: commit it, the new token opens the next one (its logits are not
                    # read: the final hidden states skip the head).
                    _, inter = self._net(out[:, seg:seg + L], mems=mems, return_embeddings=True, **kwargs)
                    mems, seg = inter.mems, seg + L
                if head is not None:
                    h, _ = self._net(out[:, seg:], mems=mems, return_embeddings=True, **kwargs)
                    logits = head(h[:, -1:])[:, -1]  # (b, V)
                else:
                    logits = self._net(out[:, seg:], mems=mems, **kwargs)[0][:, -1]  # (b, V)
                if temperature == 0:
                    token = logits.argmax(dim=-1, keepdim=True)
                else:
                    # $x_{t+1} \sim \operatorname{softmax}(f(z_t) / T)$
                    probs = (filter_fn(logits, **filter_kwargs) / temperature).softmax(dim=-1)
                    token = torch.multinomial(probs, 1)  # (b, 1)
                if eos_token is not None:
                    token = token.masked_fill(ended[:, None], self.pad_value)
                    ended |= token[:, 0] == eos_token
                out = torch.cat((out, token), dim=1)
                if eos_token is not None and bool(ended.all()):
                    break
        finally:
            self.reset_ttt()
            self.train(was_training)
        out = out[:, t:]
        return out[0] if no_batch else out
