"""The launcher: real worker processes over loopback; a failing worker is a clear error."""

import time

import pytest

from dasr.parallel.launch import WorkerFailedError, init_worker, launch


def _ok_worker(x):
    import torch
    import torch.distributed as dist

    info = init_worker(timeout_s=30)
    t = torch.tensor([float(info.rank + 1)])
    dist.all_reduce(t)
    out = (info.rank, info.world_size, t.item() * x, torch.get_num_threads(), str(info.device))
    dist.destroy_process_group()
    return out


def _bad_worker():
    import faulthandler

    faulthandler.dump_traceback_later(60, exit=True)  # hard stop if the launcher forgot us
    info = init_worker(timeout_s=30)
    if info.rank == 1:
        raise ValueError("boom from rank one")
    time.sleep(60)


def test_launch_returns_per_rank_results():
    out = launch(_ok_worker, (2.0,), nproc=2)
    assert {r: v[:4] for r, v in out.items()} == {0: (0, 2, 6.0, 1), 1: (1, 2, 6.0, 1)}
    assert all(v[4] == "cpu" or v[4].startswith("cuda") for v in out.values())


def test_failing_worker_raises_clear_error_not_hang():
    t = time.monotonic()
    with pytest.raises(WorkerFailedError) as e:
        launch(_bad_worker, (), nproc=2)
    assert time.monotonic() - t < 40
    msg = str(e.value)
    assert "worker rank 1" in msg and "ValueError: boom from rank one" in msg.splitlines()[0]
    assert 1 in e.value.failures


def test_bad_arguments():
    with pytest.raises(ValueError):
        launch(_ok_worker, (), nproc=0)
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        launch(_ok_worker, (), nproc=1, nnodes=2, node_rank=0)
