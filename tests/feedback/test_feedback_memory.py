"""The shared feedback memory: FIFO update, layer weighting, shared key/value projection."""

import torch

from labml_style_nn.feedback import FeedbackMemory, fifo


def test_fifo_docstring_example_and_short_buffers():
    assert fifo(torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]]), max_len=4).tolist() == [[2, 3, 4, 5]]
    assert fifo(torch.zeros(1, 0), torch.tensor([[7.]]), max_len=4).tolist() == [[7.]]
    t = fifo(torch.zeros(2, 3, 5, 4), torch.ones(2, 3, 2, 4), max_len=6, dim=2)
    assert t.shape == (2, 3, 6, 4) and t[:, :, -2:].eq(1).all() and t[:, :, :4].eq(0).all()


def test_aggregate_is_uniform_at_init_and_follows_the_softmax_weights():
    torch.manual_seed(0)
    mem = FeedbackMemory(dim=8, depth=3, heads=2, dim_head=4)
    states = [torch.randn(2, 5, 8) for _ in range(4)]
    torch.testing.assert_close(mem.aggregate(states), sum(states) / 4)
    with torch.no_grad():
        mem.layer_weights.copy_(torch.tensor([0., 0., 0., 50.]))
    torch.testing.assert_close(mem.aggregate(states), states[-1], atol=1e-5, rtol=0)


def test_keys_values_are_the_shared_projection_of_the_normalised_memory():
    torch.manual_seed(0)
    mem = FeedbackMemory(dim=8, depth=2, heads=2, dim_head=4)
    m = torch.randn(3, 6, 8)
    k, v = mem.keys_values(m)
    assert k.shape == v.shape == (3, 2, 6, 4)
    kv = torch.nn.functional.layer_norm(m, (8,)) @ mem.to_kv.weight.t()  # (3, 6, 16)
    torch.testing.assert_close(k[:, 1], kv[..., 4:8])  # head 1 of the keys
    torch.testing.assert_close(v[:, 0], kv[..., 8:12])  # head 0 of the values
