"""Checks shared by the parity tests against Hugging Face `transformers` (one model per test)."""

from __future__ import annotations

import torch

from labml_style_nn import AutoregressiveWrapper, from_pretrained

ATOL = 1e-4


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
