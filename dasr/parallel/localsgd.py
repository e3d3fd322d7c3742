"""``localsgd``: PyTorch's own periodic model averaging, the baseline users would otherwise pick.

Every worker takes local optimizer steps on its own replica; every ``period`` steps all
replicas are replaced by their exact average (an all-reduce over the group), using
``torch.distributed.algorithms.model_averaging.averagers.PeriodicModelAverager``. Unlike
ADPSGD this is synchronous: the averaging steps are collectives every worker must reach,
so a slow worker holds everyone back there. Replicas start equal (rank 0's parameters).

Buffers (batch-norm statistics) are averaged in :meth:`LocalSgdStrategy.consensus` only.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

from dasr.parallel.strategy import Strategy
from dasr.parallel.sync import agree_in_group


class LocalSgdStrategy(Strategy):
    """Local SGD with periodic exact averaging (PyTorch's ``PeriodicModelAverager``).

    Args:
        period: optimizer steps between two averagings (1: average after every step).
        warmup_steps: steps before averaging starts (none averaged); from then on PyTorch
            averages after the first step and every ``period``-th after it.
        process_group: the group to average in (default: all workers).
    """

    name = "localsgd"
    CONFIG_OPTIONS = {"period": "localsgd_period"}

    def __init__(self, period: int = 8, warmup_steps: int = 0, process_group: dist.ProcessGroup | None = None):
        if period < 1 or warmup_steps < 0:
            raise ValueError(f"need period >= 1 and warmup_steps >= 0, got {period}, {warmup_steps}")
        if not dist.is_initialized():
            raise ValueError(
                "the localsgd strategy needs torch.distributed initialised (dasr.parallel.launch.init_worker)"
            )
        self.period, self.warmup_steps, self.process_group = period, warmup_steps, process_group
        self.world = dist.get_world_size(process_group)
        self.averager = PeriodicModelAverager(period=period, warmup_steps=warmup_steps, process_group=process_group)
        self.model: nn.Module | None = None
        self._steps = 0
        self._comm_s = 0.0

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        src = dist.get_global_rank(self.process_group, 0) if self.process_group is not None else 0
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t, src=src, group=self.process_group)
        self.model = model
        return model

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()
        t = time.perf_counter()
        self.averager.average_parameters(self._model().parameters())
        self._comm_s += time.perf_counter() - t
        self._steps += 1

    def agree(self, flag: bool) -> bool:
        """Workers meet at every averaging, so they must also decide together (``flag`` OR-ed over the group)."""
        return agree_in_group(flag, self._model(), self.process_group)

    def consensus(self, model: nn.Module | None = None) -> None:
        """Average parameters and floating-point buffers exactly (collective)."""
        m = self._model()
        with torch.no_grad():
            for t in [*m.parameters(), *(b for b in m.buffers() if b.is_floating_point())]:
                dist.all_reduce(t, group=self.process_group)
                t.div_(self.world)

    def state_dict(self) -> dict:
        """The averager's step count (where the period stands)."""
        return {"averager_step": self.averager.step, "period": self.period}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.averager.step = int(state.get("averager_step", 0))

    def stats(self) -> dict[str, Any]:
        """Steps and the time spent averaging (all of it exposed: the training thread waits)."""
        return {"steps": self._steps, "comm_s": self._comm_s, "exposed_comm_s": self._comm_s}

    def _model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("localsgd strategy used before wrap()")
        return self.model
