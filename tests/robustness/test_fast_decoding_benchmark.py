"""The fast-decoding benchmark's bound: the weights a batch-1 step reads, and the copy bandwidth."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "benchmarks"))
import fast_decoding  # noqa: E402


def test_weight_bytes_count_every_parameter_but_one_row_of_each_embedding():
    net = fast_decoding.build(dict(dim=16, depth=1, heads=2))  # token and learned position tables
    tables = net.token_emb.weight.numel() + net.pos_emb.emb.weight.numel()  # (256, 16) and (512, 16)
    expected = 4 * (sum(p.numel() for p in net.parameters()) - tables + 2 * 16)
    assert fast_decoding.weight_bytes(net) == expected


def test_copy_bandwidth_is_a_positive_rate():
    assert fast_decoding.copy_bandwidth(numel=1 << 16, iters=2) > 0
