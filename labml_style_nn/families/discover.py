r"""
# DISCOVER: reading a network's encodings as tensor product representations

*Paper:* [The Emergent Symbolic Structure of Artificial Neural Networks](https://arxiv.org/abs/2608.29530)
(McCoy, Soulos, Linzen and Smolensky, 2026); the method grows out of
[RNNs Implicitly Implement Tensor Product Representations](https://arxiv.org/abs/1812.08718)
(McCoy, Linzen, Dunbar and Smolensky, 2019).

Does a network that squeezes a sequence into one vector store it *symbolically*, as fillers (the
tokens) bound to roles (their places)?  A tensor product representation (TPR, Smolensky 1990) is
that hypothesis written as a formula: each filler $f_i$ and role $r_i$ get vectors, their outer
product is the binding, and a linear map $B$ of the summed bindings gives the encoding,

$$\hat E(x) = \sum_{i} B\,(\mathbf f_{x_i} \otimes \mathbf r_{\rho(i)}) + b, \qquad
\hat E_o = \sum_i \sum_{f, g} B_{o f g}\, \mathbf f_{x_i, f}\, \mathbf r_{\rho(i), g} + b_o .$$

The TPR is fitted to the network's encodings by mean squared error.  If one *role scheme* $\rho$
fits far better than the others (`left_to_right`: position from the start; `right_to_left`: from
the end; `bidirectional`: both; `wickel`: the neighbouring tokens; `bag_of_words`: no role), the
network's encoding has that structure.  The test of it is *constituent surgery*: edit the encoding
by the TPR's prediction for an edited sequence minus that for the original, decode, and see whether
the network now outputs the edited sequence.

`DiscoverDecoder` makes a token-level decoder into such a bottleneck: the encoding $E$ of a
sequence is the decoder's final hidden state at its last token (or at a fixed position,
`enc_pos`), and the sequence is decoded back from $E$ prepended as an embedding, greedily.

```python
decoder = TransformerWrapper(num_tokens=12, max_seq_len=16, attn_layers=Decoder(dim=32, depth=2, heads=4))
model = DiscoverDecoder(decoder=decoder, num_fillers=10, bos_id=10, pad_id=11, max_seq_len=8)
logits = model(tokens, targets=tokens)           # (b, n, 12): teacher-forced reconstruction
roles = role_ids_for_tokens(tokens, lengths, "left_to_right", max_seq_len=8, num_fillers=10)
tpr = TPREncoder(dim=32, num_fillers=10, num_roles=8)
tpr.fit(tokens, roles, model.encode(tokens).detach(), steps=200)
out = model.surgery(tokens, edited, roles, roles, tpr)  # decodes the edited sequence if the TPR is right
```

**Differences from the paper.**  The paper studies RNN and transformer encoder-decoders; here, as
in x-transformers, the encoder and decoder are one causal transformer.  An MLP readout (`mlp_dim`)
tests whether the encoding can be *expressed* from the bindings, not its structure (only a linear
readout makes the comparison between role schemes diagnostic).

**Differences from x-transformers.**  None in meaning; bad input raises `ValueError` (naming the
argument) instead of an assertion.

Shapes: `b` batch, `n` tokens, `D` encoding width, `f` filler width, `g` role width, `F` fillers,
`R` roles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..generation.autoregressive import AutoregressiveWrapper

ROLE_SCHEMES = ("bidirectional", "right_to_left", "left_to_right", "wickel", "bag_of_words")


def _check_scheme(scheme: str) -> None:
    if scheme not in ROLE_SCHEMES:
        raise ValueError(f"scheme: expected one of {ROLE_SCHEMES}, got {scheme!r}")


def num_roles_for_scheme(scheme: str, *, max_seq_len: int, num_fillers: int) -> int:
    """How many roles a scheme has (the size of the TPR's role table).

    >>> [num_roles_for_scheme(s, max_seq_len=4, num_fillers=3) for s in ROLE_SCHEMES]
    [10, 4, 4, 16, 1]
    """
    _check_scheme(scheme)
    if scheme in ("left_to_right", "right_to_left"):
        return max_seq_len
    if scheme == "bidirectional":
        return max_seq_len * (max_seq_len + 1) // 2  # pairs (i, j) with i + j < max_seq_len
    if scheme == "wickel":
        return (num_fillers + 1) ** 2  # (left neighbour, right neighbour), a boundary symbol included
    return 1


def role_ids_for_tokens(tokens: Tensor, lengths: Tensor, scheme: str, *, max_seq_len: int,
                        num_fillers: int) -> Tensor:
    r"""The role $\rho(i)$ of each position `(b, n)` of sequences of `lengths` `(b,)` (0 past the end).

    `bidirectional` numbers the pair (from the start $i$, from the end $j$) by Cantor's pairing
    $(i + j)(i + j + 1)/2 + i$; `wickel` by (left neighbour, right neighbour), `num_fillers` standing
    for the boundary.

    >>> tokens, lengths = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    >>> role_ids_for_tokens(tokens, lengths, "right_to_left", max_seq_len=4, num_fillers=8).tolist()
    [[2, 1, 0]]
    """
    _check_scheme(scheme)
    n = tokens.shape[1]
    i = torch.arange(n, device=tokens.device)[None]  # (1, n)
    lengths = lengths.to(tokens.device)[:, None]  # (b, 1)
    valid = i < lengths
    j = lengths - 1 - i  # position from the end
    if scheme == "left_to_right":
        roles = i.expand_as(tokens)
    elif scheme == "right_to_left":
        roles = j
    elif scheme == "bidirectional":
        roles = (i + j) * (i + j + 1) // 2 + i
    elif scheme == "wickel":
        boundary = torch.full_like(tokens, num_fillers)
        left = torch.where(i == 0, boundary, tokens.roll(1, dims=1))
        right = torch.where(i == lengths - 1, boundary, tokens.roll(-1, dims=1))
        roles = left * (num_fillers + 1) + right
    else:
        roles = torch.zeros_like(tokens)
    return roles.masked_fill(~valid, 0)


class TPREncoder(nn.Module):
    """A tensor product representation fitted to a network's encodings (optionally with an MLP readout)."""

    def __init__(self, *, dim: int, num_fillers: int, num_roles: int, filler_dim: int = 24, role_dim: int = 24,
                 mlp_dim: Optional[int] = None):
        super().__init__()
        self.dim = dim
        self.filler_emb, self.role_emb = nn.Embedding(num_fillers, filler_dim), nn.Embedding(num_roles, role_dim)
        # $B_{o f g}$ and $b_o$, from zero: the fit starts at the constant encoding.
        self.binding = nn.Parameter(torch.zeros(dim, filler_dim, role_dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.filler_emb.weight, std=0.05)
        nn.init.normal_(self.role_emb.weight, std=0.05)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.SiLU(), nn.Linear(mlp_dim, dim)) if mlp_dim else None

    def state(self, tokens: Tensor, role_ids: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        r"""$\sum_i B(\mathbf f_{x_i} \otimes \mathbf r_{\rho(i)}) + b$ `(b, D)`, before the readout."""
        fillers, roles = self.filler_emb(tokens), self.role_emb(role_ids)  # (b, n, f), (b, n, g)
        # $\sum_{f, g} B_{o f g} \mathbf f_{i f} \mathbf r_{i g}$ per position
        per_position = torch.einsum("ofg,bnf,bng->bno", self.binding, fillers, roles)  # (b, n, D)
        if mask is not None:
            per_position = per_position.masked_fill(~mask[..., None], 0.0)
        return per_position.sum(dim=1) + self.bias  # (b, D)

    def readout(self, state: Tensor) -> Tensor:
        """The binding state in the space of the encodings (the identity unless `mlp_dim` was given)."""
        return self.mlp(state) if self.mlp is not None else state

    def forward(self, tokens: Tensor, role_ids: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        r"""The TPR's encoding $\hat E$ `(b, D)` of `tokens` `(b, n)` with roles `role_ids` `(b, n)`."""
        if mask is not None:
            tokens, role_ids = tokens.masked_fill(~mask, 0), role_ids.masked_fill(~mask, 0)
        for name, ids, table in (("tokens", tokens, self.filler_emb), ("role_ids", role_ids, self.role_emb)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.num_embeddings):
                raise ValueError(f"{name}: expected ids in [0, {table.num_embeddings}) (mark padding with mask), "
                                 f"got values in [{int(ids.min())}, {int(ids.max())}]")
        return self.readout(self.state(tokens, role_ids, mask))

    def fit(self, tokens: Tensor, role_ids: Tensor, target_encodings: Tensor, *, mask: Optional[Tensor] = None,
            steps: int = 2000, batch_size: int = 1024, lr: float = 3e-3, ema_decay: float = 0.9,
            optim: Callable = torch.optim.Adam) -> float:
        r"""Fit to the (frozen) encodings `(N, D)` by mean squared error; returns its running average."""
        if role_ids.shape != tokens.shape:
            raise ValueError(f"role_ids: expected one per position, shape {tuple(tokens.shape)}, got {tuple(role_ids.shape)}")
        if tuple(target_encodings.shape) != (tokens.shape[0], self.dim):
            raise ValueError(f"target_encodings: expected shape {(tokens.shape[0], self.dim)}, got "
                             f"{tuple(target_encodings.shape)}")
        mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
        optimizer = optim(self.parameters(), lr=lr)
        running = 0.0
        for _ in range(steps):
            rows = torch.randint(0, tokens.shape[0], (batch_size,), device=tokens.device)
            # $\lVert \hat E(x) - E(x) \rVert^2$ on a minibatch
            loss = F.mse_loss(self(tokens[rows], role_ids[rows], mask[rows]), target_encodings[rows].detach())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running = ema_decay * running + (1 - ema_decay) * loss.item()
        return running


class DiscoverDecoder(nn.Module):
    """A token-level decoder as a bottleneck: a sequence to one encoding vector, and back."""

    def __init__(self, *, decoder: nn.Module, num_fillers: int, bos_id: int, pad_id: int, max_seq_len: int,
                 enc_pos: Union[int, str] = "last"):
        super().__init__()
        layers = getattr(decoder, "attn_layers", None)
        if layers is None or not getattr(layers, "causal", False) or not hasattr(decoder, "logits"):
            raise ValueError("decoder: expected a TransformerWrapper over a Decoder")
        if enc_pos != "last" and (isinstance(enc_pos, bool) or not isinstance(enc_pos, int)):
            raise ValueError(f"enc_pos: expected 'last' or a position, got {enc_pos!r}")
        self.decoder, self.num_fillers, self.bos_id, self.pad_id = decoder, num_fillers, bos_id, pad_id
        self.max_seq_len, self.enc_pos = max_seq_len, enc_pos

    @property
    def dim(self) -> int:
        width: Any = self.decoder.attn_layers.dim
        return width

    def encode(self, tokens: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The encoding `(b, D)` of each sequence: the final hidden state at its last real token.

        With an integer `enc_pos`, at that position instead."""
        mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
        if mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a bool tensor, got {mask.dtype}")
        _, intermediates = self.decoder(tokens, mask=mask, return_intermediates=True)
        hiddens = intermediates.last_layer_hiddens  # (b, n, D)
        if self.enc_pos == "last":
            pos = mask.sum(dim=-1) - 1  # (b,)
        else:
            pos = torch.full_like(mask[:, 0], int(self.enc_pos), dtype=torch.long)
        index = pos[:, None, None].expand(-1, 1, hiddens.shape[-1])  # (b, 1, D)
        return hiddens.gather(1, index)[:, 0]  # (b, D)

    @torch.no_grad()
    def decode(self, encodings: Tensor, lengths: Optional[Tensor] = None, *, eos_id: Optional[int] = None,
               max_len: Optional[int] = None) -> Tensor:
        """Greedily decode the (possibly edited) encodings `(b, D)`, each row to its `lengths` or to its first
        `eos_id`; the rest of a row is `pad_id`."""
        if (lengths is None) == (eos_id is None):
            raise ValueError("lengths and eos_id: give exactly one")
        b = encodings.shape[0]
        total = int(lengths.max()) if lengths is not None else (max_len or self.max_seq_len)
        if total > self.max_seq_len:
            raise ValueError(f"lengths: at most max_seq_len={self.max_seq_len} tokens, got {total}")
        bos = torch.full((b, 1), self.bos_id, dtype=torch.long, device=encodings.device)
        ones = torch.ones(b, 1, dtype=torch.bool, device=encodings.device)
        # $E$ goes before the [BOS] token as an embedding.
        out: Tensor = AutoregressiveWrapper(self.decoder).generate(  # type: ignore[assignment]
            bos, total, eos_token=eos_id, temperature=0.0, cache_kv=False, prepend_embeds=encodings[:, None],
            prepend_mask=ones)  # (b, total)
        if eos_id is not None:
            is_eos = out == eos_id
            lengths = torch.where(is_eos.any(dim=-1), is_eos.float().argmax(dim=-1) + 1, total)
        assert lengths is not None
        beyond = torch.arange(total, device=out.device)[None] >= lengths.to(out.device)[:, None]
        return out.masked_fill(beyond, self.pad_id)

    @torch.no_grad()
    def surgery(self, tokens: Tensor, edited_tokens: Tensor, role_ids_old: Tensor, role_ids_new: Tensor,
                tpr: TPREncoder) -> Tensor:
        r"""Constituent surgery: decode $E(x) + \hat E(x') - \hat E(x)$, the encoding moved by the TPR's
        prediction for the edited sequence $x'$ (the caller gives both role assignments)."""
        if not (edited_tokens.shape == tokens.shape == role_ids_old.shape == role_ids_new.shape):
            raise ValueError("edited_tokens, role_ids_old and role_ids_new: one per position of tokens")
        mask = tokens != self.pad_id
        if not torch.equal(mask, edited_tokens != self.pad_id):
            raise ValueError("edited_tokens: edits must fall inside each sequence (never on padding)")
        for name, ids in (("tokens", tokens), ("edited_tokens", edited_tokens)):
            real = ids.masked_select(mask)
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.num_fillers):
                raise ValueError(f"{name}: expected filler ids in [0, {self.num_fillers}) within each sequence")
        encodings = self.encode(tokens, mask)
        old = tpr.state(tokens.masked_fill(~mask, 0), role_ids_old, mask)
        new = tpr.state(edited_tokens.masked_fill(~mask, 0), role_ids_new, mask)
        # $\hat E(x') - \hat E(x)$: exact for any readout, the paper's per-binding edit for a linear one
        return self.decode(encodings + tpr.readout(new) - tpr.readout(old), lengths=mask.sum(dim=-1))

    def forward(self, tokens: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        """The encodings `(b, D)` of `tokens` `(b, n)`; with `targets` `(b, m)`, the logits `(b, m, V)` of
        decoding them from the encodings with teacher forcing."""
        encodings = self.encode(tokens)
        if targets is None:
            return encodings
        b = tokens.shape[0]
        bos = torch.full((b, 1), self.bos_id, dtype=torch.long, device=tokens.device)
        inputs = torch.cat((bos, targets[:, :-1]), dim=1)  # [BOS] y_1 ... y_{m-1}
        ones = torch.ones(b, 1, dtype=torch.bool, device=tokens.device)
        logits = self.decoder(inputs, prepend_embeds=encodings[:, None], prepend_mask=ones)  # (b, 1 + m, V)
        return logits[:, 1:]
