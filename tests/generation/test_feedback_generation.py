"""AutoregressiveWrapper drives the Feedback Transformer: step by step from its memory."""

import pytest
import torch

from labml_style_nn.feedback.feedback_transformer import FeedbackTransformer
from labml_style_nn.generation import AutoregressiveWrapper

V = 23


def greedy_full_pass(net, prompt, steps):
    seq = prompt
    for _ in range(steps):
        seq = torch.cat((seq, net(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    return seq[:, prompt.shape[1]:]


@pytest.mark.parametrize("seq_len", [1, 2])
def test_feedback_generation_equals_full_passes(seq_len):
    net = FeedbackTransformer(num_tokens=V, dim=16, depth=2, seq_len=seq_len, mem_len=32, heads=2, dim_head=8).eval()
    model = AutoregressiveWrapper(net)
    prompt = torch.randint(0, V, (2, 5))
    if seq_len > 1:
        with pytest.warns(UserWarning, match="windows"):
            out = model.generate(prompt, 7, temperature=0.0)
    else:
        out = model.generate(prompt, 7, temperature=0.0)
    with torch.no_grad():
        assert torch.equal(out, greedy_full_pass(net, prompt, 7))


def test_feedback_ragged_prompts_and_loss():
    net = FeedbackTransformer(num_tokens=V, dim=16, depth=2, seq_len=1, mem_len=32, heads=2, dim_head=8).eval()
    model = AutoregressiveWrapper(net)
    prompts = [torch.randint(0, V, (n,)) for n in (4, 2)]
    out = model.generate(prompts, 5, temperature=0.0)
    for row, p in enumerate(prompts):
        assert torch.equal(out[row], model.generate(p[None], 5, temperature=0.0)[0])
    x = torch.randint(0, V, (2, 6))
    assert torch.isfinite(model(x))
