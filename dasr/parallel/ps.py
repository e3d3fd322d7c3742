"""``ps``: asynchronous parameter server (the baseline the paper argues against).

    from dasr.parallel import ParameterServer
    ps = ParameterServer(model, sgd_optimizer)      # after init_process_group (or alone)
    for batch in loader:
        loss_fn(model, batch).backward(); sgd_optimizer.step(); sgd_optimizer.zero_grad()
    ps.average(); ps.close()

"rank 0" below is the process group's first rank. One server holds the master parameters
and applies every gradient as it arrives; workers never wait for each other.
``optimizer.step()`` on a worker (a step pre hook does it all):

1. pushes its flat gradient, the learning rate of ``optimizer.param_groups[0]`` and the
   parameter *version* the gradient was computed at;
2. the server applies SGD to the master copy (momentum, dampening, Nesterov and weight
   decay taken from the worker optimizer's param group at :meth:`wrap`; one momentum
   buffer, on the server) and bumps the version;
3. pulls the new master parameters and version and copies them into the local model in
   place, and sets every ``.grad`` to ``None``, so the optimizer's own update does nothing;
   it only carries the hyperparameters.

Staleness of a gradient = server version when it is applied - version it was computed
at (0 for one worker; about N-1 for N equally fast workers).

Design: the server is a thread in rank 0's process (rank 0 is also a worker), so no rank
is idle. It receives on its own gloo group (created on the main thread in :meth:`wrap`,
never the default group) with an *any-source* receive: one thread, messages handled in
arrival order, no lock ordering between receiver threads, and the thread waits inside
gloo (no polling). A message is one float32 tensor: a header of three float64 slots
(worker to server ``[kind, version, lr]``, kinds push, pause, done; answer to a push
``[version]``) followed by the gradient or the parameters. One message each way keeps
the server thread's trips through the GIL (which rank 0's training loop holds most of
the time) to a few per push; for the same reason rank 0 lowers Python's thread switch
interval to 0.5 ms while it serves (restored by :meth:`close`): the thread then gets the
GIL within 0.5 ms of a message instead of 5 ms (measured, 3 workers on 2 cores, tiny
LSTM: a remote push 2.6 ms instead of 8.3 ms). On a worker rank only the main thread uses that group;
on rank 0 only the server thread does. Rank 0's own worker applies its gradient to the
master directly, under the lock the server thread also takes. Parameters travel over gloo
on a CPU copy, also in CUDA runs (the master lives on rank 0's CPU).

The server thread serves only while rank 0 trains: from rank 0's ``step()`` (or
``consensus()``/``close()``) until all other workers have sent *pause* in
:meth:`consensus`; then it parks outside gloo, so evaluations and checkpoints of any
length cost no timeout. The others may all pause while rank 0 still has steps to do (it
is slower): the thread then stays parked (counted in ``parks``) and rank 0's remaining
``step()`` calls and its ``consensus()`` do not wake it, since no push can come before
the broadcast of that consensus. A worker pushing meanwhile waits for rank 0's next ``step()``, at
most ``timeout_s``; a server that hears from nobody for ``timeout_s`` while serving, or a
worker whose push is not answered within ``timeout_s``, fails with a clear error.
:meth:`close` is collective: the other workers send *done*, rank 0's server thread stops
after the last one and rank 0 re-raises its errors.

A parameter without a gradient counts as a zero gradient (torch's SGD would skip it).
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from dasr.parallel.adpsgd import group_members
from dasr.parallel.flat import FlatParameters, require_one_optimizer
from dasr.parallel.strategy import PublicClassStrategy

_PUSH, _PAUSE, _DONE = 0, 1, 2
_TAG_REQUEST, _TAG_ANSWER = 1, 2
_HEADER = 6  # float32 slots = 3 float64 header values
_SWITCH_INTERVAL_S = 5e-4
_HYPER = ("momentum", "dampening", "nesterov", "weight_decay")


class ParameterServerError(RuntimeError):
    """The server thread or a worker's exchange with it failed; raised in the main thread."""


def _send(group: Any, buf: torch.Tensor, dst: int, tag: int) -> None:
    """Send ``buf`` to group rank ``dst`` of a bare gloo group (not registered with torch.distributed)."""
    group.send([buf], dst, tag).wait()


def _recv(group: Any, buf: torch.Tensor, src: int | None, tag: int) -> int:
    """Receive into ``buf`` from group rank ``src`` (``None``: any) of a bare gloo group; the sender's group rank."""
    if src is not None:
        group.recv([buf], src, tag).wait()
        return src
    work = group.recv_anysource([buf], tag)
    work.wait()
    return int(work._source_rank())  # what torch.distributed.recv reads too; no public accessor


def sgd_hyperparameters(optimizer: torch.optim.Optimizer) -> dict:
    """The SGD settings the server applies, read from ``optimizer`` (all param groups must agree).

    Raises:
        ValueError: ``optimizer`` is not SGD, maximizes, or its param groups differ.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        raise ValueError(f"the ps strategy applies SGD on the server; got {type(optimizer).__name__}")
    groups = optimizer.param_groups
    hyper = {k: groups[0][k] for k in _HYPER}
    if any({k: g[k] for k in _HYPER} != hyper for g in groups[1:]):
        raise ValueError("the ps strategy needs one momentum/dampening/nesterov/weight_decay for all param groups")
    if groups[0].get("maximize", False):
        raise ValueError("the ps strategy does not support SGD(maximize=True)")
    return hyper


class Message:
    """One float32 message: ``header`` (3 float64 values) and ``body`` (``numel`` values), one buffer."""

    def __init__(self, numel: int, pin_memory: bool = False):
        self.buf = torch.zeros(_HEADER + numel, dtype=torch.float32, pin_memory=pin_memory)
        self.header = self.buf[:_HEADER].view(torch.float64)
        self.body = self.buf[_HEADER:]


class Server:
    """Master parameters, their version and momentum buffer; SGD for each gradient applied.

    On rank 0 of a multi-worker run it also owns the thread serving the other workers
    (:meth:`start`). All state changes happen under :attr:`lock`.

    Args:
        master: the master parameters (CPU, owned by the server).
        hyper: :func:`sgd_hyperparameters`.
        group: gloo group of all ranks for the thread (``None``: one worker, no thread); the
            server is its rank 0.
        workers: group ranks of the other workers the thread serves.
    """

    def __init__(
        self,
        master: torch.Tensor,
        hyper: dict,
        group: dist.ProcessGroup | None = None,
        workers: list[int] | None = None,
    ):
        self.master, self.hyper, self.group = master, hyper, group
        self.workers = workers or []
        self.lock = threading.Lock()
        self.version = 0
        self.momentum_buffer: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.stats = {"server_updates": 0, "server_staleness_max": 0, "server_busy_s": 0.0}
        self._cv = threading.Condition()
        self._serving = False
        self._parks = 0  # times the thread parked because every other worker paused
        self._rounds = 0  # consensus rounds rank 0's main thread has finished
        self._thread: threading.Thread | None = None
        if group is not None:
            self._request, self._answer = Message(master.numel()), Message(master.numel())
            self._thread = threading.Thread(target=self._run, name="dasr-ps-server", daemon=True)
            self._thread.start()

    # ---- the update (caller holds the lock)
    def apply(self, grad: torch.Tensor, lr: float, version: int) -> int:
        """Apply one gradient computed at ``version``, exactly as ``torch.optim.SGD`` would; return its staleness."""
        h = self.hyper
        staleness = self.version - version
        d = grad
        if h["weight_decay"]:
            d = d.add(self.master, alpha=h["weight_decay"])
        if h["momentum"]:
            if self.momentum_buffer is None:
                self.momentum_buffer = d.clone()
            else:
                self.momentum_buffer.mul_(h["momentum"]).add_(d, alpha=1 - h["dampening"])
            d = d.add(self.momentum_buffer, alpha=h["momentum"]) if h["nesterov"] else self.momentum_buffer
        self.master.add_(d, alpha=-lr)
        self.version += 1
        self.stats["server_updates"] += 1
        self.stats["server_staleness_max"] = max(self.stats["server_staleness_max"], staleness)
        return staleness

    # ---- rank 0's main thread
    def serve(self) -> None:
        """Let the thread receive (again); no-op while it does, or while the others wait in a consensus."""
        self.raise_error()
        with self._cv:
            if not self._serving and self._parks == self._rounds:
                self._serving = True
                self._cv.notify_all()

    def wait_parked(self) -> None:
        """Serve until every other worker has sent *pause* (maybe already), then return with the thread parked."""
        self.serve()
        with self._cv:
            while self._parks == self._rounds and self.error is None:
                if not self._cv.wait(1.0) and (self._thread is None or not self._thread.is_alive()):
                    break
            self._rounds = self._parks
        self.raise_error()

    def join(self) -> None:
        """Serve until every other worker has sent *done*; join the thread, re-raise its error."""
        with self._cv:
            self._rounds = self._parks  # close() follows the last consensus: no pause is pending
        self.serve()
        if self._thread is not None:
            self._thread.join()
        self.raise_error()

    def raise_error(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise ParameterServerError(
                f"parameter server thread on rank 0 failed at version {self.version}: {err!r}"
            ) from err

    # ---- the thread
    def _push(self, src: int) -> None:
        t = time.perf_counter()
        header = self._request.header.tolist()
        with self.lock:
            self.apply(self._request.body, header[2], int(header[1]))
            self._answer.body.copy_(self.master)
            self._answer.header[0] = self.version
        self.stats["server_busy_s"] += time.perf_counter() - t
        _send(self.group, self._answer.buf, src, _TAG_ANSWER)

    def _run(self) -> None:
        active = set(self.workers)
        paused: set[int] = set()
        try:
            while active:
                with self._cv:
                    self._cv.wait_for(lambda: self._serving)
                src = _recv(self.group, self._request.buf, None, _TAG_REQUEST)
                kind = int(self._request.header[0])
                if kind == _PUSH:
                    self._push(src)
                elif kind == _PAUSE:
                    paused.add(src)
                else:
                    active.discard(src)
                    paused.discard(src)
                if active and paused == active:  # all others in consensus(): park outside gloo
                    paused.clear()
                    with self._cv:  # atomic with serve()'s check
                        self._serving = False
                        self._parks += 1
                        self._cv.notify_all()
        except BaseException as e:
            with self._cv:
                self.error = e
                self._cv.notify_all()


class ParameterServer:
    """Asynchronous parameter server on the group's first rank; every rank (that one included) is a worker.

    Construct it on every rank of ``process_group`` after ``model.to(device)``; then train with
    the plain ``optimizer.step()``: a step pre hook pushes the gradients and pulls the new
    parameters, and hands the optimizer no gradient (every ``.grad`` is ``None`` afterwards), so
    its own update is a no-op. The optimizer must be SGD; it only carries the hyperparameters.
    Works without ``torch.distributed`` too (one worker: plain SGD through the server).

    Args:
        model, optimizer: the model (float32 trainable parameters; frozen ones are skipped) and its SGD.
        timeout_s: gloo timeout of the server's group: the longest the serving server may
            hear from no worker, and the longest a worker waits for its answer (e.g. while
            the server rank evaluates after :meth:`average` and the others already push).
        process_group: the ranks taking part (default: all); construct it on each of them and on
            no other rank. The server's own gloo group of the same ranks rendezvouses through the
            default store (not ``new_group``, which every rank of the default group would have
            to call), so ranks outside the group take no part.

    Buffers (batch-norm statistics) stay local, except that :meth:`average` copies the server
    rank's floating-point buffers to everyone along with the master parameters.
    """

    name = "ps"
    _instances: ClassVar[dict[tuple[int, ...], int]] = {}

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        timeout_s: float = 60.0,
        process_group: dist.ProcessGroup | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"need timeout_s > 0, got {timeout_s}")
        hyper = sgd_hyperparameters(optimizer)
        require_one_optimizer(model, optimizer, type(self).__name__)
        self.model, self.timeout_s, self.process_group = model, timeout_s, process_group
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.members = group_members(process_group) if distributed else [0]
        self.world = len(self.members)
        self.server_rank = self.members[0]
        self.params = FlatParameters(model)
        if len(self.params.buffers) != 1 or self.params.buffers[0].dtype != torch.float32:
            raise ValueError(
                f"the ps strategy needs float32 parameters on one device, got {[str(b.dtype) for b in self.params.buffers]}"
            )
        self.flat = self.params.buffers[0]
        self.server: Server | None = None  # the server rank only
        self.group = None
        self.version = 0  # of the parameters this worker holds
        self._closed = False
        self._switch_interval_s: float | None = None  # the server rank's, restored by close()
        self._stats = {"pushes": 0, "staleness_sum": 0, "staleness_max": 0, "comm_s": 0.0, "consensus_s": 0.0}
        if self.world > 1:
            dist.broadcast(self.flat, src=self.server_rank, group=process_group)  # all replicas start at the master
            self.group = self._server_group()
        self._request = Message(self.flat.numel(), pin_memory=self.flat.is_cuda)
        self._grad = self._request.body
        if self.rank == self.server_rank:
            master = self.flat.detach().to("cpu", copy=True)
            self.server = (
                Server(master, hyper, self.group, list(range(1, self.world)))
                if self.world > 1
                else Server(master, hyper)
            )
            if self.world > 1:
                self._switch_interval_s = sys.getswitchinterval()
                sys.setswitchinterval(min(self._switch_interval_s, _SWITCH_INTERVAL_S))
        else:
            self._answer = Message(self.flat.numel(), pin_memory=self.flat.is_cuda)
        self._hook = optimizer.register_step_pre_hook(self._pre_step)

    def _server_group(self) -> Any:
        """A gloo group of the members only (server = its rank 0), rendezvousing under a per-instance prefix."""
        key = tuple(self.members)
        serial = ParameterServer._instances[key] = ParameterServer._instances.get(key, -1) + 1
        prefix = f"dasr-ps/{'-'.join(map(str, key))}/{serial}/"
        store = dist.PrefixStore(prefix, dist.distributed_c10d._get_default_store())
        return dist.ProcessGroupGloo(
            store, self.members.index(self.rank), self.world, timedelta(seconds=self.timeout_s)
        )

    # ---- worker side
    def _read_grad(self) -> None:
        g = torch.cat(
            [
                p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                for p in self.params.params
            ]
        )
        self._grad.copy_(g)

    def _exchange(self, kind: int, lr: float = 0.0) -> None:
        """Send ``kind`` (for a push with the gradient) to the server; for a push, receive the answer."""
        self._request.header.copy_(torch.tensor([kind, self.version, lr], dtype=torch.float64))
        try:
            _send(self.group, self._request.buf, 0, _TAG_REQUEST)
            if kind == _PUSH:
                _recv(self.group, self._answer.buf, 0, _TAG_ANSWER)
        except RuntimeError as e:
            raise ParameterServerError(
                f"rank {self.rank}: lost the parameter server on rank {self.server_rank} (it failed, "
                f"or did not serve within timeout_s={self.timeout_s}): {e}"
            ) from e

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Push the gradients, pull the new parameters, leave the optimizer nothing to do."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        lr = float(optimizer.param_groups[0]["lr"])
        self._read_grad()
        t = time.perf_counter()
        if self.server is not None:
            if self.group is not None:
                self.server.serve()
            with self.server.lock:
                staleness = self.server.apply(self._grad, lr, self.version)
                with torch.no_grad():
                    self.flat.copy_(self.server.master)
                self.version = self.server.version
        else:
            self._exchange(_PUSH, lr)
            new_version = int(self._answer.header[0])
            staleness = new_version - 1 - self.version
            self.version = new_version
            with torch.no_grad():
                self.flat.copy_(self._answer.body)
        for p in self.params.params:
            p.grad = None
        s = self._stats
        s["comm_s"] += time.perf_counter() - t
        s["pushes"] += 1
        s["staleness_sum"] += staleness
        s["staleness_max"] = max(s["staleness_max"], staleness)

    def average(self) -> None:
        """Make every replica the server's master parameters (collective over the group)."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        if self.world == 1:
            return
        t = time.perf_counter()
        version = torch.zeros(1, dtype=torch.int64, device=self.flat.device)
        if self.server is not None:
            self.server.wait_parked()
            with torch.no_grad():
                self.flat.copy_(self.server.master)
            version[0] = self.server.version
        else:
            self._exchange(_PAUSE)
        for b in [self.flat, version, *(b for b in self.model.buffers() if b.is_floating_point())]:
            dist.broadcast(b, src=self.server_rank, group=self.process_group)
        self.version = int(version.item())
        self._stats["consensus_s"] += time.perf_counter() - t

    def state_dict(self) -> dict:
        """The version (and on the server rank the momentum buffer); take it after :meth:`average`."""
        out: dict[str, Any] = {"version": self.version}
        if self.server is not None:
            with self.server.lock:
                out["version"] = self.server.version
                buf = self.server.momentum_buffer
                out["momentum_buffer"] = None if buf is None else buf.clone()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; call after loading the model (the server rank takes it as the master)."""
        self.version = int(state.get("version", 0))
        if self.server is not None:
            buf = state.get("momentum_buffer")
            with self.server.lock, torch.no_grad():
                self.server.master.copy_(self.flat)
                self.server.version = self.version
                self.server.momentum_buffer = None if buf is None else buf.to(self.server.master).clone()

    def stats(self) -> dict:
        """Pushes, staleness (mean, max), communication time; on the server rank the server's counters."""
        s: dict[str, Any] = dict(self._stats)
        s["staleness_mean"] = s.pop("staleness_sum") / s["pushes"] if s["pushes"] else 0.0
        s["exposed_comm_s"] = s["comm_s"]  # a worker waits for its push and pull
        s["version"] = self.version
        if self.server is not None:
            s.update(self.server.stats)
        return s

    def close(self) -> None:
        """Collective: the workers send *done*; the server rank joins its thread and re-raises its error. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._hook.remove()
        if self.world == 1:
            return
        if self.server is None:
            self._exchange(_DONE)
            return
        try:
            self.server.join()
        finally:
            if self._switch_interval_s is not None:
                sys.setswitchinterval(self._switch_interval_s)


class ParameterServerStrategy(PublicClassStrategy):
    """The trainer's Strategy interface over :class:`ParameterServer` (option: ``timeout_s``)."""

    name = "ps"
    independent_steps = True

    def __init__(self, timeout_s: float = 60.0):
        super().__init__()
        if timeout_s <= 0:
            raise ValueError(f"need timeout_s > 0, got {timeout_s}")
        self.timeout_s = timeout_s

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.impl = ParameterServer(model, optimizer, timeout_s=self.timeout_s)
        return model

    @property
    def flat(self) -> torch.Tensor:
        """The flat parameter buffer."""
        return self._impl().flat

    @property
    def server(self) -> Server | None:
        """The server state (on the server rank)."""
        return self._impl().server
