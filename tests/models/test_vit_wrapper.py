"""The Vision Transformer wrapper: class token, plain patch embedding (a convolution), defaults kept."""

import pytest
import torch
from einops import rearrange
from torch import nn

from labml_style_nn import Encoder, ViTransformerWrapper


def test_linear_patch_embedding_is_the_strided_convolution():
    # A convolution with kernel = stride = P equals our flatten-then-linear with its weight reordered.
    c, p, d = 3, 4, 10
    conv = nn.Conv2d(c, d, kernel_size=p, stride=p)
    vit = ViTransformerWrapper(image_size=12, patch_size=p, channels=c, patch_norm=False,
                               attn_layers=Encoder(dim=d, depth=1, heads=2))
    with torch.no_grad():
        vit.patch_to_embedding.weight.copy_(conv.weight.permute(0, 2, 3, 1).reshape(d, -1))
        vit.patch_to_embedding.bias.copy_(conv.bias)
    img = torch.randn(2, c, 12, 12)
    patches = rearrange(img, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)
    expected = conv(img).flatten(2).transpose(1, 2)  # (b, N, d), patches row by row
    torch.testing.assert_close(vit.patch_to_embedding(patches), expected, atol=1e-5, rtol=1e-5)


def test_class_token_is_what_the_head_reads():
    torch.manual_seed(0)
    vit = ViTransformerWrapper(image_size=8, patch_size=4, num_classes=3, use_cls_token=True,
                               attn_layers=Encoder(dim=16, depth=1, heads=2)).eval()
    assert vit.pos_embedding.shape == (1, 4 + 1, 16)  # a position for the class token too
    img = torch.randn(2, 3, 8, 8)
    emb = vit(img, return_embeddings=True)
    assert emb.shape == (2, 5, 16)
    torch.testing.assert_close(vit(img), vit.mlp_head(emb[:, 0]))
    # The class token is a parameter that changes the output.
    with torch.no_grad():
        vit.cls_token.add_(torch.randn_like(vit.cls_token))  # not a constant: LayerNorm removes those
    assert not torch.allclose(vit(img), vit.mlp_head(emb[:, 0]))


def test_defaults_are_unchanged():
    vit = ViTransformerWrapper(image_size=8, patch_size=4, num_classes=3, attn_layers=Encoder(dim=16, depth=1, heads=2))
    assert vit.cls_token is None and isinstance(vit.patch_to_embedding, nn.Sequential)
    assert vit.pos_embedding.shape == (1, 4, 16)
    img = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(vit.eval()(img), vit.mlp_head(vit(img, return_embeddings=True).mean(dim=1)))


@pytest.mark.parametrize("name", ["use_cls_token", "patch_norm"])
def test_flags_are_checked(name):
    with pytest.raises(ValueError, match=name):
        ViTransformerWrapper(image_size=8, patch_size=4, attn_layers=Encoder(dim=16, depth=1), **{name: 1})


def test_registers_post_emb_norm_and_both_outputs():
    import torch

    from labml_style_nn import Encoder, ViTransformerWrapper

    torch.manual_seed(0)
    kw = dict(image_size=8, patch_size=4, num_classes=3, attn_layers=Encoder(dim=16, depth=1, heads=2))
    plain = ViTransformerWrapper(**kw)
    img = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    regs = ViTransformerWrapper(**kw, num_register_tokens=2, post_emb_norm=True)
    logits, emb = regs(img, return_logits_and_embeddings=True)
    assert logits.shape == (2, 3) and emb.shape == (2, 4, 16)  # registers dropped
    torch.testing.assert_close(regs(img), logits)
    with torch.no_grad():
        regs.register_tokens.add_(torch.randn(2, 16))
    assert not torch.allclose(regs(img), logits)  # the patches attend to the registers
    assert plain(img).shape == (2, 3)
