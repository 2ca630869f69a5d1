"""x-transformers' talking heads (`attn_pre_talking_heads`, `attn_post_talking_heads`,
`attn_pre_scale_post_talking_heads`): closed forms and parity with its weights."""

import pytest
import torch
from xt_parity import assert_same_logits, build_pair

from labml_style_nn import Decoder, Encoder
from labml_style_nn.attention.attention import Attention
from labml_style_nn.attention.talking_heads import TalkingHeadsXT

DIM, H, D = 32, 4, 8


def _parts(attn, x):
    q, k, v = (t.unflatten(-1, (H, D)).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    return q @ k.transpose(-1, -2) * D ** -0.5, v


def test_each_keyword_is_its_formula():
    torch.manual_seed(0)
    th = TalkingHeadsXT(H, pre=True, post=True, pre_scale_post=True)
    with torch.no_grad():
        for p in (th.pre, th.post, th.scale):
            p.add_(torch.randn(H, H) * 0.3)
    attn = Attention(DIM, heads=H, dim_head=D, score_transform=th)
    x = torch.randn(2, 6, DIM)
    s, v = _parts(attn, x)

    def mix(p, t):  # $T'_g = \sum_h P_{hg} T_h$
        return torch.einsum("hg,bhij->bgij", p, t)
    weights = (s + mix(th.pre, s)).softmax(-1)
    ref = mix(th.post, weights) * mix(th.scale, s) @ v
    torch.testing.assert_close(attn(x)[0], attn.to_out(ref.transpose(1, 2).flatten(2)), atol=1e-5, rtol=1e-5)


def test_pre_talking_heads_at_init_doubles_the_scores():
    torch.manual_seed(0)
    plain = Attention(DIM, heads=H, dim_head=D)
    pre = Attention(DIM, heads=H, dim_head=D, score_transform=TalkingHeadsXT(H, pre=True))
    pre.load_state_dict(plain.state_dict(), strict=False)
    doubled = Attention(DIM, heads=H, dim_head=D, scale=2 * D ** -0.5)
    doubled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(pre(x)[0], doubled(x)[0], atol=1e-5, rtol=1e-5)
    assert (pre(x)[0] - plain(x)[0]).abs().max() > 1e-3
    # The paper's keyword is unchanged: identity matrices, plain attention at initialisation.
    a = Decoder(dim=DIM, depth=1, heads=H, attn_talking_heads=True).blocks[0].fn.score_transform
    assert type(a).__name__ == "TalkingHeads"


def copy_talking_heads(ours, theirs, put):
    """x-transformers' 1x1 convolutions (out, in) into our mixing matrices (in, out)."""
    for block, (_, fn, _) in zip(ours.attn_layers.blocks, theirs.attn_layers.layers, strict=True):
        if block.kind == "f":
            continue
        mine, attend = block.fn.score_transform, fn.attend
        for m, t in ((mine.pre, attend.pre_softmax_talking_heads), (mine.post, attend.post_softmax_talking_heads),
                     (mine.scale, attend.pre_scale_post_talking_heads)):
            if m is not None:
                put(m, t.weight[:, :, 0, 0].t())


@pytest.mark.parametrize(("stack", "kwargs"), [
    ("Decoder", dict(attn_pre_talking_heads=True, rotary_pos_emb=True)),
    ("Encoder", dict(attn_pre_talking_heads=True, attn_post_talking_heads=True,
                     attn_pre_scale_post_talking_heads=True, rel_pos_bias=True)),
], ids=["pre", "all_three_with_t5_bias"])
def test_parity_with_xtransformers(stack, kwargs):
    ours, theirs = build_pair(dict(num_tokens=64, max_seq_len=32), stack, dict(dim=DIM, depth=2, heads=H, **kwargs))
    torch.manual_seed(3)
    with torch.no_grad():  # away from the identity, so that every matrix matters
        for name, p in theirs.named_parameters():
            if "talking_heads" in name:
                p.add_(torch.randn_like(p) * 0.3)
    assert_same_logits(ours, theirs, num_tokens=64, grads=stack == "Decoder", extra=[copy_talking_heads])


def test_refused_with_flash():
    with pytest.raises(ValueError, match="attn_flash and attn_post_talking_heads"):
        Encoder(dim=DIM, depth=1, attn_flash=True, attn_post_talking_heads=True)
