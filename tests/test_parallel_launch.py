"""The launcher: real worker processes over loopback; a failing worker is a clear error."""

import gc
import os
import socket
import time

import pytest

from dasr.parallel.launch import WorkerFailedError, init_worker, launch, serve_store


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


def _descriptors() -> set[str]:
    """This process's open descriptors, less the one that listed them."""
    return {fd for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}


def test_the_store_alone_owns_its_listening_socket(tmp_path):
    """The store closes the socket it serves on; nothing closes that number a second time.

    Before, Python's socket object kept the descriptor too and closed it after the store had: a
    file opened meanwhile at that number (TensorBoard's event file) failed with 'Bad file descriptor'.
    """
    serve_store(0)  # dropped at once; libuv keeps one pipe for the life of the process, made by the first store
    before = _descriptors()
    store = serve_store(0)
    port = store.port
    assert not [
        obj
        for obj in gc.get_objects()
        if type(obj) is socket.socket and obj.fileno() >= 0 and obj.getsockname()[1] == port
    ], "a Python socket object still holds the store's descriptor"
    del store
    gc.collect()
    deadline = time.monotonic() + 10
    while _descriptors() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _descriptors() - before == set(), "the store left descriptors open"
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass
