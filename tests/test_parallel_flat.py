"""FlatParameters: trainable parameters as views of one buffer per dtype (one process, no group)."""

import pytest
import torch
from torch import nn

from dasr.parallel.flat import FlatParameters


def test_one_buffer_per_dtype_views_share_storage_and_frozen_are_left_alone():
    model = nn.Sequential(nn.Linear(3, 2).double(), nn.Linear(2, 2), nn.Linear(2, 1))
    model[2].requires_grad_(False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flat = FlatParameters(model)
    assert [b.dtype for b in flat.buffers] == [torch.float64, torch.float32]
    assert flat.numel == 8 + 6  # the frozen layer's 3 values are not in any buffer
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # values kept
    flat.buffers[1].add_(1.0)  # a write to the buffer is a write to the parameters
    assert torch.equal(model[1].weight, before["1.weight"] + 1)
    assert torch.equal(model[2].weight, before["2.weight"])
    flat.check()
    model[1].weight.data = model[1].weight.detach().clone()  # moved out, as .to() or an RNN re-flatten would
    with pytest.raises(RuntimeError, match="no longer live in the flat gossip buffers"):
        flat.check()


def test_a_model_without_trainable_parameters_is_refused():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        FlatParameters(model)
