"""BLT's entropy patching (families/entropy_based_tokenizer.py): x-transformers' patches, and where they cut."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.families.entropy_based_tokenizer import EntropyBasedTokenizer, entropy_from_logits


def test_patches_equal_xtransformers():
    xt = pytest.importorskip("x_transformers")
    from x_transformers.entropy_based_tokenizer import EntropyBasedTokenizer as Theirs

    torch.manual_seed(0)
    dec = xt.TransformerWrapper(num_tokens=8, max_seq_len=32, attn_layers=xt.Decoder(dim=16, depth=1, heads=2)).eval()
    with torch.no_grad():
        dec.to_logits.weight.mul_(20)  # entropies that vary
    x, lens = torch.randint(0, 8, (3, 20)), torch.tensor([20, 13, 7])
    median = entropy_from_logits(dec(x)).median().item()
    for kw in (dict(entropy_threshold=median), dict(entropy_threshold=3 * median, accumulate_entropy=True),
               dict(entropy_threshold=median, max_token_size=3),
               dict(entropy_threshold=3 * median, accumulate_entropy=True, ignore_entropy_below=median / 2,
                    max_token_size=4)):
        for length in (None, lens):
            theirs, ours = Theirs(dec, **kw)(x, lens=length), EntropyBasedTokenizer(dec, **kw)(x, lens=length)
            assert torch.equal(theirs, ours), kw
            assert (ours.sum(-1) == (lens if length is not None else 20)).all()  # the patches cover the row
    segments = EntropyBasedTokenizer(dec, entropy_threshold=median)(x[0], return_segmented_seq=True)
    assert torch.equal(torch.cat(segments), x[0]) and len(segments) > 1


def test_a_patch_starts_after_each_unsure_prediction():
    torch.manual_seed(0)
    dec = TransformerWrapper(num_tokens=8, max_seq_len=16, attn_layers=Decoder(dim=16, depth=1, heads=2)).eval()
    x = torch.randint(0, 8, (1, 12))
    h = entropy_from_logits(dec(x))[0]
    threshold = h.median().item()
    lengths = EntropyBasedTokenizer(dec, entropy_threshold=threshold)(x)[0]
    ends = lengths[lengths > 0].cumsum(0) - 1  # last position of each patch
    expected = ((h >= threshold).nonzero().flatten().tolist() + [11])
    assert ends.tolist() == sorted(set(expected))
