r"""
# xVal: numbers as one scaled token

*Paper:* [xVal: A Continuous Number Encoding for Large Language Models](https://arxiv.org/abs/2310.02989)
(Golkar et al., 2023)

Language models split numbers into digit tokens, which makes arithmetic and regression on numbers
awkward: $3.14$ and $3.15$ share no structure beyond their digits.  xVal writes every number as one
special token `[NUM]` and multiplies that token's embedding by the number's value.  The embedding
of token $t$ is

$$e_t = \begin{cases} x^{\text{num}}_t \cdot E[\texttt{[NUM]}] & x_t = \texttt{[NUM]} \\ E[x_t] & \text{otherwise} \end{cases}$$

so nearby values get nearby embeddings and the map from number to embedding is continuous.  A
second head regresses the value of the next number, $\hat v_t = w^\top h_t + c$, trained with a
squared error where the next token is `[NUM]`, beside the usual cross-entropy:

$$\mathcal{L} = \operatorname{CE}(z_t, x_{t+1}) + \lambda\,[x_{t+1} = \texttt{[NUM]}]\,(\hat v_t - x^{\text{num}}_{t+1})^2$$

Generation samples the token; where it is `[NUM]`, the number is the regression head's value.

```python
model = XValTransformerWrapper(num_tokens=4, numerical_token_id=3, max_seq_len=64,
                               attn_layers=Decoder(dim=64, depth=2, heads=4))
wrapper = XValAutoregressiveWrapper(model)
loss = wrapper(ids, nums)                          # ids (b, n), nums (b, n): values where ids == 3
ids, numbers, is_number = wrapper.generate(ids[:, :4], nums[:, :4], 8)
```

**Differences from the paper.**  The paper normalises the numbers into $[-5, 5]$ and applies a
layer norm after the scaling; as in x-transformers, the values are used as given and the scaled
embedding goes straight to the stack.  The embedding, positions and stack are this library's
`TransformerWrapper` (the scaled part arrives through its `sum_embeds`).

Shapes: `b` batch, `n` tokens, `D` width, `V` vocabulary.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation.sampling import resolve_filter, top_k
from ..models.wrappers import TransformerWrapper

LossBreakdown = namedtuple("LossBreakdown", ["cross_entropy_loss", "numerical_mse_loss"])
GenerateReturn = namedtuple("GenerateReturn", ["sampled_token_ids", "sampled_numbers", "is_number_mask"])


class XValTransformerWrapper(nn.Module):
    """Token ids and their numbers in, `(logits, numbers)` out: `(b, n, V)` and `(b, n)`."""

    def __init__(self, *, num_tokens: int, max_seq_len: int, numerical_token_id: int, attn_layers,
                 emb_dim: Optional[int] = None, logits_dim: Optional[int] = None, tie_embedding: bool = False,
                 max_mem_len: int = 0, num_memory_tokens: Optional[int] = None, emb_dropout: float = 0.0,
                 use_abs_pos_emb: Optional[bool] = None, scaled_sinu_pos_emb: bool = False):
        super().__init__()
        if isinstance(numerical_token_id, bool) or not isinstance(numerical_token_id, int) \
                or not 0 <= numerical_token_id < num_tokens:
            raise ValueError(f"numerical_token_id: expected a token id in [0, {num_tokens}), got {numerical_token_id!r}")
        self.net = TransformerWrapper(num_tokens, max_seq_len, attn_layers, emb_dim=emb_dim, max_mem_len=max_mem_len,
                                      num_memory_tokens=num_memory_tokens, emb_dropout=emb_dropout,
                                      use_abs_pos_emb=use_abs_pos_emb, scaled_sinu_pos_emb=scaled_sinu_pos_emb,
                                      return_only_embed=True)
        dim = attn_layers.dim
        self.numerical_token_id, self.max_seq_len, self.dim = numerical_token_id, max_seq_len, dim
        self.attn_layers, self.token_emb = self.net.attn_layers, self.net.token_emb
        self.tie_embedding = tie_embedding
        self.to_logits = None if tie_embedding else nn.Linear(dim, logits_dim or num_tokens)
        # $\hat v_t = w^\top h_t + c$
        self.to_numerical_output = nn.Linear(dim, 1)

    def forward(self, x: Tensor, x_num: Tensor, *, return_embeddings: bool = False, **kwargs):
        """`(logits, numbers)` for ids `x` and values `x_num` `(b, n)` (read where `x` is the number token).

        Other keywords (`mask`, `return_intermediates`, `return_mems`, `return_attn`, `mems`, `pos`,
        `prepend_embeds`, ...) go to the `TransformerWrapper`, whose extra outputs follow."""
        if not torch.is_tensor(x_num) or x_num.shape != x.shape:
            raise ValueError(f"x_num: expected one value per token, shape {tuple(x.shape)}")
        is_number = x == self.numerical_token_id
        # $e_t = v_t\, E[\texttt{[NUM]}]$ where the token is a number: the embedding plus $(v_t - 1) E[x_t]$
        scale = torch.where(is_number, x_num, torch.ones_like(x_num))  # (b, n)
        extra = self.token_emb(x) * (scale - 1)[..., None]
        out = self.net(x, sum_embeds=extra, return_embeddings=True, **kwargs)
        h, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if not return_embeddings:
            if self.to_logits is not None:
                logits = self.to_logits(h)
            else:
                # Tied, scaled by $D^{-1/2}$ as in x-transformers' xVal
                weight = self.net._tied_weight()
                assert weight is not None  # an nn.Embedding
                logits = h @ weight.t() * self.dim ** -0.5
            h = (logits, self.to_numerical_output(h).squeeze(-1))
        return (h, *rest) if rest else h


class XValAutoregressiveWrapper(nn.Module):
    """The xVal loss (cross-entropy plus the numbers' squared error) and generation."""

    def __init__(self, net: XValTransformerWrapper, ignore_index: int = -100, pad_value: int = 0,
                 numerical_loss_weight: float = 1.0):
        super().__init__()
        self.net, self.max_seq_len = net, net.max_seq_len
        self.ignore_index, self.pad_value, self.numerical_loss_weight = ignore_index, pad_value, numerical_loss_weight

    def forward(self, x: Tensor, x_num: Tensor, return_loss_breakdown: bool = False, **kwargs):
        """The mean loss over the predicted positions of `x`, `x_num` `(b, n)`."""
        inp, target = x[:, :-1], x[:, 1:]
        num_inp, num_target = x_num[:, :-1], x_num[:, 1:]
        target_mask = target != self.ignore_index  # (b, n - 1)
        mask = kwargs.get("mask")
        if mask is not None:
            if mask.shape[1] == x.shape[1]:
                target_mask = target_mask & mask[:, 1:]
                kwargs["mask"] = mask[:, :-1]
            else:
                target_mask = target_mask & mask
        logits, num_pred = self.net(inp, num_inp, **kwargs)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none", ignore_index=self.ignore_index)
        # $[x_{t+1} = \texttt{[NUM]}]\,(\hat v_t - v_{t+1})^2$
        is_number = target == self.net.numerical_token_id
        mse = F.mse_loss(num_pred, num_target.masked_fill(~is_number, 0.0), reduction="none")
        mse = mse.masked_fill(~(is_number & target_mask), 0.0)
        loss = (ce + mse * self.numerical_loss_weight)[target_mask].mean()
        return (loss, LossBreakdown(ce, mse)) if return_loss_breakdown else loss

    @torch.no_grad()
    def generate(self, start_tokens: Tensor, start_numbers: Tensor, seq_len: int,
                 filter_logits_fn: Union[Callable, str] = top_k, filter_kwargs: Optional[dict] = None,
                 temperature: float = 1.0, **kwargs) -> GenerateReturn:
        """Tokens and numbers after the start: `(ids, numbers, is_number)`, numbers NaN where not a number."""
        if start_tokens.dim() != 2 or start_tokens.shape != start_numbers.shape:
            raise ValueError("start_tokens and start_numbers: expected one shape (batch, t)")
        filter_fn = resolve_filter(filter_logits_fn)
        t = start_tokens.shape[1]
        was_training = self.net.training
        self.net.eval()
        out, num_out = start_tokens, start_numbers
        try:
            for _ in range(seq_len):
                logits, num_pred = self.net(out[:, -self.max_seq_len:], num_out[:, -self.max_seq_len:], **kwargs)
                if temperature == 0:
                    sample = logits[:, -1].argmax(dim=-1, keepdim=True)
                else:
                    probs = (filter_fn(logits[:, -1], **(filter_kwargs or {})) / temperature).softmax(dim=-1)
                    sample = torch.multinomial(probs, 1)  # (b, 1)
                out = torch.cat((out, sample), dim=-1)
                num_out = torch.cat((num_out, num_pred[:, -1:]), dim=-1)
        finally:
            self.net.train(was_training)
        out, num_out = out[:, t:], num_out[:, t:]
        is_number = out == self.net.numerical_token_id
        return GenerateReturn(out, num_out.masked_fill(~is_number, float("nan")), is_number)
