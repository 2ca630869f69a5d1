r"""
# Vision Transformer

*Paper:* [An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale](https://arxiv.org/abs/2010.11929) (Dosovitskiy et al., 2020)

A Vision Transformer reads an image as a sequence: cut it into $P \times P$ patches, flatten each
patch, project it to the model width, add a learned position per patch, and run an encoder.

$$z_0 = [\, x^1_p E;\ x^2_p E;\ \dots;\ x^N_p E \,] + E_{pos}, \qquad N = HW / P^2$$

For classification the patch embeddings are averaged and a linear head gives the class logits.
With `return_embeddings=True` the wrapper returns the patch embeddings `(b, N, D)`, ready to be the
`context` of a decoder with `cross_attend=True` (image to caption).

Shapes: `b` batch, `c` channels, `H`/`W` image size, `P` patch size, `N` patches, `D` model width.

## Differences from the paper

The paper prepends a learned `[class]` token and classifies from it; we average the patch
embeddings instead (as later work found equally good and simpler), and normalise the flattened
patches and their embeddings with LayerNorms, which stabilises training from scratch.
"""

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from ..options import check_int, check_probability
from .layers import AttentionLayers


class ViTransformerWrapper(nn.Module):
    """Images `(b, c, H, W)` in, class logits `(b, num_classes)` (or patch embeddings) out."""

    def __init__(self, *, image_size: int, patch_size: int, attn_layers: AttentionLayers,
                 channels: int = 3, num_classes: Optional[int] = None, emb_dropout: float = 0.0):
        super().__init__()
        if not isinstance(attn_layers, AttentionLayers):
            raise ValueError(f"attn_layers: expected an Encoder, got {type(attn_layers).__name__}")
        if attn_layers.causal:
            raise ValueError("attn_layers: a Vision Transformer needs a bidirectional Encoder, not a causal stack")
        for name, value in (("image_size", image_size), ("patch_size", patch_size), ("channels", channels)):
            check_int(name, value)
        if image_size % patch_size:
            raise ValueError(f"image_size: {image_size} must be divisible by patch_size {patch_size}")
        check_int("num_classes", num_classes, allow_none=True)
        check_probability("emb_dropout", emb_dropout)
        dim = attn_layers.dim
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        num_patches = (image_size // patch_size) ** 2
        patch_dim = channels * patch_size ** 2
        # $x_p E$: flatten, normalise and project every patch
        self.patch_to_embedding = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches, dim) * 0.02)  # $E_{pos}$
        self.dropout = nn.Dropout(emb_dropout)
        self.attn_layers = attn_layers
        self.mlp_head = nn.Linear(dim, num_classes) if num_classes is not None else None

    def forward(self, img: Tensor, return_embeddings: bool = False) -> Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if not torch.is_tensor(img) or img.dim() != 4 or tuple(img.shape[1:]) != expected:
            got = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
            raise ValueError(f"img: expected shape (batch, {', '.join(map(str, expected))}), got {got}")
        p = self.patch_size
        patches = rearrange(img, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)  # (b, N, P*P*c)
        x = self.dropout(self.patch_to_embedding(patches) + self.pos_embedding)
        x = self.attn_layers(x)  # (b, N, D)
        if return_embeddings or self.mlp_head is None:
            return x
        return self.mlp_head(x.mean(dim=1))  # (b, num_classes)
