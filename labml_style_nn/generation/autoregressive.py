r"""
# Autoregressive training and generation

A causal language model predicts each token from the ones before it.  Training is one forward pass:
feed $x_{1..n-1}$ and score the predictions against $x_{2..n}$,

$$\mathcal{L} = -\frac{1}{|T|} \sum_{t \in T} \log p_\theta(x_{t+1} \mid x_{\le t}),$$

where $T$ are the positions whose target is neither padding (`mask`) nor `ignore_index`.

Generation repeats: run the model on the prefix, turn the last position's logits into a
distribution (temperature, then a filter from [sampling](sampling.py)), sample a token, append it:

$$x_{t+1} \sim \operatorname{softmax}\big(f(z_t / T)\big), \qquad z_t = \text{logits at position } t$$

With `cache_kv=True` (the default) the first step runs the whole prompt and every later step feeds
only the new token, reusing the keys and values of everything before it from a cache preallocated
for the whole call ([kv_cache](kv_cache.py)).  The output tokens live in one preallocated buffer too:
a step writes one column, nothing is concatenated.  Only the last position's logits are sampled, so
the prompt pass, and every step that reruns its prefix (no cache, Transformer-XL rolling, the
Feedback Transformer with windows), runs the output layer on that position alone when the head
works position by position (a linear or tied head; the `transformers` way;
[head positions](head_positions.md)): with a 32000-token vocabulary the head over a 32-token prompt
costs as much as three decoding steps.

**Prompts of different lengths** are left-padded to a common length $n$, so that every row's last
prompt token sits in the same column and all rows decode in lockstep.  The padding is masked out
as keys; a row that starts at column $s_b$ counts its absolute positions from there ($t - s_b$), and
relative schemes (rotary, ALiBi, T5) only see differences of positions, which padding does not
change.  So a short prompt batched with a long one decodes as it would alone.  Where that cannot
hold (memory tokens with a relative scheme sit at a distance that the padding changes; position
infused attention; rotary queries against persistent memory slots, which carry no position;
Transformer-XL rolling), rows are decoded in groups of equal prompt length.

**End of sequence**: each row stops at its own `eos_token`; what it would generate afterwards is
replaced by `pad_value`, and the loop ends when every row has ended.

**Beyond `max_seq_len`**: a Transformer-XL model (`max_mem_len > 0`) keeps going by rolling: the
full segment is committed to the memories and the next steps see memories plus the new window.
A model with learned absolute positions sees the last `max_seq_len` tokens.  Both rerun their
window at each step, without the cache.  A sliding-window model (`attn_max_attend_past=W`) keeps a
[rolling cache](rolling_cache.md) of $W + 1$ keys per layer, and `cache_kv=sink_cache(...)`
streams a full-attention model with a bounded [attention-sink cache](attention_sinks.md).

**The Feedback Transformer** (`feedback/`) is its own cache: with `seq_len=1` (the paper's
recurrence) its memory is the complete state, so each step feeds the new token and the memory
returned by the previous call.  With windows ($w > 1$) a one-token call would change the windows,
so every step reruns the whole sequence.

**Faster decoding**: `compile=True` runs every step after the prompt as one compiled graph on a
[static cache](static_cache.md), sampling included ([compiled decoding](compiled_decoding.md); same
tokens as eager decoding); `draft=` a smaller model over the
same vocabulary decodes [speculatively](speculative.md): the draft guesses `num_speculative`
tokens, one pass of this model checks them, and the output is distributed exactly as this model's.

Shapes: `b` batch, `n` prompt tokens, `t` tokens so far, `V` vocabulary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_cache_kv, check_generate_keywords, check_mask, check_tensor
from ..moe.mixture import moe_aux_loss
from ..wrapping.looped import looped_loss
from ..wrapping.output_heads import next_embedding_loss
from .auxiliary_losses import total_auxiliary_loss, wants_intermediates
from .beam_search import beam_search, random_key_mask
from .compiled_decoding import decode_static
from .contrastive import ContrastiveNetwork, check_amateurs
from .head_positions import last_logits
from .intermediates import _SharedCache, snapshot
from .kv_cache import LayersCache
from .rolling_cache import RollingLayersCache
from .sampling import identity, resolve_filter, top_k
from .speculative import SpeculativeStats, speculative_decode
from .static_cache import StaticLayersCache, round_up, static_blocker

if TYPE_CHECKING:
    from ..feedback.feedback_transformer import FeedbackTransformer
    from ..models.layers import AttentionLayers

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def left_pad(prompts: Union[Tensor, Sequence[Tensor]], pad_value: int) -> tuple[Tensor, Optional[Tensor]]:
    """Stack prompts `(b, n)` (or a list of 1-D tensors) right-aligned; returns `(tokens, starts)`.

    >>> left_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_value=0)
    (tensor([[5, 6, 7],
            [0, 0, 8]]), tensor([0, 2]))
    """
    if torch.is_tensor(prompts):
        if prompts.dim() == 1:
            prompts = prompts[None]
        if prompts.dim() != 2 or prompts.shape[1] == 0 or prompts.is_floating_point() or prompts.dtype == torch.bool:
            raise ValueError(f"prompts: expected integer token ids (batch, n) with n >= 1, got "
                             f"{prompts.dtype} of shape {tuple(prompts.shape)}")
        return prompts, None
    if not isinstance(prompts, (list, tuple)) or not prompts or \
            any(not torch.is_tensor(p) or p.dim() != 1 or p.numel() == 0 for p in prompts):
        raise ValueError("prompts: expected a (batch, n) tensor or a non-empty list of non-empty 1-D tensors")
    lengths = [p.shape[0] for p in prompts]
    n = max(lengths)
    tokens = prompts[0].new_full((len(prompts), n), pad_value)
    for row, p in enumerate(prompts):
        tokens[row, n - p.shape[0]:] = p
    starts = torch.tensor([n - length for length in lengths], device=tokens.device)  # (b,)
    return tokens, (starts if any(lengths[0] != length for length in lengths) else None)


def _split_right_padded(prompts, prompt_lens: Tensor) -> list[Tensor]:
    """x-transformers' `prompt_lens`: rows of `prompts` `(b, n)` are right-padded to length `n`."""
    if not torch.is_tensor(prompts) or prompts.dim() != 2 or not torch.is_tensor(prompt_lens) \
            or tuple(prompt_lens.shape) != (prompts.shape[0],):
        raise ValueError("prompt_lens: expected a (batch,) tensor of lengths for (batch, n) prompts")
    return [row[:int(length)] for row, length in zip(prompts, prompt_lens, strict=True)]


class AutoregressiveWrapper(nn.Module):
    """Next-token loss and sampling around a causal `TransformerWrapper`.

    Args:
        net: the causal `TransformerWrapper` (or `FeedbackTransformer`).
        ignore_index: target value the loss skips.
        pad_value: token that fills ended rows and left padding.
        mask_prob: in training, the fraction of keys hidden at random from every query (the first
            token never), as in [Tay et al., 2022](https://arxiv.org/abs/2210.13432).
        add_attn_z_loss: add the network's attention z-loss to the loss.
        next_embed_loss_weight: weight of the next-embedding loss of `add_continuous_pred_head`.
        looped_loss_threshold_exit: for a looped network ([looped](../wrapping/looped.md)), the loss gain
            below which the exit gate learns to stop.
        looped_loss_slope: the steepness of the exit gate's target.
        looped_exit_loss_weight: the weight of the exit gate's loss.
    """

    def __init__(self, net: nn.Module, ignore_index: int = -100, pad_value: int = 0, mask_prob: float = 0.0,
                 add_attn_z_loss: bool = False, next_embed_loss_weight: float = 0.1,
                 looped_loss_threshold_exit: float = 0.05, looped_loss_slope: float = 50.0,
                 looped_exit_loss_weight: float = 1.0):
        super().__init__()
        self.net, self.ignore_index, self.pad_value = net, ignore_index, pad_value
        # The Feedback Transformer has no `max_seq_len`: its memory carries any length.
        self.max_seq_len: Optional[int] = getattr(net, "max_seq_len", None)
        self.feedback = hasattr(net, "mem_len") and hasattr(net, "memory") and not hasattr(net, "attn_layers")
        if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)) or not 0 <= mask_prob < 1:
            raise ValueError(f"mask_prob: expected a fraction in [0, 1), got {mask_prob!r}")
        self.mask_prob, self.add_attn_z_loss, self.next_embed_loss_weight = mask_prob, add_attn_z_loss, next_embed_loss_weight
        self.looped_loss = dict(threshold=looped_loss_threshold_exit, slope=looped_loss_slope,
                                exit_weight=looped_exit_loss_weight)
        # Counts of the last call with a draft model (speculative decoding).
        self.speculative_stats: Optional[SpeculativeStats] = None
        self._restrict, self._last_cache = True, None  # set per `generate` call

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, return_outputs: bool = False,
                prepend_embeds: Optional[Tensor] = None, lens: Optional[Tensor] = None, **kwargs):
        """The mean next-token cross-entropy of `x` `(b, n)` (plus any mixture-of-experts auxiliary
        losses); `mask` `(b, n)` is true for real tokens.

        `lens` `(b,)` gives each row's length instead of a mask.  The network's
        [auxiliary losses](auxiliary_losses.md) are added; `return_outputs=True` returns
        `(loss, (logits, intermediates))` as x-transformers does.
        """
        check_tensor("x", x, "(batch, n) of token ids, n >= 2", ndim=2, kind="int")
        if x.shape[1] < 2:
            raise ValueError(f"x: expected token ids (batch, n) with n >= 2, got shape {tuple(x.shape)}")
        check_mask("mask", mask, tuple(x.shape), "(batch, n), true for real tokens")
        if lens is not None:
            by_len = torch.arange(x.shape[1], device=x.device)[None] < lens[:, None].to(x.device)  # (b, n)
            mask = by_len if mask is None else mask & by_len
        # A target of `ignore_index` in the input is read as padding (x-transformers' convention).
        x = x.masked_fill(x == self.ignore_index, self.pad_value) if self.ignore_index < 0 else x
        inp, target = x[:, :-1], x[:, 1:]
        if mask is not None:
            # A padded target is not predicted.
            target = target.masked_fill(~mask[:, 1:], self.ignore_index)
            kwargs["mask"] = mask[:, :-1]
        if self.mask_prob > 0 and self.training:
            kwargs["mask"] = random_key_mask(inp, self.mask_prob, kwargs.get("mask"))
        if prepend_embeds is not None:
            kwargs["prepend_embeds"] = prepend_embeds
        intermediates = None
        continuous = bool(getattr(self.net, "add_continuous_pred_head", False))
        looped = bool(getattr(self.net, "looped", False))
        if looped:
            kwargs["looped_pred_all_logits"] = True  # every loop's logits, for the looped loss
        if wants_intermediates(self.net, self.add_attn_z_loss, return_outputs) or looped:
            if self.add_attn_z_loss:
                kwargs["return_attn_z_loss"] = True
            if continuous:
                kwargs["return_next_embed_pred"] = True
            out, intermediates = self.net(inp, return_intermediates=True, **kwargs)
        else:
            out = self.net(inp, **kwargs)
        logits, next_embed = (out[0], out[1]) if continuous and intermediates is not None else (out, None)
        if prepend_embeds is not None:
            logits = logits[:, prepend_embeds.shape[1]:]  # (b, n - 1, V)
        # A mixture of softmaxes returns log-probabilities: the loss is then their negative.
        loss_fn = F.nll_loss if getattr(self.net, "output_is_log_prob", False) else F.cross_entropy
        if looped:
            # Every loop's loss, weighted by the exit distribution, and the exit gate's (wrapping/looped.py)
            p = prepend_embeds.shape[1] if prepend_embeds is not None else 0
            assert intermediates is not None  # asked for above
            loss = looped_loss(torch.stack(intermediates.exit_logits, dim=1)[:, :, p:],
                               torch.stack(intermediates.all_pred_logits, dim=1)[:, :, p:], target,
                               self.ignore_index, log_probs=loss_fn is F.nll_loss, **self.looped_loss)
        else:
            loss = loss_fn(logits.transpose(1, 2), target, ignore_index=self.ignore_index)
        if next_embed is not None:
            pred, init_embeds = next_embed
            p = prepend_embeds.shape[1] if prepend_embeds is not None else 0
            loss = loss + next_embedding_loss(pred[:, p:], init_embeds[:, p:], (target != self.ignore_index)[:, :-1]) \
                * self.next_embed_loss_weight
        aux = total_auxiliary_loss(intermediates) if intermediates is not None else None
        if aux is not None:
            loss = loss + aux
        # Mixture-of-experts layers add their balance and z-losses of this pass (moe/mixture.py)
        moe_aux = moe_aux_loss(self.net)
        if moe_aux is not None:
            loss = loss + moe_aux
        return (loss, (logits, intermediates)) if return_outputs else loss

    def beam_search(self, prompts: Tensor, seq_len: int, beams: int = 4, return_beams_and_scores: bool = False,
                    eos_token: Optional[int] = None, temperature: float = 1.0, stochastic: bool = False,
                    prompt_lens: Optional[Tensor] = None, filter_logits_fn: Union[Callable, str] = identity,
                    restrict_to_max_seq_len: bool = True, filter_kwargs: Optional[dict] = None,
                    cache_kv: bool = True, **kwargs):
        """The most likely continuations of `prompts` ([beam search](beam_search.md)), x-transformers' keywords."""
        return beam_search(self, prompts, seq_len, beams=beams, return_beams_and_scores=return_beams_and_scores,
                           eos_token=eos_token, temperature=temperature, stochastic=stochastic,
                           prompt_lens=prompt_lens, filter_fn=resolve_filter(filter_logits_fn),
                           filter_kwargs=dict(filter_kwargs or {}), cache_kv=cache_kv,
                           restrict_to_max_seq_len=restrict_to_max_seq_len, kwargs=kwargs)

    #
    # ## Generation
    @torch.no_grad()
    def generate(self, prompts: Union[Tensor, Sequence[Tensor]], seq_len: int, temperature: float = 1.0,
                 filter_logits_fn: Union[Callable, str] = top_k, filter_kwargs: Optional[dict] = None,
                 eos_token: Optional[int] = None, cache_kv: Union[bool, Callable] = True,
                 compile: Union[bool, dict] = False, draft: Optional[nn.Module] = None, num_speculative: int = 4,
                 prompt_lens: Optional[Tensor] = None, restrict_to_max_seq_len: bool = True,
                 return_intermediates: bool = False, amateur_model: Optional[Any] = None,
                 contrastive_decode_kwargs: Optional[Union[dict, Sequence[dict]]] = None, **kwargs):
        """Sample `seq_len` tokens after `prompts`; returns only the new tokens `(b, seq_len)`.

        `prompts` is a `(b, n)` tensor or a list of 1-D tensors of different lengths; a single `(n,)`
        prompt gives `(seq_len,)` tokens, as in x-transformers.  `temperature=0` decodes greedily; other keywords (e.g. `context=`) go to the network.
        `cache_kv` may also be a factory `(layers, batch) -> cache` for a bounded cache, e.g.
        `sink_cache(sinks=4, cache_len=256)` to stream past `max_seq_len`.
        `compile=True` runs each step after the prompt, sampling included, as one compiled graph on a
        [static cache](static_cache.md) ([compiled decoding](compiled_decoding.md); a dict is passed on
        to `torch.compile`, e.g. `{"backend": "aot_eager"}`; the default is Inductor with
        `cpp_wrapper` on the CPU, `mode="reduce-overhead"` on CUDA).
        `draft=` a smaller model over the same vocabulary decodes [speculatively](speculative.md),
        `num_speculative` guesses per target pass; `self.speculative_stats` then holds its counts
        (with `compile=True` the draft's steps and the target's passes are compiled).
        x-transformers' keywords: `prompt_lens` `(b,)` gives the lengths of right-padded `prompts`;
        `restrict_to_max_seq_len=False` feeds a model with learned positions more than `max_seq_len`
        tokens (an error, as there); `return_intermediates=True` also returns the cache as
        [intermediates](intermediates.md), `(tokens, intermediates)`; `amateur_model` (one or a tuple)
        decodes [contrastively](contrastive.md) with `contrastive_decode_kwargs` (`alpha`, `beta`).
        """
        one_prompt = torch.is_tensor(prompts) and prompts.dim() == 1  # `(n,)`: no batch dimension
        if prompt_lens is not None:
            prompts = _split_right_padded(prompts, prompt_lens)
        self._restrict = restrict_to_max_seq_len
        self._last_cache = None
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"seq_len: expected a non-negative integer, got {seq_len!r}")
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
        tokens, starts = left_pad(prompts, self.pad_value)
        filter_fn, filter_kwargs = resolve_filter(filter_logits_fn), dict(filter_kwargs or {})
        check_generate_keywords(self.generate, self.net.forward, kwargs, filter_fn, filter_kwargs)
        if getattr(self.net, "looped", False):
            kwargs.setdefault("looped_inference", True)  # exit early, as x-transformers' generate does
        check_cache_kv(cache_kv)
        contrastive = None
        if amateur_model is not None:
            if draft is not None or compile:
                raise ValueError("amateur_model cannot be combined with draft or compile")
            # The filters are off and the steps uncached (contrastive.py).
            contrastive = check_amateurs(amateur_model, contrastive_decode_kwargs or {"alpha": 0.1, "beta": 0.5})
            filter_fn, cache_kv = identity, False
        elif contrastive_decode_kwargs is not None:
            raise ValueError("contrastive_decode_kwargs: only meaningful with amateur_model")
        compile_options = self._compile_options(compile, tokens.device)
        if draft is not None:
            draft = self._check_draft(draft, num_speculative, compile_options, tokens.shape[1] + seq_len)

        def sample(logits: Tensor, noise: Optional[Tensor] = None) -> Tensor:  # (b, V) -> (b,)
            if temperature == 0:
                return logits.argmax(dim=-1)
            probs = filter_fn(logits / temperature, **filter_kwargs).softmax(dim=-1)  # (b, V)
            # Exponential race: $\operatorname{argmax}_i\, p_i / E_i$ with $E_i \sim \operatorname{Exp}(1)$ picks $i$
            # with probability $p_i$, in three kernels (a compiled step draws `noise` before it runs).
            return (probs / (torch.empty_like(probs).exponential_() if noise is None else noise)).argmax(dim=-1)

        was_training, expert = self.net.training, self.net
        self.net.eval()
        if contrastive is not None:
            for amateur in contrastive[0]:
                amateur.eval()
            # Decoding reads its network from `self.net`: the contrastive scores stand in for the expert's logits.
            self.net = ContrastiveNetwork(expert, *contrastive)
        try:
            if draft is not None:
                self.speculative_stats = SpeculativeStats()
                probs = None if temperature == 0 else \
                    lambda logits: filter_fn(logits / temperature, **filter_kwargs).softmax(dim=-1)

                def decode(toks, st):
                    return self._speculate(draft, toks, st, seq_len, num_speculative, probs, eos_token, kwargs,
                                           compile_options)
            else:
                def decode(toks, st):
                    return self._decode(toks, st, seq_len, sample, eos_token, cache_kv, kwargs, compile_options,
                                        draws=temperature != 0)
            if starts is not None and not self._left_padding_exact(tokens.shape[1] + seq_len):
                out = self._decode_groups(prompts, seq_len, decode)
            else:
                out = decode(tokens, starts)
            if one_prompt:
                out = out[0]
            if return_intermediates:
                return out, self._intermediates()
            return out
        finally:
            if self.net is not expert:
                # (only where contrastive search wrapped it: setting a submodule counts as a registration,
                # which makes mixture-of-experts layers build their inference steps anew)
                self.net = expert
            self.net.train(was_training)

    #
    # ### The decoding loop
    #
    # `seq` `(b, n + seq_len)` holds prompt and output; step $i$ writes column $n + i$.
    def _decode(self, tokens, starts, seq_len, sample, eos_token, cache_kv, kwargs, compile_options=None,
                draws: bool = True) -> Tensor:
        b, n = tokens.shape
        total = n + seq_len
        seq = tokens.new_full((b, total), self.pad_value)
        seq[:, :n] = tokens
        mask = None if starts is None else torch.arange(total, device=seq.device)[None] >= starts[:, None]
        pos_kwargs = {} if starts is None else {"seq_start_pos": starts}
        ended = torch.zeros(b, dtype=torch.bool, device=seq.device)
        roll = self._rolls(total)
        cache, memory = None, None
        blocker = None if self.feedback else self._cache_blocker(total)
        # The Feedback Transformer's window: how many tokens one call of it processes in parallel.
        window: int = getattr(self.net, "seq_len", 1) if self.feedback else 1
        if self.feedback and window > 1:
            _warn_once("generate: a Feedback Transformer with windows (seq_len > 1) reruns the whole "
                       "sequence at each step, since a one-token call would change its windows")
        elif cache_kv and not self.feedback and blocker is None:
            # Embeddings prepended to the prompt (`prepend_embeds=`) take positions in the cache too.
            prepended = kwargs.get("prepend_embeds")
            cache = self._last_cache = self._new_cache(
                cache_kv, b, total + (prepended.shape[1] if torch.is_tensor(prepended) else 0))
            if compile_options is not None and cache_kv is True:
                static = self._static_cache(cache, b, total)
                if static is not None:
                    # Every step after the prompt compiled, sampling included (static_cache.py).
                    return decode_static(self.net, seq, n, static, compile_options, sample, draws, eos_token,
                                         self.pad_value, {"mask": None if mask is None else mask[:, :n]},
                                         {**pos_kwargs, **kwargs})
        elif cache_kv and not self.feedback:
            _warn_once(f"generate: {type(self.net).__name__} cannot use the key/value cache here "
                       f"({blocker}); decoding without it")
        mems, seg = None, 0  # Transformer-XL: memories and the first column of the current segment
        token = seq[:, n - 1]
        for t in range(n, total):
            if self.feedback and window == 1:
                # Token by token, the feedback memory is the whole state: carry it from call to call.
                # The prompt's final hidden states, the head on the last one only.
                inp = seq[:, :n] if t == n else seq[:, t - 1:t]
                h, memory = self.net(inp, memory=memory, return_memory=True, return_embeddings=True, **kwargs)
                logits = cast("FeedbackTransformer", self.net).logits(h[:, -1:])[:, -1]  # (b, V)
            elif self.feedback:
                h = self.net(seq[:, :t], return_embeddings=True, **kwargs)[:, -1:]  # (b, 1, D)
                logits = cast("FeedbackTransformer", self.net).logits(h)[:, -1]  # (b, V)
            elif cache is not None:
                # The first step runs the prompt; later steps only the token just written.
                first = t == n
                step_kwargs: dict[str, Any] = dict(
                    cache=cache, mask=mask[:, :n] if first and mask is not None else None, **pos_kwargs, **kwargs)
                if first:
                    # Only the last position is sampled: the head runs on it alone (head_positions.py).
                    logits = last_logits(self.net, seq[:, :n], **step_kwargs)[:, -1]  # (b, V)
                else:
                    logits = self.net(token[:, None], **step_kwargs)[:, -1]  # (b, V)
            elif roll:
                assert self.max_seq_len is not None  # `_rolls` checked it
                # Commit all but the last token of an overfull segment to the memories.
                while t - seg > self.max_seq_len:
                    end = min(seg + self.max_seq_len, t - 1)
                    # (Its logits are not read: the final hidden states skip the output layer.)
                    _, mems = self.net(seq[:, seg:end], mems=mems, return_mems=True, return_embeddings=True, **kwargs)
                    seg = end
                logits = last_logits(self.net, seq[:, seg:t], mems=mems, **kwargs)[:, -1]
            else:
                # Without a cache, the whole prefix (or the last `max_seq_len` tokens of it), the head
                # on its last position.
                lo = max(0, t - self.max_seq_len) \
                    if self._learned_positions() and self.max_seq_len is not None and self._restrict else 0
                logits = last_logits(self.net, seq[:, lo:t], mask=None if mask is None else mask[:, lo:t],
                                     **({} if starts is None else {"seq_start_pos": (starts - lo).clamp(min=0)}),
                                     **kwargs)[:, -1]
            token = sample(logits)  # (b,)
            if eos_token is not None:
                # Rows that already ended are padded; a row ends at its first eos.
                token = token.masked_fill(ended, self.pad_value)
                ended |= token == eos_token
            seq[:, t] = token
            if eos_token is not None and bool(ended.all()):
                break
        return seq[:, n:]

    def _decode_groups(self, prompts, seq_len, decode) -> Tensor:
        """Decode rows of equal prompt length together, when left padding would not be exact."""
        out = prompts[0].new_full((len(prompts), seq_len), self.pad_value)
        for length in sorted({p.shape[0] for p in prompts}):
            rows = [i for i, p in enumerate(prompts) if p.shape[0] == length]
            group = torch.stack([prompts[i] for i in rows])
            out[rows] = decode(group, None)
        return out

    #
    # ### Fast decoding: a compiled static step, a draft model
    @staticmethod
    def _compile_options(compile, device) -> Optional[dict]:
        """`torch.compile` keywords for `compile=`; `None` decodes eagerly."""
        if compile is False:
            return None
        if compile is True:
            # On CUDA the static step is also captured as a CUDA graph; on the CPU Inductor's C++
            # wrapper calls the kernels without Python in between (static_cache.py).
            return {"mode": "reduce-overhead"} if device.type == "cuda" else {"options": {"cpp_wrapper": True}}
        if not isinstance(compile, dict):
            raise ValueError(f"compile: expected a bool or a dict of torch.compile keywords, got {compile!r}")
        return compile

    def _static_cache(self, cache, b: int, total: int):
        """The cache of a compiled decode (a sliding window's rolling cache becomes static after the
        prompt), or `None` (decoded eagerly) when the stack cannot use one."""
        layers = self._stack()
        blocker = static_blocker(layers, window=type(cache) is RollingLayersCache) \
            if type(cache) in (LayersCache, RollingLayersCache) else "its cache is not the growing one"
        if blocker is not None:
            _warn_once(f"generate: compile=True needs a static cache, and {blocker}; decoding eagerly")
            return None
        if type(cache) is RollingLayersCache:
            return cache
        return StaticLayersCache(layers, b, round_up(total + self._num_memory_tokens()))

    def _check_draft(self, draft: nn.Module, num_speculative: int, compile_options, total: int) -> nn.Module:
        """The draft's network, after checking that speculative decoding can run with it."""
        net = draft.net if isinstance(draft, AutoregressiveWrapper) else draft
        if isinstance(num_speculative, bool) or not isinstance(num_speculative, int) or num_speculative < 1:
            raise ValueError(f"num_speculative: expected a positive integer, got {num_speculative!r}")
        if getattr(net, "num_tokens", None) != getattr(self.net, "num_tokens", None):
            raise ValueError(f"draft: expected a TransformerWrapper over the target's {self.net.num_tokens}-token "
                             f"vocabulary, got {type(net).__name__} with num_tokens={getattr(net, 'num_tokens', None)}")
        for name, wrapper in (("generate", self), ("draft", AutoregressiveWrapper(net))):
            blocker = wrapper._cache_blocker(total) if not wrapper.feedback else "it has no layer stack to cache"
            if blocker is None and any(block.shift is not None for block in wrapper._stack().blocks):
                blocker = "token shift keeps inputs that a rejected guess cannot take back"
            if blocker is not None:
                raise ValueError(f"{name}: speculative decoding needs a key/value cache that can be rewound, "
                                 f"and {type(wrapper.net).__name__} {blocker}")
        blocker = static_blocker(net.attn_layers) if compile_options is not None else None
        if blocker is not None:
            raise ValueError(f"compile: the draft's step needs a static cache, and {blocker}")
        return net

    def _speculate(self, draft, tokens, starts, seq_len, num_speculative, probs, eos_token, kwargs,
                   compile_options=None) -> Tensor:
        was_training = draft.training
        draft.eval()
        try:
            out, stats = speculative_decode(
                self.net, draft, tokens, starts, seq_len=seq_len, num_speculative=num_speculative, probs=probs,
                eos_token=eos_token, pad_value=self.pad_value, kwargs=kwargs, compile_options=compile_options,
                num_memory_tokens=(self._num_memory_tokens(), AutoregressiveWrapper(draft)._num_memory_tokens()))
        finally:
            draft.train(was_training)
        for name in ("rounds", "proposed", "accepted", "emitted"):
            setattr(self.speculative_stats, name, getattr(self.speculative_stats, name) + getattr(stats, name))
        return out

    #
    # ### What the network supports
    def _new_cache(self, cache_kv, b: int, total: int):
        """The cache of one call: `cache_kv(layers, b)` when it is a factory (e.g. `sink_cache`),
        the rolling window cache of a sliding-window stack, else the growing cache of `total` tokens."""
        layers = self._stack()
        if callable(cache_kv):
            if self._num_memory_tokens():
                raise ValueError("cache_kv: a bounded cache would evict the memory tokens; use cache_kv=True")
            return cache_kv(layers, b)
        if layers.options.attn.max_attend_past is not None and not self._num_memory_tokens():
            # Sliding window: $W + 1$ slots per layer, overwritten in place (rolling_cache.py).
            return RollingLayersCache.for_window(layers, b)
        return LayersCache(layers, b, total + self._num_memory_tokens())

    def _intermediates(self):
        """The last generation's cache in x-transformers' spelling (`None` where it used none)."""
        cache = getattr(self, "_last_cache", None)
        if type(cache) is not LayersCache:
            return None
        shared = _SharedCache(cache, self._num_memory_tokens())
        shared.write_starts.append(0)
        return snapshot(shared)

    def _stack(self) -> AttentionLayers:
        """The network's layer stack, where `_cache_blocker` found one (this package's `AttentionLayers`)."""
        return cast("AttentionLayers", self.net.attn_layers)

    def _num_memory_tokens(self) -> int:
        mt = getattr(self.net, "memory_tokens", None)
        return mt.num if mt is not None else 0

    def _learned_positions(self) -> bool:
        return bool(getattr(self.net, "learned_positions", False))

    def _rolls(self, total: int) -> bool:
        """Transformer-XL models roll their memories once the sequence outgrows `max_seq_len`."""
        return not self.feedback and getattr(self.net, "max_mem_len", 0) > 0 and getattr(self.net, "pos_emb", None) is None \
            and self.max_seq_len is not None and total > self.max_seq_len

    def _cache_blocker(self, total: int) -> Optional[str]:
        layers = getattr(self.net, "attn_layers", None)
        if layers is None or not hasattr(layers, "blocks"):
            return "it has no layer stack to cache"
        if not layers.causal:
            return "its stack is not causal, so earlier tokens would see later ones"
        if getattr(self.net, "memory_tokens_interspersed_every", None) is not None:
            return "its interspersed memory tokens move with the block boundaries"
        if self._rolls(total):
            return "Transformer-XL rolling reruns each segment with its memories"
        if getattr(self.net, "looped", False):
            return "every loop of the looped model reruns the whole sequence"
        if getattr(layers.options, "mv_split_residual", False):
            return "mv_split_residual's causal token mean reads every earlier token's stream"
        blocked = next((b.fn.cache_blocker for b in layers.blocks if getattr(b.fn, "cache_blocker", None)), None)
        if blocked is not None:
            return blocked
        if layers.options.attn.max_attend_past is not None and any(getattr(b.fn, "stateful", False)
                                                                  for b in layers.blocks):
            return "a rolling cache keeps no running state for the layers that carry one"
        if self._learned_positions() and self.max_seq_len is not None and total > self.max_seq_len:
            return "learned absolute positions end at max_seq_len, so the window slides"
        return None

    def _left_padding_exact(self, total: int) -> bool:
        """Whether left padding leaves every row's decode unchanged (see the page introduction)."""
        layers = getattr(self.net, "attn_layers", None)
        if layers is None or self._rolls(total) or getattr(layers, "pia", None) is not None:
            return False
        relative = layers.rotary is not None or layers.rel_pos is not None or layers.alibi is not None
        # Rotary queries meet unrotated persistent slots: a score that depends on the absolute position.
        slots = layers.rotary is not None and any(getattr(b.fn, "memory_kv", None) is not None for b in layers.blocks)
        return not (relative and self._num_memory_tokens()) and not slots
