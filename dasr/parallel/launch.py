"""Start N worker processes with torch's launcher API (what ``torchrun`` uses).

One machine (binds the rendezvous to 127.0.0.1 on a free port)::

    results = launch(worker_main, (cfg,), nproc=4)      # {rank: return value}

Several machines (c10d rendezvous; run the same call on every node)::

    launch(worker_main, (cfg,), nproc=8, nnodes=2, node_rank=0, rdzv_endpoint="host0:29400")

Inside the worker, :func:`init_worker` reads the environment the launcher set, pins one
intra-op thread, and joins the default process group (nccl on CUDA, gloo otherwise)::

    def worker_main(cfg):
        worker = init_worker()
        ...

``entrypoint`` must be a module-level function (workers are spawned, so it is pickled by
name). A worker that raises makes :func:`launch` raise :class:`WorkerFailedError` naming the
rank and the worker's exception; the other workers are stopped.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from dasr.errors import DasrError


class WorkerFailedError(DasrError):
    """One or more workers of a :func:`launch` failed; ``failures`` maps rank → message."""

    def __init__(self, message: str, failures: dict[int, str]):
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class Worker:
    """Where this process sits in the run: global rank, number of workers, rank on its node, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


#: the store server a rank-0 worker hosts on loopback, kept for the life of the process
_worker_store_server: dist.TCPStore | None = None


def serve_store(port: int, host: str = "127.0.0.1") -> dist.TCPStore:
    """Host the TCPStore server of ``port`` on ``host`` only (torch's own listens on every interface).

    The server is multi-tenant: torch's later ``TCPStore(..., is_master=True, multi_tenant=True)``
    for the same port in this process (the c10d rendezvous, ``init_process_group``) shares it
    instead of binding a public one. Keep the returned store while it serves; port 0 takes a free
    one (the store's ``port``).
    """
    sock = socket.create_server((host, port))
    port = sock.getsockname()[1]
    # The store closes the descriptor it is handed, so Python's socket object lets go of it.
    # Kept, that object would close the same number again later, when it may belong to a file
    # another thread opened (TensorBoard's event file failed so, with 'Bad file descriptor').
    fd = sock.detach()
    try:
        return dist.TCPStore(host, port, is_master=True, master_listen_fd=fd, multi_tenant=True)
    except BaseException:
        os.close(fd)  # no store took it
        raise


def _failure_text(failure: Any) -> str:
    msg = failure.message
    if isinstance(msg, dict):  # error file with {"message": ..., "extraInfo": {"py_callstack": ...}}
        extra = msg.get("extraInfo", {}) if isinstance(msg.get("extraInfo"), dict) else {}
        msg = extra.get("py_callstack") or msg.get("message") or str(msg)
    msg = str(msg).strip()
    if failure.exitcode is not None and failure.exitcode < 0:
        msg = f"killed by signal {-failure.exitcode} ({failure.signal_name()}). {msg}"
    return msg


def launch(
    entrypoint: Callable,
    args: tuple = (),
    nproc: int = 1,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    max_restarts: int = 0,
    run_id: str | None = None,
    log_dir: str | os.PathLike | None = None,
    rdzv_timeout_s: int = 300,
) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``nproc`` processes on this node; return ``{global rank: result}``.

    Args:
        entrypoint: module-level function run by every worker.
        args: its positional arguments (picklable).
        nproc: workers on this node.
        nnodes: number of nodes; each runs this same call.
        node_rank: this node's index (a hint; c10d rendezvous assigns the final order).
        rdzv_endpoint: ``host:port`` of the c10d rendezvous. ``None``: a single node, on 127.0.0.1.
        max_restarts: how often the agent restarts failed workers before giving up.
        run_id: rendezvous id shared by all nodes of one job (default: a fresh one).
        log_dir: where the agent keeps per-worker logs and error files (default: a temp dir).
        rdzv_timeout_s: how long to wait for all nodes to join.

    Raises:
        WorkerFailedError: a worker raised or died (the message names its rank and error); ValueError: bad arguments.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _check_launch_arguments(nproc, nnodes, node_rank, rdzv_endpoint)
    # rendezvous_server: the store this node hosts, if any; it serves while this call holds it
    rdzv_endpoint, local_addr, rendezvous_server = _rendezvous(rdzv_endpoint, node_rank)
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nproc,
        run_id=run_id or f"dasr-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint=rdzv_endpoint,
        rdzv_configs={"rank": node_rank, "timeout": rdzv_timeout_s},
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
        local_addr=local_addr,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir) if log_dir else None),
    )
    try:
        return elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as e:
        raise _worker_failed(e, getattr(entrypoint, "__name__", str(entrypoint))) from None


def _check_launch_arguments(nproc: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None) -> None:
    if nproc < 1 or nnodes < 1:
        raise ValueError(f"nproc and nnodes must be >= 1, got nproc={nproc}, nnodes={nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in [0, {nnodes}), got {node_rank}")
    if nnodes > 1 and not rdzv_endpoint:
        raise ValueError("several nodes need rdzv_endpoint='host:port' (the same on every node)")


def _rendezvous(rdzv_endpoint: str | None, node_rank: int) -> tuple[str, str, Any]:
    """The rendezvous endpoint, this node's address, and the store server this node hosts (or None).

    No endpoint: a single node, its store on 127.0.0.1 and a free port. Several nodes: this node's
    address is the one its route to the rendezvous host leaves from, and node 0 on that host serves it.
    """
    # torch's agent otherwise keeps one TCPStore across restarts: restarted workers would read
    # the killed attempt's keys (its peers' old addresses) and fail to connect. With this set,
    # every attempt's rank 0 hosts a fresh store on a port of the new rendezvous round.
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if not rdzv_endpoint:
        port = free_port("127.0.0.1")
        return f"127.0.0.1:{port}", "127.0.0.1", serve_store(port)
    host, port_s = rdzv_endpoint.rsplit(":", 1)
    local_addr = source_address(host)
    if local_addr == host and node_rank == 0:
        try:
            return rdzv_endpoint, local_addr, serve_store(int(port_s), host)
        except OSError as e:  # another node on this machine hosts it already: join as a client
            if e.errno != errno.EADDRINUSE:
                raise
    return rdzv_endpoint, local_addr, None


def _worker_failed(error: Any, name: str) -> WorkerFailedError:
    """A ChildFailedError of torch's agent as one WorkerFailedError naming the first failed rank and its error."""
    failures = {rank: _failure_text(f) for rank, f in error.failures.items()}
    root_rank, root = error.get_first_failure()
    text = failures[root_rank]
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "no message")
    lines = [f"worker rank {root_rank} of {name!r} failed (exit code {root.exitcode}): {last}", text]
    others = sorted(r for r in failures if r != root_rank)
    if others:
        lines.append(f"(ranks {others} failed too)")
    return WorkerFailedError("\n".join(lines), failures)


def init_worker(timeout_s: float = 300.0, backend: str | None = None) -> Worker:
    """Join the job the launcher started; call first thing in every worker.

    Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by :func:`launch` or ``torchrun``),
    sets ``torch.set_num_threads(1)`` (workers share the cores), picks the device
    (``cuda:LOCAL_RANK`` when CUDA is available) and initialises the default process group
    (``nccl`` for CUDA tensors plus ``gloo`` for CPU tensors; ``gloo`` without CUDA or
    when several local workers share one GPU, which NCCL refuses).
    Without a launcher environment it returns a single-process ``Worker`` and creates
    no group.
    """
    torch.set_num_threads(1)
    if "WORLD_SIZE" not in os.environ:
        return Worker(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        n_gpu = torch.cuda.device_count()
        device = torch.device("cuda", local_rank % n_gpu)
        torch.cuda.set_device(device)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        # NCCL refuses two ranks on one GPU: workers sharing GPUs all-reduce with gloo
        backend = backend or ("cpu:gloo,cuda:nccl" if local_world <= n_gpu else "gloo")
    else:
        device = torch.device("cpu")
        backend = backend or "gloo"
    if not dist.is_initialized():
        if os.environ.get("MASTER_ADDR") == "127.0.0.1":
            _listen_on_loopback(rank)
        elif rank == 0 and not _uses_agent_store() and is_local_address(os.environ.get("MASTER_ADDR", "")):
            _keep_store_server(os.environ["MASTER_ADDR"])
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return Worker(rank, world, local_rank, device)


def _uses_agent_store() -> bool:
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def _listen_on_loopback(rank: int) -> None:
    """Keep a one-machine job's sockets on 127.0.0.1: gloo's (it would take the address the
    hostname resolves to) and the store rank 0 hosts."""
    loopback = next((name for _, name in socket.if_nameindex() if name.startswith("lo")), None)
    if loopback is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
    if rank == 0 and not _uses_agent_store():
        _keep_store_server("127.0.0.1")


def _keep_store_server(host: str) -> None:
    """Host rank 0's TCPStore on ``host`` only, for the life of the process."""
    global _worker_store_server
    _worker_store_server = serve_store(int(os.environ["MASTER_PORT"]), host)


def source_address(host: str) -> str:
    """The local IPv4 address this machine's route to ``host`` leaves from (a UDP connect: nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), 9))
        return s.getsockname()[0]


def is_local_address(host: str) -> bool:
    """Whether ``host`` is an IP literal of one of this machine's interfaces."""
    try:
        ipaddress.ip_address(host)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
    except (ValueError, OSError):
        return False
    return True


def finish_worker() -> None:
    """Destroy the default process group (call at the end of a worker; safe without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
