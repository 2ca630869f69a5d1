r"""
# Several token streams in one sequence: `MultiInputTransformerWrapper`

Some sequences carry several discrete attributes per position: a note's pitch, duration and
velocity in music, a token and its type, an action and its argument.  Each attribute $k$ gets an
embedding table $E_k$; the input of position $t$ is the sum of its attributes' embeddings (plus
the position), and each attribute has its own output head:

$$e_t = \sum_k E_k[x^{(k)}_t] + p_t, \qquad z^{(k)}_t = W_k\, h_t$$

```python
model = MultiInputTransformerWrapper(num_tokens=dict(pitch=128, duration=32), max_seq_len=256,
                                     attn_layers=Decoder(dim=256, depth=4, heads=4))
logits = model(dict(pitch=pitch_ids, duration=duration_ids))   # {"pitch": (b, n, 128), "duration": (b, n, 32)}
```

Everything else is the token wrapper: positions, memory tokens, Transformer-XL memories,
`prepend_embeds`, the cache's two spellings and the attention z-loss all come from this library's
`TransformerWrapper`, which runs underneath (the first stream through its token table, the others
summed in through `sum_embeds`).

**Differences from x-transformers.**  None in meaning; the heads have no bias, as there.

Shapes: `b` batch, `n` positions, `D` width, $V_k$ the vocabulary of stream $k$.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..models.wrappers import TransformerWrapper


class MultiInputTransformerWrapper(nn.Module):
    """A dict of token-id streams `(b, n)` in, a dict of logits `(b, n, V_k)` out."""

    def __init__(self, *, num_tokens: dict[str, int], max_seq_len: int, attn_layers, emb_dim: Optional[int] = None,
                 max_mem_len: int = 0, shift_mem_down: int = 0, emb_dropout: float = 0.0,
                 post_emb_norm: bool = False, num_memory_tokens: Optional[int] = None,
                 memory_tokens_interspersed_every: Optional[int] = None, return_only_embed: bool = False,
                 use_abs_pos_emb: Optional[bool] = None, scaled_sinu_pos_emb: bool = False,
                 emb_frac_gradient: float = 1.0, attn_z_loss_weight: float = 1e-4):
        super().__init__()
        if not isinstance(num_tokens, dict) or not num_tokens:
            raise ValueError(f"num_tokens: expected a non-empty dict of stream name -> vocabulary size, got {num_tokens!r}")
        emb_dim = attn_layers.dim if emb_dim is None else emb_dim
        self.names = list(num_tokens)
        # $E_k$, one table per stream
        tables = {f"{name}_embed": nn.Embedding(n, emb_dim) for name, n in num_tokens.items()}
        for table in tables.values():
            nn.init.normal_(table.weight, std=0.02)
        self.embeds = nn.ModuleDict(tables)
        first = self.names[0]
        self.net = TransformerWrapper(
            num_tokens[first], max_seq_len, attn_layers, token_emb=self.embeds[f"{first}_embed"], emb_dim=emb_dim,
            max_mem_len=max_mem_len, shift_mem_down=shift_mem_down, emb_dropout=emb_dropout,
            post_emb_norm=post_emb_norm, num_memory_tokens=num_memory_tokens,
            memory_tokens_interspersed_every=memory_tokens_interspersed_every, return_only_embed=True,
            use_abs_pos_emb=use_abs_pos_emb, scaled_sinu_pos_emb=scaled_sinu_pos_emb,
            emb_frac_gradient=emb_frac_gradient, attn_z_loss_weight=attn_z_loss_weight)
        self.attn_layers, self.max_seq_len = attn_layers, max_seq_len
        # $z^{(k)} = W_k h$
        self.to_logits = None if return_only_embed else nn.ModuleDict(
            {name: nn.Linear(attn_layers.dim, n, bias=False) for name, n in num_tokens.items()})

    def forward(self, x: dict[str, Tensor], *, return_embeddings: bool = False,
                return_logits_and_embeddings: bool = False, sum_embeds: Optional[Tensor] = None, **kwargs):
        """Logits per stream for the id streams `x`; other keywords as `TransformerWrapper.forward`."""
        if not isinstance(x, dict) or set(x) != set(self.names):
            raise ValueError(f"x: expected a dict with one (batch, n) id tensor per stream {self.names}")
        first, rest = x[self.names[0]], [self.embeds[f"{name}_embed"](x[name]) for name in self.names[1:]]
        # $\sum_{k > 1} E_k[x^{(k)}_t]$ joins the first stream's embedding
        extra = sum(rest[1:], rest[0]) if rest else None
        if sum_embeds is not None:
            extra = sum_embeds if extra is None else extra + sum_embeds
        out = self.net(first, sum_embeds=extra, return_embeddings=True, **kwargs)
        h, more = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if self.to_logits is not None and not return_embeddings:
            logits = {name: head(h) for name, head in self.to_logits.items()}
            h = (logits, h) if return_logits_and_embeddings else logits
        return (h, *more) if more else h
