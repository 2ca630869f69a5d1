"""The output layer runs only on the positions a decoding path reads (`generation/head_positions.py`):
the rows the head sees on every path, and the same tokens as the pass that projects every position."""

import pytest
import torch

from labml_style_nn import Decoder, TransformerWrapper
from labml_style_nn.families import xl_autoregressive
from labml_style_nn.families.xl_autoregressive import XLAutoregressiveWrapper
from labml_style_nn.feedback.feedback_transformer import FeedbackTransformer
from labml_style_nn.generation import AutoregressiveWrapper, autoregressive, compiled_decoding, head_positions
from labml_style_nn.generation.head_positions import last_logits

V = 32000  # a real vocabulary: the head is most of a short prompt's cost
N = 10  # prompt tokens


def lm(seed, max_seq_len=32, depth=1, **wrap):
    torch.manual_seed(seed)
    return TransformerWrapper(num_tokens=V, max_seq_len=max_seq_len,
                              attn_layers=Decoder(dim=16, depth=depth, heads=2, rotary_pos_emb=True), **wrap).eval()


def rows_seen(net, seen: list[int]):
    """Append the number of positions of each call of `net`'s output layer to `seen`; the hook's handle."""
    return net.to_logits.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[-2]))


class EagerStep:
    """`DirectStep` without the compiler: the step function called as it is (the loop is what is tested)."""

    made = 0  # steps made (the compiled path was taken)

    def __init__(self, fn, options):
        self.fn = fn
        EagerStep.made += 1

    def __call__(self, *args):
        self.fn(*args)


@pytest.fixture(scope="module")
def nets():
    return {"target": lm(0), "draft": lm(1), "xl": lm(2, max_seq_len=6, max_mem_len=6)}


# Each path: a call that decodes 4 greedy tokens, and the rows its head sees in its first calls ("draft":
# the second model's); no later call sees more.
PATHS = {
    "generate, cached prompt": (lambda m, p, o: m.generate(p, 4, temperature=0.0), {"target": [1, 1, 1, 1]}),
    "generate, compiled": (lambda m, p, o: m.generate(p, 4, temperature=0.0, compile={"backend": "eager"}),
                           {"target": [1, 1, 1, 1]}),
    "generate, uncached": (lambda m, p, o: m.generate(p, 4, temperature=0.0, cache_kv=False),
                           {"target": [1, 1, 1, 1]}),
    "generate, XL rolling": (lambda m, p, o: AutoregressiveWrapper(o["xl"]).generate(p, 4, temperature=0.0),
                             {"xl": [1, 1, 1, 1]}),
    "XL wrapper (families)": (lambda m, p, o: XLAutoregressiveWrapper(o["xl"]).generate(p, 4, temperature=0.0),
                              {"xl": [1, 1, 1, 1]}),
    "beam search, cached": (lambda m, p, o: m.beam_search(p, 4, beams=2), {"target": [1, 1, 1, 1]}),
    "beam search, uncached": (lambda m, p, o: m.beam_search(p, 4, beams=2, cache_kv=False), {"target": [1, 1, 1, 1]}),
    # The target verifies k + 1 = 3 positions per pass; the draft reads one per call.
    "speculative": (lambda m, p, o: m.generate(p, 4, temperature=0.0, draft=o["draft"], num_speculative=2),
                    {"target": [3], "draft": [1, 1]}),
    "contrastive": (lambda m, p, o: m.generate(p, 4, temperature=0.0, amateur_model=o["draft"]),
                    {"target": [1, 1, 1, 1], "draft": [1, 1, 1, 1]}),
}


@pytest.mark.filterwarnings("ignore:generate.*Transformer-XL rolling")
@pytest.mark.parametrize("path", list(PATHS))
def test_each_path_projects_only_the_positions_it_reads_and_decodes_the_same_tokens(path, nets, monkeypatch):
    decode, widths = PATHS[path]
    monkeypatch.setattr(autoregressive, "_warned", set())  # (its warnings stay unseen by other tests' checks)
    monkeypatch.setattr(compiled_decoding, "DirectStep", EagerStep)
    model = AutoregressiveWrapper(nets["target"])
    prompt = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(5))
    seen: dict[str, list[int]] = {name: [] for name in widths}
    hooks = [rows_seen(nets[name], seen[name]) for name in widths]
    try:
        made = EagerStep.made
        fast = decode(model, prompt, nets)
        assert (EagerStep.made > made) == ("compiled" in path)
        for name, expected in widths.items():
            # A path that went back to the whole prompt would show N (or N + k) rows in its first call.
            assert seen[name][:len(expected)] == expected, name
            assert max(seen[name]) <= max(expected), name
        # The old behaviour: the head over every position, the last ones taken afterwards.
        for module in (head_positions, xl_autoregressive):
            monkeypatch.setattr(module, "position_head", lambda net, kwargs: None)
        for rows in seen.values():
            rows.clear()
        assert torch.equal(fast, decode(model, prompt, nets))
        for name, expected in widths.items():
            assert max(seen[name]) > max(expected), name  # (the switch did restore the full projection)
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.filterwarnings("ignore:generate.*Feedback Transformer with windows")
@pytest.mark.parametrize("name", ["target", "feedback", "feedback windows"])
def test_greedy_tokens_equal_a_hand_written_loop_over_full_logits(name, nets, monkeypatch):
    monkeypatch.setattr(autoregressive, "_warned", set())
    net = nets[name] if name == "target" else FeedbackTransformer(
        num_tokens=V, dim=16, depth=1, seq_len=2 if "windows" in name else 1, mem_len=16, heads=2, dim_head=8).eval()
    prompt = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(6))
    seq = prompt
    with torch.no_grad():
        for _ in range(4):
            # $x_{t+1} = \operatorname{argmax} z_t$, $z$ the logits of every position `(b, t, V)`
            seq = torch.cat((seq, net(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    seen: list[int] = []
    hook = rows_seen(net, seen)
    try:
        assert torch.equal(AutoregressiveWrapper(net).generate(prompt, 4, temperature=0.0), seq[:, N:])
    finally:
        hook.remove()
    assert seen == [1, 1, 1, 1]
    if name == "target":
        # The kept logits agree with the full ones to rounding, for any number of kept positions.
        torch.testing.assert_close(last_logits(net, prompt, 3), net(prompt)[:, -3:], rtol=1e-5, atol=1e-5)
