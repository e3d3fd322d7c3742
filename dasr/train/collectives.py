"""The few collectives the trainer itself needs (sums and maxima of counters, a barrier); no-ops on one worker."""

from __future__ import annotations

import os

import torch

from dasr.data.loader import StoreClaims
from dasr.parallel.launch import Worker


def all_reduce(values: list[float], worker: Worker, op: str) -> list[float]:
    """``values`` reduced over all workers with ``op`` (SUM, MAX, MIN), as float64."""
    if worker.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=worker.device if worker.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t.tolist()


def batch_claims(worker: Worker) -> StoreClaims:
    """Batch claims on the job's rendezvous store (global progress of independent workers).

    The store is the one ``init_process_group`` joined; the launcher's restart count keeps a
    restarted attempt's claims apart from the killed one's.
    """
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()  # the rendezvous store; no public accessor
    return StoreClaims(store, attempt=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))


def barrier(worker: Worker) -> None:
    """Wait for every worker (nothing to wait for on one)."""
    if worker.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
