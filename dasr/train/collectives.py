"""The few collectives the trainer itself needs (sums and maxima of counters, a barrier); no-ops on one worker."""

from __future__ import annotations

import torch

from dasr.parallel.launch import Worker


def all_reduce(values: list[float], worker: Worker, op: str) -> list[float]:
    """``values`` reduced over all workers with ``op`` (SUM, MAX, MIN), as float64."""
    if worker.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=worker.device if worker.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t.tolist()


def barrier(worker: Worker) -> None:
    """Wait for every worker (nothing to wait for on one)."""
    if worker.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
