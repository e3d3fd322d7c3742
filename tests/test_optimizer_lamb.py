"""`--optimizer lamb`: torch-optimizer's LAMB behind the same schedule, and one sentence when it is missing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dasr.config import TrainConfig
from dasr.errors import DasrError
from dasr.train.schedule import scaling_rule
from dasr.train.trainer import build_optimizer


def test_lamb_trains_with_a_layerwise_trust_ratio():
    pytest.importorskip("torch_optimizer", reason="the bench extra (torch-optimizer) is not installed")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    optimizer = build_optimizer(TrainConfig(optimizer="lamb", lr=0.01), model)
    assert type(optimizer).__name__ == "Lamb" and scaling_rule("auto", "lamb") == "sqrt"
    x = torch.randn(64, 8)
    y = x.sum(dim=1, keepdim=True)
    losses = []
    for step in range(50):
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step == 0:  # each tensor moves by lr x its own norm (the trust ratio), not by lr per element as in Adam
            moved = [((p.detach() - w).norm() / w.norm()).item() for p, w in zip(model.parameters(), before)]
            assert moved == pytest.approx([0.01] * 4, rel=1e-3)
    assert losses[-1] < 0.5 * losses[0]


def test_missing_torch_optimizer_is_one_sentence_naming_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torch_optimizer" else real(name))
    with pytest.raises(DasrError, match=r"--optimizer lamb needs torch-optimizer: pip install 'dasr\[lamb\]'"):
        TrainConfig(data="d", exp="e", optimizer="lamb").validate()
