"""Contrastive decoding (`generation/contrastive.py`): the formula, greedy decoding against a uniform and a
disagreeing amateur, and the refusals."""

import pytest
import torch
from torch import nn

from labml_style_nn import AutoregressiveWrapper, Decoder, TransformerWrapper
from labml_style_nn.generation.contrastive import contrastive_logits

V = 17


def lm(seed):
    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=V, max_seq_len=16, attn_layers=Decoder(dim=16, depth=1, heads=2)).eval()


class Fixed(nn.Module):
    """An amateur whose next-token logits are the same at every position."""

    num_tokens = V

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x, **kwargs):
        return self.logits.expand(*x.shape, V)


def test_formula_and_plausibility_cut():
    expert, amateur = torch.tensor([[3.0, 2.8, 0.0, -4.0]]), torch.tensor([[5.0, 0.0, -9.0, 0.0]])
    cd = contrastive_logits(expert, amateur, alpha=0.1, beta=0.5)
    # (1 + beta) s_e - beta s_a on the tokens within log(alpha) of the expert's best, the rest cut
    torch.testing.assert_close(cd[0, :2], torch.tensor([2.0, 4.2]))
    assert (cd[0, 2:] == -torch.finfo(torch.float32).max).all()


def test_greedy_equals_the_expert_under_a_uniform_amateur_and_changes_where_the_amateur_disagrees():
    expert = lm(0)
    wrapper = AutoregressiveWrapper(expert)
    prompt = torch.randint(0, V, (2, 5))
    plain = wrapper.generate(prompt, 4, temperature=0.0)
    uniform = wrapper.generate(prompt, 4, temperature=0.0, amateur_model=Fixed(torch.zeros(V)))
    assert torch.equal(plain, uniform)
    # An amateur that loves the expert's first choice (and is lukewarm on the rest) pushes it down the list,
    # once the runner-up is within the plausibility cut.
    with torch.no_grad():
        first = expert(prompt)[:, -1]
    top2 = first.topk(2, dim=-1)
    alpha = float((top2.values[:, 1] - top2.values[:, 0]).exp().min()) * 0.5  # both rows' runner-up stays in
    fond = torch.zeros(V)
    fond[top2.indices[0, 0]] = 1e3
    out = wrapper.generate(prompt, 1, temperature=0.0, amateur_model=AutoregressiveWrapper(Fixed(fond)),
                           contrastive_decode_kwargs=dict(alpha=alpha, beta=0.5))
    assert out[0, 0] != plain[0, 0] and out[0, 0] == top2.indices[0, 1]
    # A real amateur model runs too, and the expert is restored afterwards.
    wrapper.generate(prompt, 2, amateur_model=lm(1))
    assert wrapper.net is expert


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(contrastive_decode_kwargs=dict(alpha=0.1)), "contrastive_decode_kwargs"),
    (dict(amateur_model=nn.Linear(2, 2)), "amateur_model"),
    (dict(amateur_model=(Fixed(torch.zeros(V)),), contrastive_decode_kwargs=({}, {})), "contrastive_decode_kwargs"),
])
def test_refusals(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AutoregressiveWrapper(lm(0)).generate(torch.zeros(1, 3, dtype=torch.long), 1, **kwargs)


def test_docstring_examples():
    import doctest

    from labml_style_nn.generation import contrastive
    from labml_style_nn.wrapping import looped
    for module in (contrastive, looped):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
