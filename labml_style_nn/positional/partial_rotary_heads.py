r"""
# Rotary positions on some heads only

*Paper:* [DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model](https://arxiv.org/abs/2405.04434)
(DeepSeek-AI, 2024), its "decoupled RoPE"

[Rotary embeddings](rotary.md) rotate the queries and keys of every head, so every head's scores
depend on relative position.  DeepSeek-V2's multi-head latent attention compresses keys into a small
latent that cannot carry a rotation, and keeps a few separate heads that do: position information in
some heads, pure content matching in the others.  `rotate_num_heads=r` keeps that split in ordinary
attention: the last $r$ of the $h$ heads are rotated, the first $h - r$ are not,

$$S^{(t)}_{ij} = \begin{cases} q^{(t)\top}_i k^{(t)}_j / \sqrt d & t \le h - r \quad\text{(content only)} \\
(R_i q^{(t)}_i)^\top (R_j k^{(t)}_j) / \sqrt d & t > h - r \quad\text{(rotated)} \end{cases}$$

A content head attends to the same keys wherever they are; a rotated head can find "the previous
token".  It is set on the stack, `rotate_num_heads=r` (x-transformers' `AttentionLayers` passes it
down to every self-attention layer), or as `attn_rotate_num_heads=r`; it needs
`rotary_pos_emb=True`, and, as in x-transformers, no grouped key/value heads (a key/value head
would serve both kinds of query heads).

The [attention module](attention.md) rotates the last $r$ heads of $q$ and $k$ (`rotate_num_heads`);
the fused path keeps running.  Tests: `tests/positional/test_pos_in_attention.py` (content heads
ignore position, parity with x-transformers).

Shapes: `h` heads, `r` rotated heads, `d` head dim.

## Differences from the paper

* DeepSeek-V2 concatenates a small rotated part (shared by the heads) to each head's content part;
  here whole heads are rotated or not, as in x-transformers when latent attention is off.
"""

from __future__ import annotations

from ..keywords import Keyword, declare, rule

KEYWORDS = declare(__name__, "attn",
    Keyword("rotate_num_heads", None, "rotary positions on the last r heads only (the others match content)",
            type=int, minimum=1, example=2))
STACK_KEYWORDS = declare(__name__, "stack",
    Keyword("rotate_num_heads", None, "rotary positions on the last r heads of every self-attention layer",
            type=int, minimum=1, example=2))


def rotated_heads(layers) -> int | None:
    """The number of rotated heads of the stack's self-attention, from either spelling."""
    return layers.attn.rotate_num_heads if layers.attn.rotate_num_heads is not None else layers.rotate_num_heads


@rule("stack")
def _rotate_num_heads(layers) -> None:
    if layers.attn.rotate_num_heads is not None and layers.rotate_num_heads is not None:
        raise ValueError("rotate_num_heads and attn_rotate_num_heads set the same thing; choose one")
    r = rotated_heads(layers)
    if r is None:
        return
    if not layers.rotary_pos_emb:
        raise ValueError("rotate_num_heads: only meaningful with rotary_pos_emb=True")
    if r > layers.heads:
        raise ValueError(f"rotate_num_heads: expected at most heads ({layers.heads}), got {r}")
    if r < layers.heads and layers.attn.num_kv_heads(layers.heads) != layers.heads:
        raise ValueError("rotate_num_heads and attn_kv_heads (or attn_one_kv_head): a shared key/value head "
                         "would serve rotated and unrotated query heads; choose one")
