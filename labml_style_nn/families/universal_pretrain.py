r"""
# Universal pre-training on iterated random computation

*Paper:* [Universal pre-training by iterated random computation](https://arxiv.org/abs/2506.20057)
(Bloem, 2025)

Before a model sees any real data it can learn something general: how to predict sequences that
*some* computation produced.  Random tokens alone carry nothing to learn, but random tokens passed
through a randomly initialised network (a crude, random "Turing machine") come out with structure,
and feeding the outputs back through fresh random machines enriches them further.  A model
pre-trained to predict such data learns an approximation of a universal predictor (Solomonoff's
prior weights a sequence by the programs that produce it), and it starts ahead when it is later
fine-tuned on real data.

`UniversalPretrainWrapper` follows the paper's Algorithm 1 with a buffer $B$ of sequences, which
starts as half uniformly random and half constant sequences.  Each call:

1. draws conditions $c$ and, from another draw, random crops $s$ of `seed_length` tokens;
2. lets the random machine $M$ (a `SyntheticDataGenerator`, a randomly initialised LSTM) continue
   $[s; c]$ nearly greedily for `seq_len` tokens, $y = M(s; c)$;
3. writes $y$ back over the conditions' slots of $B$, and refreshes `num_reset` random slots with new
   random and constant sequences (so the buffer never collapses to one pattern);
4. returns the next-token loss of the model on a fresh draw from $B$,

$$\mathcal{L} = -\frac{1}{|T|} \sum_{t \in T} \log p_\theta(x_{t+1} \mid x_{\le t}), \qquad x \sim B.$$

`reset_turing_machine_every=k` draws a new random machine every $k$ calls.

```python
model = TransformerWrapper(num_tokens=256, max_seq_len=512,
                           attn_layers=Decoder(dim=512, depth=4, heads=8))
pretrain = UniversalPretrainWrapper(model, seq_len=512, batch_size=32)
loss = pretrain()        # no data: it makes its own
loss.backward()
```

Shapes: `b` batch, `n` tokens (`seq_len`), `s` seed length, `V` vocabulary, `N` buffer size.

**Differences from x-transformers.**  x-transformers reads the buffer with an indexed copy
(`buffer[indices]`) and then writes the generated and the refreshed sequences into that *copy*, so
its buffer never changes after initialisation (a test shows it); here they are written back into
the buffer, as the algorithm says.  The generator's `generate` is not `torch.compile`d here.
Everything else (the generator's layers and their initialisation, the buffer's start, the sampling
temperature $10^{-4}$) is as there; the generator's forward pass equals x-transformers' with the
same weights.
"""

from __future__ import annotations

from random import randrange, uniform
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..generation.autoregressive import AutoregressiveWrapper


def random_sequences(num_tokens: int, seq_len: int, num_samples_random: int, num_samples_constant: int,
                     shuffle: bool = True, device: Optional[torch.device] = None) -> Tensor:
    """Uniformly random sequences and constant ones (all one random token), shuffled: `(r + c, n)`.

    >>> random_sequences(5, 4, 2, 1).shape
    torch.Size([3, 4])
    """
    if num_samples_random + num_samples_constant < 1:
        raise ValueError("num_samples_random, num_samples_constant: at least one sequence is needed")
    rand = torch.randint(0, num_tokens, (num_samples_random, seq_len))
    const = torch.full((num_samples_constant, seq_len), randrange(num_tokens))
    seqs = torch.cat((rand, const)).to(device)
    return seqs[torch.randperm(seqs.shape[0], device=seqs.device)] if shuffle else seqs


class SyntheticDataGenerator(nn.Module):
    r"""A random recurrent machine: embedding, LSTM (or GRU), output layer with weights scaled by $u \sim U(0, 1.1)$."""

    def __init__(self, dim: int, num_tokens: int, max_seq_len: int = 512, hidden_size: Optional[int] = None,
                 use_gru: bool = False, network_klass=None):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.embed = nn.Embedding(num_tokens, dim)
        hidden_size = dim if hidden_size is None else hidden_size
        if network_klass is None:
            self.net = (nn.GRU if use_gru else nn.LSTM)(dim, hidden_size, batch_first=True)
        else:
            self.net = network_klass(dim, hidden_size)
        self.to_logits = nn.Linear(dim, num_tokens, bias=False)
        self.apply(self.init_)

    @torch.no_grad()
    def init_(self, m: nn.Module) -> None:
        """Scale each linear layer by its own random factor, so machines differ in how sharp they are."""
        if isinstance(m, nn.Linear):
            m.weight *= uniform(0.0, 1.1)

    def reset_(self) -> None:
        """A new random machine: every layer re-initialised."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # type: ignore[operator]
        self.apply(self.init_)

    def forward(self, input: Tensor, hiddens=None):
        """Logits `(b, n, V)` for tokens `(b, n)`, and the recurrent state to continue from."""
        out, hiddens = self.net(self.embed(input), hiddens)
        return self.to_logits(out), hiddens

    @torch.no_grad()
    def generate(self, length: int, seed: Optional[Tensor] = None, condition: Optional[Tensor] = None,
                 temperature: float = 1e-4) -> Tensor:
        """Continue `[seed; condition]` by `length` sampled tokens; the last `max_seq_len` tokens `(b, n)`."""
        prefix = [t for t in (seed, condition) if t is not None]
        if not prefix:
            raise ValueError("seed, condition: give at least one of them")
        seq = torch.cat(prefix, dim=-1)
        inp, hiddens, new = seq, None, []
        for _ in range(length):
            logits, hiddens = self(inp, hiddens)
            # Nearly greedy: $x \sim \operatorname{softmax}(z / 10^{-4})$
            inp = torch.multinomial((logits[:, -1] / temperature).softmax(dim=-1), 1)  # (b, 1)
            new.append(inp)
        return torch.cat((seq, *new), dim=-1)[:, -self.max_seq_len:]


class UniversalPretrainWrapper(nn.Module):
    """Next-token loss of a causal `TransformerWrapper` on data that random machines make from a buffer."""

    step: Tensor
    synth_data_buffer: Tensor
    data_generator: Any  # a module with `generate(length, seed=, condition=)` and `reset_()`

    def __init__(self, model: nn.Module, data_generator: Optional[nn.Module] = None,
                 buffer_size: Optional[int] = None, num_reset: int = 20, batch_size: int = 32, seq_len: int = 512,
                 seed_length: int = 8, reset_turing_machine_every: int = 0, keep_buffer_on_cpu: bool = False):
        super().__init__()
        attn_layers = getattr(model, "attn_layers", None)
        if attn_layers is None or not getattr(attn_layers, "causal", False):
            raise ValueError("model: expected a TransformerWrapper with a causal stack (a Decoder)")
        buffer_size = batch_size * 20 if buffer_size is None else buffer_size
        if buffer_size <= batch_size:
            raise ValueError(f"buffer_size: must be greater than batch_size ({batch_size}), got {buffer_size}")
        if num_reset < 0 or num_reset % 2:
            raise ValueError(f"num_reset: expected an even number >= 0 (half random, half constant), got {num_reset}")
        if not 0 < seed_length < seq_len:
            raise ValueError(f"seed_length: expected 0 < seed_length < seq_len ({seq_len}), got {seed_length}")
        self.model = model
        self.ar_wrapped = AutoregressiveWrapper(model)
        self.num_tokens: int = model.num_tokens  # type: ignore[assignment]
        if data_generator is None:
            data_generator = SyntheticDataGenerator(num_tokens=self.num_tokens, dim=attn_layers.dim,
                                                    max_seq_len=seq_len)
        self.data_generator = data_generator
        self.seq_len, self.seed_length, self.batch_size = seq_len, seed_length, batch_size
        self.buffer_size, self.num_reset = buffer_size, num_reset
        self.reset_turing_machine_every = reset_turing_machine_every
        buffer = random_sequences(self.num_tokens, seq_len, buffer_size // 2, buffer_size - buffer_size // 2)
        if keep_buffer_on_cpu:
            self.synth_data_buffer = buffer
        else:
            self.register_buffer("synth_data_buffer", buffer)
        self.register_buffer("step", torch.tensor(0))

    @property
    def device(self) -> torch.device:
        return self.step.device

    def _draw(self, size: Optional[int] = None) -> Tensor:
        """Indices of `size` distinct buffer slots."""
        return torch.randperm(self.buffer_size)[:self.batch_size if size is None else size]

    def forward(self) -> Tensor:
        """One step of Algorithm 1: enrich the buffer, then the model's next-token loss on a draw from it."""
        buffer = self.synth_data_buffer
        cond_idx = self._draw()
        conditions = buffer[cond_idx.to(buffer.device)].to(self.device)  # (b, n)
        # Seeds: a random crop of `seed_length` tokens from other buffer sequences.
        seeds = buffer[self._draw().to(buffer.device)].to(self.device)
        offset = torch.randint(0, self.seq_len - self.seed_length, (self.batch_size, 1), device=self.device)
        seeds = seeds.gather(1, offset + torch.arange(self.seed_length, device=self.device))  # (b, s)
        # $y = M(s; c)$
        generated = self.data_generator.generate(self.seq_len, condition=conditions, seed=seeds)  # (b, n)
        self.step.add_(1)
        if self.reset_turing_machine_every > 0 and int(self.step) % self.reset_turing_machine_every == 0:
            self.data_generator.reset_()
        with torch.no_grad():
            if self.num_reset > 0:
                fresh = random_sequences(self.num_tokens, self.seq_len, self.num_reset // 2, self.num_reset // 2)
                buffer[self._draw(self.num_reset).to(buffer.device)] = fresh.to(buffer)
            # The enriched sequences take the conditions' places.
            buffer[cond_idx.to(buffer.device)] = generated.to(buffer)
        data = buffer[self._draw().to(buffer.device)].to(self.device)
        return self.ar_wrapped(data)
