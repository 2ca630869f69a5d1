"""The model families (labml_style_nn/families/): each does its job on a tiny example."""

import torch

from labml_style_nn import (
    DPO,
    AttentionPool,
    ContinuousAutoregressiveWrapper,
    ContinuousTransformerWrapper,
    Decoder,
    PrefixDecoder,
    TransformerWrapper,
)
from labml_style_nn.families.prefix_decoder import prefix_mask


def test_prefix_decoder_is_bidirectional_in_the_prefix_and_causal_after():
    assert prefix_mask(4, torch.tensor([2]), 1)[0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0],
                                                                       [1, 1, 1, 1]]
    torch.manual_seed(0)
    dec = PrefixDecoder(dim=16, depth=2, heads=2)
    torch.manual_seed(0)
    plain = Decoder(dim=16, depth=2, heads=2)
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(dec(x), plain(x))  # no prefix: a causal decoder
    y = dec(x, prefix_attn_len=3)
    changed = x.clone()
    changed[:, 2] += torch.randn(16)  # the last prefix token ...
    diff = (dec(changed, prefix_attn_len=3) - y).abs().amax(-1)
    assert (diff[:, :2] > 1e-3).all()  # ... reaches earlier prefix tokens
    changed = x.clone()
    changed[:, 4] += torch.randn(16)  # a continuation token ...
    diff = (dec(changed, prefix_attn_len=3) - y).abs().amax(-1)
    assert (diff[:, :4] < 1e-6).all() and (diff[:, 4:] > 1e-3).all()  # ... reaches only itself and later


def test_continuous_autoregressive_learns_a_sequence_and_generates_it():
    torch.manual_seed(0)
    net = ContinuousTransformerWrapper(dim_in=2, dim_out=2, max_seq_len=16, probabilistic=True,
                                       attn_layers=Decoder(dim=16, depth=1, heads=2, rotary_pos_emb=True))
    model = ContinuousAutoregressiveWrapper(net)
    t = torch.arange(10.0)
    x = torch.stack((torch.sin(t), torch.cos(t)), -1)[None].repeat(4, 1, 1)  # (4, 10, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(x).item()
    for _ in range(60):
        loss = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0  # the Gaussian NLL falls
    out = model.generate(x[:, :3], 4, temperature=0.0)
    assert out.shape == (4, 4, 2)
    # Cached generation equals the uncached loop (temperature 0: the means).
    torch.testing.assert_close(out, model.generate(x[:, :3], 4, temperature=0.0, cache_kv=False), atol=1e-5, rtol=1e-4)
    # lens masks the padded steps out of the loss.
    torch.testing.assert_close(model(x, lens=torch.tensor([10, 10, 10, 10])), model(x))


def test_dpo_starts_at_log_two_and_prefers_the_preferred():
    torch.manual_seed(0)
    policy = TransformerWrapper(num_tokens=16, max_seq_len=16, attn_layers=Decoder(dim=16, depth=1, heads=2))
    dpo = DPO(policy, beta=0.5)
    good, bad = torch.randint(0, 16, (2, 8)), torch.randint(0, 16, (2, 8))
    prompt = torch.zeros(2, 8, dtype=torch.bool)
    prompt[:, :3] = True
    torch.testing.assert_close(dpo(good, bad, prompt_mask=prompt), torch.tensor(2.0).log())
    assert all(not p.requires_grad for p in dpo.ref_model.parameters())
    opt = torch.optim.Adam(dpo.parameters(), lr=1e-2)
    for _ in range(10):
        loss = dpo(good, bad, prompt_mask=prompt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5


def test_attention_pool_pools_real_tokens_only():
    torch.manual_seed(0)
    pool = AttentionPool(16, num_pooled_tokens=2, heads=2, dim_head=8)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    out = pool(x, mask=mask)
    assert out.shape == (2, 2, 16)
    noisy = x.clone()
    noisy[1, 3:] = torch.randn(2, 16)  # padding changes nothing
    torch.testing.assert_close(pool(noisy, mask=mask), out)
    assert AttentionPool(16, squeeze_output=True, heads=2, dim_head=8)(x).shape == (2, 16)
    assert AttentionPool(16, num_pooled_tokens=3, depth=2, heads=2, dim_head=8)(x).shape == (2, 3, 16)
