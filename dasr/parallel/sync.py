"""``sync``: all-reduce of gradients every step, identical replicas (PyTorch DDP).

DDP buckets the gradients and overlaps their all-reduce with the backward pass; the
optimizer step is then the same on every worker, so the replicas never drift apart.
Gradient accumulation without extra communication::

    for micro in micro_batches[:-1]:
        with strategy.accumulate():          # DDP.no_sync(): gradients stay local
            loss(ddp_model, micro).backward()
    loss(ddp_model, micro_batches[-1]).backward()   # one all-reduce of the summed gradients
    strategy.step(optimizer)
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dasr.parallel.strategy import Strategy


class CommTimer:
    """A DDP communication hook that all-reduces each bucket (mean, as DDP's default) and times it.

    Per backward pass it adds to :attr:`comm_s` the span from the first bucket's launch to
    the last bucket's completion (the communication, hidden or not) and to
    :attr:`exposed_s` the last bucket's launch-to-completion time: once autograd has
    launched the last bucket the compute is done, so that wait is communication the
    training thread sees.

        timer = CommTimer(group); ddp.register_comm_hook(timer, CommTimer.hook)
    """

    def __init__(self, group=None):
        self.group = group
        self.world = dist.get_world_size(group)
        self.comm_s = 0.0
        self.exposed_s = 0.0
        self._first_launch: float | None = None

    @staticmethod
    def hook(timer: CommTimer, bucket):  # no return annotation: DDP checks it against an object, ours is a string
        launched = time.perf_counter()
        if timer._first_launch is None:
            timer._first_launch = launched
        last = bucket.is_last()
        tensor = bucket.buffer().div_(timer.world)
        future = dist.all_reduce(tensor, group=timer.group, async_op=True).get_future()

        def done(f: torch.futures.Future) -> torch.Tensor:
            if last:
                finished = time.perf_counter()
                timer.comm_s += finished - (timer._first_launch or launched)  # set by this step's first bucket
                timer.exposed_s += finished - launched
                timer._first_launch = None
            return f.value()[0]

        return future.then(done)


def timed_ddp(model: nn.Module, process_group, bucket_cap_mb: float) -> tuple[DDP, CommTimer]:
    """``model`` in DDP over ``process_group`` with a :class:`CommTimer` hook."""
    ddp = DDP(model, device_ids=_device_ids(model), process_group=process_group, bucket_cap_mb=bucket_cap_mb)
    timer = CommTimer(process_group)
    ddp.register_comm_hook(timer, CommTimer.hook)
    return ddp, timer


def agree_in_group(flag: bool, model: nn.Module, group) -> bool:
    """``flag`` OR-ed over ``group`` (one one-element all-reduce on the model's device)."""
    t = torch.tensor([1.0 if flag else 0.0], device=next(model.parameters()).device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item())


def _device_ids(model: nn.Module) -> list[int] | None:
    p = next(model.parameters())
    return [p.device.index] if p.device.type == "cuda" else None


class SyncStrategy(Strategy):
    """Synchronous data parallelism: DDP over the default process group.

    Args:
        bucket_cap_mb: DDP bucket size (MB).
        verify: if True, :meth:`consensus` checks that all replicas are identical and
            raises ``RuntimeError`` otherwise (one small all-reduce).
        process_group: the group to all-reduce in (default: all workers).
    """

    name = "sync"

    def __init__(self, bucket_cap_mb: float = 25.0, verify: bool = False, process_group=None):
        if not dist.is_initialized():
            raise ValueError("the sync strategy needs torch.distributed initialised (dasr.parallel.launch.init_worker)")
        self.bucket_cap_mb = bucket_cap_mb
        self.verify = verify
        self.process_group = process_group
        self.ddp: DDP | None = None
        self.timer: CommTimer | None = None
        self._steps = 0
        self._step_s = 0.0

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.ddp, self.timer = timed_ddp(model, self.process_group, self.bucket_cap_mb)
        return self.ddp

    def accumulate(self):
        """Context in which backward passes accumulate gradients locally (no all-reduce)."""
        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        t = time.perf_counter()
        optimizer.step()
        self._step_s += time.perf_counter() - t
        self._steps += 1

    def agree(self, flag: bool) -> bool:
        if self.ddp is None:
            raise RuntimeError("sync strategy: agree() before wrap()")
        return agree_in_group(flag, self.ddp.module, self.process_group)

    def consensus(self, model: nn.Module | None = None) -> None:
        if self.verify and self.ddp is not None:
            verify_identical(self.ddp.module, self.process_group)

    def stats(self) -> dict:
        t = self.timer
        return {
            "steps": self._steps,
            "optimizer_s": self._step_s,
            "comm_s": t.comm_s if t else 0.0,
            "exposed_comm_s": t.exposed_s if t else 0.0,
        }

    def close(self) -> None:
        self.ddp = None


@torch.no_grad()
def verify_identical(model: nn.Module, group=None, atol: float = 0.0) -> float:
    """Largest difference of any parameter from the group's max (0.0: identical); raises if > atol."""
    diff = 0.0
    for p in model.parameters():
        hi = p.detach().clone()
        lo = -p.detach()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
        dist.all_reduce(lo, op=dist.ReduceOp.MAX, group=group)
        diff = max(diff, (hi + lo).abs().max().item())
    if diff > atol:
        raise RuntimeError(f"replicas differ by up to {diff:.3g} (> {atol})")
    return diff
