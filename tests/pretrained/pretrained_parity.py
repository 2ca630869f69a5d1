"""Checks shared by the parity tests against Hugging Face `transformers` (one model per test).

A family's test module builds small random Hugging Face models with `random_hf`, gets its
`(hf, ours)` pairs from `pair_fixture`, and subclasses `CausalLMChecks` for the checks every
converted causal language model passes: logits, right-padded logits, greedy and left-padded greedy
generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Optional

import pytest
import torch

from labml_style_nn import AutoregressiveWrapper, from_hf, from_pretrained

ATOL = 1e-4

Draw = Callable[[str, torch.Tensor], None]


def random_hf(config_cls: str, model_cls: str, config: dict, *, seed: int, draw: Optional[Draw] = None,
              draw_buffer: Optional[Draw] = None):
    """`transformers.<model_cls>(transformers.<config_cls>(**config))` in eval mode, initialised after
    `torch.manual_seed(seed)`; then `draw(name, parameter)` and `draw_buffer(name, buffer)` may redraw
    each parameter and buffer in place (so that one mapped to the wrong place shows)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config)).eval()
    with torch.no_grad():
        if draw is not None:
            for name, p in hf.named_parameters():
                draw(name, p)
        if draw_buffer is not None:
            for name, b in hf.named_buffers():
                draw_buffer(name, b)
    return hf


def pair_fixture(make_hf: Callable[[str], Any], names):
    """A module-scoped fixture `pair`, one per config name: `(hf, from_hf(hf))` of `make_hf(name)`."""
    @pytest.fixture(scope="module", params=list(names))
    def pair(request):
        hf = make_hf(request.param)
        return hf, from_hf(hf)
    return pair


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def assert_logits_match(hf, ours, x: torch.Tensor) -> float:
    """`ours(x)` equals `hf(x).logits` within 1e-4; returns the largest difference."""
    diff = max_diff(ours(x), hf(x).logits)
    assert diff < ATOL, f"logits differ by {diff}"
    return diff


@torch.no_grad()
def assert_right_padded_match(hf, ours, x: torch.Tensor, lengths: list[int]) -> float:
    """With right padding and `mask=`, the logits of every real token equal Hugging Face's."""
    mask = torch.arange(x.shape[1])[None] < torch.tensor(lengths)[:, None]  # (b, n)
    padded = x.masked_fill(~mask, 0)
    a = ours(padded, mask=mask)
    b = hf(padded, attention_mask=mask.long()).logits
    diff = max_diff(a[mask], b[mask])
    assert diff < ATOL, f"padded logits differ by {diff}"
    # ... and each row equals the row run alone, unpadded.
    for row, n in enumerate(lengths):
        alone = ours(padded[row:row + 1, :n])[0]
        assert max_diff(alone, a[row, :n]) < ATOL
    return diff


def _hf_greedy(hf, ids: torch.Tensor, n: int, attention_mask=None) -> torch.Tensor:
    # No end of sequence (every row runs n steps), and always an explicit attention mask: without
    # one, Hugging Face takes every prompt token equal to the pad id for padding.
    if attention_mask is None:
        attention_mask = torch.ones_like(ids)
    out = hf.generate(ids, attention_mask=attention_mask, max_new_tokens=n, do_sample=False, eos_token_id=None,
                      pad_token_id=0, use_cache=True, num_beams=1, top_k=None, top_p=None, temperature=None)
    return out[:, ids.shape[1]:]


@torch.no_grad()
def assert_greedy_generation_matches(hf, ours, prompt: torch.Tensor, n: int) -> None:
    """`AutoregressiveWrapper(ours).generate(..., temperature=0.)` equals `hf.generate(do_sample=False)`."""
    hf.generation_config.eos_token_id = None
    theirs = _hf_greedy(hf, prompt, n)
    mine = AutoregressiveWrapper(ours).generate(prompt, n, temperature=0.0)
    assert torch.equal(mine, theirs), f"greedy tokens differ:\n{mine}\n{theirs}"


@torch.no_grad()
def assert_left_padded_generation_matches(hf, ours, prompts: list[torch.Tensor], n: int) -> None:
    """Prompts of different lengths, left-padded on both sides, decode to the same tokens."""
    hf.generation_config.eos_token_id = None
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], mask[row, width - len(p):] = p, 1
    theirs = _hf_greedy(hf, ids, n, attention_mask=mask)
    mine = AutoregressiveWrapper(ours).generate(prompts, n, temperature=0.0)
    assert torch.equal(mine, theirs), f"left-padded greedy tokens differ:\n{mine}\n{theirs}"


@torch.no_grad()
def assert_from_pretrained_matches(hf, ours, folder, x: torch.Tensor, **save_kwargs) -> None:
    """A folder written by `save_pretrained` loads, without `transformers`, to the same model."""
    hf.save_pretrained(folder, **save_kwargs)
    loaded = from_pretrained(folder)
    assert not loaded.training
    assert max_diff(loaded(x), ours(x)) == 0.0
    assert max_diff(loaded(x), hf(x).logits) < ATOL


class CausalLMChecks:
    """The checks every converted causal language model passes against Hugging Face's, on the `pair`
    fixture of the test module (`pair_fixture`).  A family subclasses this as `TestAgainstHuggingFace`
    and sets the sizes; the token ids are drawn from the global generator after the fixture's seed."""

    vocab: ClassVar[int]
    logits_shape: ClassVar[tuple[int, int]]  # (b, n) of the unpadded batch
    padded_lengths: ClassVar[tuple[int, ...]]  # one right-padded row each, padded to the longest
    greedy_prompt: ClassVar[tuple[int, int]]  # (b, n) of the prompts
    greedy_steps: ClassVar[int]
    left_padded_lengths: ClassVar[tuple[int, ...]]  # one prompt each, left-padded to the longest
    left_padded_steps: ClassVar[int]

    def test_logits_match(self, pair):
        hf, ours = pair
        assert_logits_match(hf, ours, torch.randint(0, self.vocab, self.logits_shape))

    def test_right_padded_logits_match(self, pair):
        hf, ours = pair
        lengths = list(self.padded_lengths)
        x = torch.randint(0, self.vocab, (len(lengths), max(lengths)))
        assert_right_padded_match(hf, ours, x, lengths=lengths)

    def test_greedy_generation_matches(self, pair):
        hf, ours = pair
        assert_greedy_generation_matches(hf, ours, torch.randint(0, self.vocab, self.greedy_prompt),
                                         n=self.greedy_steps)

    def test_left_padded_generation_matches(self, pair):
        hf, ours = pair
        prompts = [torch.randint(0, self.vocab, (n,)) for n in self.left_padded_lengths]
        assert_left_padded_generation_matches(hf, ours, prompts, n=self.left_padded_steps)
