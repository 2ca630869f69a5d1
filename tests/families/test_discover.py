"""DISCOVER (labml_style_nn/families/discover.py): usage, invariants, parity with x-transformers."""

import pytest
import torch
import torch.nn.functional as F
from xt_parity import build_pair, copy_weights

from labml_style_nn import Decoder, DiscoverDecoder, TPREncoder, TransformerWrapper
from labml_style_nn.families.discover import ROLE_SCHEMES, num_roles_for_scheme, role_ids_for_tokens

IDS = dict(num_fillers=10, bos_id=10, pad_id=11, max_seq_len=8)


def _model(seed=0):
    torch.manual_seed(seed)
    decoder = TransformerWrapper(num_tokens=12, max_seq_len=16, attn_layers=Decoder(dim=16, depth=2, heads=2))
    return DiscoverDecoder(decoder=decoder, **IDS)


def test_discover_usage_and_invariants():
    model = _model()
    tokens = torch.randint(0, 10, (3, 6))
    enc = model(tokens)
    assert enc.shape == (3, 16) and model.dim == 16
    logits = model(tokens, targets=tokens)
    assert logits.shape == (3, 6, 12)
    loss = F.cross_entropy(logits.transpose(1, 2), tokens)
    loss.backward()
    # Padding after a sequence does not change its encoding (causal, read at the last real token).
    padded = torch.cat((tokens[:1, :4], torch.full((1, 2), 11)), dim=1)
    torch.testing.assert_close(model.encode(padded, padded != 11), model.encode(tokens[:1, :4]))
    # Decoding stops at each row's length; surgery with no edit decodes the encoding itself.
    lengths = torch.tensor([6, 4, 2])
    out = model.decode(enc.detach(), lengths)
    assert out.shape == (3, 6) and (out[1, 4:] == 11).all() and (out[2, 2:] == 11).all()
    seqs = tokens.masked_fill(torch.arange(6)[None] >= lengths[:, None], 11)
    roles = role_ids_for_tokens(seqs, lengths, "left_to_right", max_seq_len=8, num_fillers=10)
    tpr = TPREncoder(dim=16, num_fillers=10, num_roles=8)
    torch.testing.assert_close(model.surgery(seqs, seqs, roles, roles, tpr), model.decode(model.encode(seqs, seqs != 11), lengths))
    # A few steps of teacher-forced reconstruction lower its loss.
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = loss.item()
    for _ in range(10):
        loss = F.cross_entropy(model(tokens, targets=tokens).transpose(1, 2), tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_tpr_recovers_the_role_scheme_that_made_the_encodings():
    torch.manual_seed(0)
    tokens = torch.randint(0, 10, (256, 5))
    lengths = torch.full((256,), 5)
    roles = {s: role_ids_for_tokens(tokens, lengths, s, max_seq_len=5, num_fillers=10) for s in ROLE_SCHEMES}
    truth = TPREncoder(dim=8, num_fillers=10, num_roles=5, filler_dim=4, role_dim=4)
    with torch.no_grad():
        truth.binding.normal_()
        targets = truth(tokens, roles["left_to_right"])  # encodings that bind tokens to positions
    fits = {}
    for scheme in ("left_to_right", "bag_of_words"):
        tpr = TPREncoder(dim=8, num_fillers=10, num_roles=num_roles_for_scheme(scheme, max_seq_len=5, num_fillers=10),
                         filler_dim=4, role_dim=4)
        fits[scheme] = tpr.fit(tokens, roles[scheme], targets, steps=150, batch_size=64, lr=3e-2)
    assert fits["left_to_right"] < 0.3 * fits["bag_of_words"]


def test_discover_matches_x_transformers():
    from x_transformers import discover_wrapper as theirs_module
    ours, theirs = build_pair(dict(num_tokens=12, max_seq_len=16), "Decoder", dict(dim=16, depth=2, heads=2))
    copy_weights(ours, theirs)
    mine, their = DiscoverDecoder(decoder=ours, **IDS), theirs_module.DiscoverDecoder(decoder=theirs, **IDS)
    torch.manual_seed(1)
    tokens = torch.randint(0, 10, (3, 6))
    torch.testing.assert_close(mine(tokens), their(tokens), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mine(tokens, tokens), their(tokens, tokens), atol=1e-5, rtol=1e-4)
    lengths = torch.tensor([6, 4, 2])
    enc = mine(tokens).detach()
    assert torch.equal(mine.decode(enc, lengths), their.decode(enc, lengths))
    assert torch.equal(mine.decode(enc, eos_id=3, max_len=5), their.decode(enc, eos_id=3, max_len=5))
    # Rows that end at their first token are padded after it.
    first = int(mine.decode(enc, lengths=torch.ones(3, dtype=torch.long))[0, 0])
    ended = mine.decode(enc, eos_id=first, max_len=5)
    assert torch.equal(ended, their.decode(enc, eos_id=first, max_len=5))
    assert ((ended[:, 0] != first) | (ended[:, 1:] == IDS["pad_id"]).all(-1)).all()
    for scheme in ROLE_SCHEMES:
        args = dict(max_seq_len=8, num_fillers=10)
        assert torch.equal(role_ids_for_tokens(tokens, lengths, scheme, **args),
                           theirs_module.role_ids_for_tokens(tokens, lengths, scheme, **args))
        assert num_roles_for_scheme(scheme, **args) == theirs_module.num_roles_for_scheme(scheme, **args)
    torch.manual_seed(0)
    tpr = TPREncoder(dim=16, num_fillers=10, num_roles=36, mlp_dim=8)
    their_tpr = theirs_module.TPREncoder(dim=16, num_fillers=10, num_roles=36, mlp_dim=8)
    their_tpr.load_state_dict(tpr.state_dict())
    with torch.no_grad():
        tpr.binding.normal_()
        their_tpr.binding.copy_(tpr.binding)
    roles = role_ids_for_tokens(tokens, lengths, "bidirectional", max_seq_len=8, num_fillers=10)
    mask = torch.arange(6)[None] < lengths[:, None]
    torch.testing.assert_close(tpr(tokens, roles, mask), their_tpr(tokens, roles, mask), atol=1e-5, rtol=1e-4)


def test_discover_refuses_bad_input():
    model = _model()
    enc = torch.randn(2, 16)
    with pytest.raises(ValueError, match="lengths and eos_id"):
        model.decode(enc)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.decode(enc, torch.tensor([9, 3]))
    with pytest.raises(ValueError, match="scheme"):
        role_ids_for_tokens(torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]), "zigzag", max_seq_len=4, num_fillers=3)
    with pytest.raises(ValueError, match="role_ids"):
        TPREncoder(dim=16, num_fillers=10, num_roles=2)(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, 1, 2]]))
    seqs = torch.tensor([[1, 2, 11]])
    with pytest.raises(ValueError, match="edited_tokens"):
        model.surgery(seqs, torch.tensor([[1, 2, 3]]), torch.zeros_like(seqs), torch.zeros_like(seqs),
                      TPREncoder(dim=16, num_fillers=10, num_roles=4))
    with pytest.raises(ValueError, match="decoder"):
        DiscoverDecoder(decoder=torch.nn.Linear(2, 2), **IDS)
