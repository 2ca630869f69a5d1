"""Experts split over two processes (gloo, CPU) give the outputs and gradients of one process holding them all."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labml_style_nn.moe import Experts
from labml_style_nn.moe.expert_parallel import ExpertParallel

E, D, H, K = 4, 8, 12, 2


def _rank(rank: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        full = Experts(E, D, H)  # the same weights in both processes
        local = Experts(E // 2, D, H)
        with torch.no_grad():
            local.w_in.copy_(full.w_in[rank * 2:rank * 2 + 2])
            local.w_out.copy_(full.w_out[rank * 2:rank * 2 + 2])
        parallel = ExpertParallel(local, E)
        with pytest.raises(ValueError, match="num_experts"):
            ExpertParallel(Experts(3, D, H), E)  # 3 local experts times 2 processes is not 4
        torch.manual_seed(1 + rank)  # each process its own tokens and routing
        t = 5 + 2 * rank
        x = torch.randn(t, D, requires_grad=True)
        expert = torch.stack([torch.randperm(E)[:K] for _ in range(t)]).flatten()
        if rank == 0:
            expert[expert == 3] = 2  # expert 3 gets no row from process 0
        gate = torch.rand(t * K)
        ours = parallel(x, expert, gate)
        ref = full(x, expert, gate)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        w = torch.randn_like(ref)
        gx, gw = torch.autograd.grad((ours * w).sum(), [x, local.w_in])
        gx_ref, gw_full = torch.autograd.grad((ref * w).sum(), [x, full.w_in])
        torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
        # Our experts' gradient sums both processes' tokens; the full layer's, this process's only
        dist.all_reduce(gw_full)
        torch.testing.assert_close(gw, gw_full[rank * 2:rank * 2 + 2], rtol=1e-5, atol=1e-6)
        # The largest gap of the three comparisons, for the parent to read
        gap = max((ours - ref).abs().max().item(), (gx - gx_ref).abs().max().item(),
                  (gw - gw_full[rank * 2:rank * 2 + 2]).abs().max().item())
        with open(f"{path}.rank{rank}", "w") as f:
            f.write(repr(gap))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available() or sys.platform == "win32",
                    reason="needs the gloo backend and fork")
def test_two_processes_equal_one(tmp_path):
    # Forked, not spawned: the children need not import torch again (seconds each on a busy machine)
    store = str(tmp_path / "store")
    mp.start_processes(_rank, args=(store,), nprocs=2, join=True, start_method="fork")
    # (a failed check in a child raises here too); both ranks finished their comparisons, within float rounding
    gaps = [float(open(f"{store}.rank{rank}").read()) for rank in range(2)]
    assert all(gap < 1e-5 for gap in gaps), gaps

