"""The seeds' usage examples for the core classes, at the seeds' sizes.

Each example is the seed's code with only the import changed.  Sequences are 1024 tokens as in
the seeds except where noted; the GPT-3 configuration is built on the meta device (no memory).
"""

import torch

from labml_style_nn import (
    ContinuousTransformerWrapper,
    CrossAttender,
    Decoder,
    Encoder,
    TransformerWrapper,
    ViTransformerWrapper,
    XTransformer,
)


def test_full_encoder_decoder():
    model = XTransformer(dim=512, enc_num_tokens=256, enc_depth=6, enc_heads=8, enc_max_seq_len=1024,
                         dec_num_tokens=256, dec_depth=6, dec_heads=8, dec_max_seq_len=1024, tie_token_emb=True)
    src = torch.randint(0, 256, (1, 1024))
    src_mask = torch.ones_like(src).bool()
    tgt = torch.randint(0, 256, (1, 1024))
    tgt_mask = torch.ones_like(tgt).bool()
    loss = model(src, tgt, src_mask=src_mask, tgt_mask=tgt_mask)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.decoder.net.token_emb is model.encoder.token_emb
    assert model.encoder.token_emb.weight.grad is not None


def test_decoder_only_gpt_like():
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024, attn_layers=Decoder(dim=512, depth=12, heads=8))
    x = torch.randint(0, 256, (1, 1024))
    with torch.no_grad():
        assert model(x).shape == (1, 1024, 20000)


def test_gpt3_configuration_is_accepted():
    with torch.device("meta"):
        gpt3 = TransformerWrapper(num_tokens=50000, max_seq_len=2048,
                                  attn_layers=Decoder(dim=12288, depth=96, heads=96, attn_dim_head=128))
    assert len(gpt3.attn_layers.blocks) == 192
    assert gpt3.attn_layers.blocks[0].fn.to_qkv.weight.shape == (3 * 96 * 128, 12288)


def test_encoder_only_bert_like():
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024, attn_layers=Encoder(dim=512, depth=12, heads=8))
    x = torch.randint(0, 256, (1, 1024))
    mask = torch.ones_like(x).bool()
    with torch.no_grad():
        assert model(x, mask=mask).shape == (1, 1024, 20000)


def test_image_classification():
    model = ViTransformerWrapper(image_size=256, patch_size=32, num_classes=1000,
                                 attn_layers=Encoder(dim=512, depth=6, heads=8))
    img = torch.randn(1, 3, 256, 256)
    assert model(img).shape == (1, 1000)


def test_image_to_caption():
    encoder = ViTransformerWrapper(image_size=256, patch_size=32, attn_layers=Encoder(dim=512, depth=6, heads=8))
    decoder = TransformerWrapper(num_tokens=20000, max_seq_len=1024,
                                 attn_layers=Decoder(dim=512, depth=6, heads=8, cross_attend=True))
    img = torch.randn(1, 3, 256, 256)
    caption = torch.randint(0, 20000, (1, 1024))
    with torch.no_grad():
        encoded = encoder(img, return_embeddings=True)
        assert encoded.shape == (1, 64, 512)
        assert decoder(caption, context=encoded).shape == (1, 1024, 20000)


def test_dropouts():
    model = TransformerWrapper(num_tokens=20000, max_seq_len=1024, emb_dropout=0.1,
                               attn_layers=Decoder(dim=512, depth=6, heads=8, attn_dropout=0.1, ff_dropout=0.1))
    x = torch.randint(0, 20000, (1, 1024))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1024, 20000) and torch.isfinite(out).all()
    assert model.attn_layers.blocks[0].fn.dropout.p == 0.1 and model.attn_layers.blocks[1].fn.dropout.p == 0.1


def test_cross_attention():
    enc = Encoder(dim=512, depth=6)
    model = CrossAttender(dim=512, depth=6)
    nodes = torch.randn(1, 1, 512)
    node_masks = torch.ones(1, 1).bool()
    neighbors = torch.randn(1, 5, 512)
    neighbor_masks = torch.ones(1, 5).bool()
    encoded_neighbors = enc(neighbors, mask=neighbor_masks)
    out = model(nodes, context=encoded_neighbors, mask=node_masks, context_mask=neighbor_masks)
    assert out.shape == (1, 1, 512)


def test_continuous_values():
    model = ContinuousTransformerWrapper(dim_in=32, dim_out=100, max_seq_len=1024,
                                         attn_layers=Decoder(dim=512, depth=12, heads=8))
    x = torch.randn((1, 1024, 32))
    mask = torch.ones(1, 1024).bool()
    with torch.no_grad():
        assert model(x, mask=mask).shape == (1, 1024, 100)


def test_xtransformer_generate():
    model = XTransformer(dim=32, enc_num_tokens=20, enc_depth=1, enc_heads=2, enc_max_seq_len=16,
                         dec_num_tokens=20, dec_depth=1, dec_heads=2, dec_max_seq_len=16).eval()
    src = torch.randint(0, 20, (2, 8))
    out = model.generate(src, torch.ones(2, 1, dtype=torch.long), 6, temperature=0.0)
    assert out.shape == (2, 6) and out.dtype == torch.long
