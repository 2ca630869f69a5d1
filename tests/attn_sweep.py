"""The invariant sweep of one attention keyword set, on one small stack: shared by the tests of the
scoring functions, positions inside attention, hybrid heads and orthogonal values.

`check_keywords(kwargs, kind)` builds the stack once and checks, where they apply:
* the keywords change the output (against the same stack without them, common weights shared);
* a decoder stays causal (a changed future leaves the past alone);
* padded tokens change nothing (right padding on one row, left padding on the other);
* cached decoding (one token at a time through a `LayersCache`) equals the full pass;
* each attention layer computes the same on the fused and the explicit path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch

from labml_style_nn.generation.kv_cache import LayersCache
from labml_style_nn.models.layers import Decoder, Encoder

DIM, HEADS, DIM_HEAD = 16, 2, 8


def make(kind: str, depth: int = 1, **kwargs):
    """A small `Encoder` or `Decoder` with `kwargs`, in evaluation mode."""
    cls = Decoder if kind == "decoder" else Encoder
    return cls(dim=DIM, depth=depth, heads=HEADS, attn_dim_head=DIM_HEAD, **kwargs).eval()


def _padding_mask(b: int, n: int) -> torch.Tensor:
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, n - 3:] = False
    mask[1, :2] = False
    return mask


def check_keywords(kwargs: dict, kind: str = "decoder", *, cache: bool = True, fused: Optional[bool] = None,
                   perturb: Optional[Callable] = None, reseed: bool = False, n: int = 8) -> float:
    """Run the sweep above and return how far the keywords moved the output from the plain model's; `fused`: the layers take the fused path (True), the explicit one (False),
    or skip that check (None); `perturb(model)` moves parameters that start at a neutral value;
    `reseed` reseeds before each forward (random layers)."""
    torch.manual_seed(0)
    plain = make(kind)
    torch.manual_seed(0)
    model = make(kind, **kwargs)
    model.load_state_dict(plain.state_dict(), strict=False)
    if perturb is not None:
        with torch.no_grad():
            perturb(model)

    def run(m, x, **kw):
        if reseed:
            torch.manual_seed(7)
        with torch.no_grad():
            return m(x, **kw)

    x = torch.randn(2, n, DIM)
    out = run(model, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # The keywords act.
    change = (out - run(plain, x)).abs().max().item()
    assert change > 1e-4, f"{kwargs}: the output did not change"
    if kind == "decoder":
        x_future = x.clone()
        x_future[:, n // 2:] = torch.randn_like(x_future[:, n // 2:])
        out_future = run(model, x_future)
        torch.testing.assert_close(out[:, :n // 2], out_future[:, :n // 2], atol=1e-5, rtol=1e-5)
    mask = _padding_mask(2, n)
    x_changed = torch.where(mask[..., None], x, torch.randn_like(x) * 3)
    out_mask, out_changed = run(model, x, mask=mask), run(model, x_changed, mask=mask)
    torch.testing.assert_close(out_mask[mask], out_changed[mask], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out_mask).all()
    if kind == "decoder" and cache:
        layers_cache = LayersCache(model, 2, n)
        steps = [run(model, x[:, :3], cache=layers_cache)]
        steps += [run(model, x[:, t:t + 1], cache=layers_cache) for t in range(3, n)]
        torch.testing.assert_close(torch.cat(steps, dim=1), out, atol=1e-5, rtol=1e-5)
    if fused is not None:
        for block in model.blocks:
            if block.kind == "a":
                assert block.fn.uses_fused_path == fused
                with torch.no_grad():
                    a, _ = block.fn(x, mask=mask)
                    b, scores = block.fn(x, mask=mask, return_scores=True)
                assert scores is not None
                torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)
    return change
