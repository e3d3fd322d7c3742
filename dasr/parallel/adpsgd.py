"""``adpsgd``: asynchronous decentralized parallel SGD (Lian et al., ICML 2018) for any model.

Each worker applies its own gradients to its own replica with its own optimizer. A
communication thread per worker (:class:`dasr.parallel.gossip.Gossiper`) averages the
trainable parameters with one partner at a time, every ``period_s`` seconds, independent of
the training loop::

    from dasr.parallel import ADPSGD
    gossip = ADPSGD(model, optimizer, graph="exponential", period_s=0.05)  # after init_process_group
    for batch in loader:
        loss_fn(model, batch).backward(); optimizer.step(); optimizer.zero_grad()
    gossip.average()      # the exact average of all replicas, for evaluation and saving (collective)
    gossip.close()

Training goes through the optimizer's own ``step()``: step hooks take the lock the merge
also takes and (re)start the thread, so GradScaler, LR schedulers, closures and other
training loops keep working.

What is averaged:
    - trainable parameters (``requires_grad=True``), as views of one flat buffer per dtype
      and device (:class:`dasr.parallel.flat.FlatParameters`); frozen ones are left alone;
    - buffers (e.g. batch-norm statistics) are not gossiped: :meth:`ADPSGD.average` averages
      the floating-point ones exactly, integer ones (``num_batches_tracked``) stay local;
      ``sync_init`` broadcasts both from the group's first rank at construction;
    - over gloo, on CPU copies in float32 (float64 for float64 parameters).

What forward and backward may see: a merge writes into the live parameters at any time
except during ``optimizer.step()``, so a forward or backward pass running meanwhile may see
some elements before and some after that merge (each element is either). ADPSGD's analysis
allows such inconsistent reads; use :meth:`ADPSGD.average` for a stable model. On CUDA the
snapshot and merge copies run on a side stream ordered by events: the step waits for the
copies queued before it, the copies wait for the step queued before them, and no lock is
held while a copy to the host completes.

Failure: a rank that cannot go on calls :meth:`ADPSGD.abort` (no agreement, returns at once);
the others stop with ``GossipError("rank R failed: reason")``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from dasr.parallel import topology
from dasr.parallel.flat import FlatParameters, require_one_optimizer
from dasr.parallel.gossip import PAUSE, STOP, AbortNote, Gossiper, GossipError, pair_groups
from dasr.parallel.strategy import PublicClassStrategy

__all__ = ["ADPSGD", "AdpsgdStrategy", "GossipError"]


def comm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a parameter buffer of ``dtype`` is exchanged in (float64 stays, the rest go float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def group_members(process_group: dist.ProcessGroup | None) -> list[int]:
    """Global ranks of ``process_group`` (``None``: the default group).

    Raises:
        ValueError: torch.distributed is not initialised, or this rank is not in the group.
    """
    if not dist.is_initialized():
        raise ValueError("gossip needs torch.distributed initialised (torch.distributed.init_process_group)")
    if process_group is None:
        return list(range(dist.get_world_size()))
    members = [] if process_group is dist.GroupMember.NON_GROUP_MEMBER else dist.get_process_group_ranks(process_group)
    if dist.get_rank() not in members:
        which = f"{sorted(members)}" if members else "(new_group was given ranks without it)"
        raise ValueError(
            f"rank {dist.get_rank()} is not in the process group {which}: construct it on the group's ranks only"
        )
    return list(members)


class DeviceCopies:
    """Orders the gossip's copies of CUDA parameters against the training stream with a side stream and events.

    The main thread calls :meth:`before_step`/:meth:`after_step` (under the step lock); the
    gossip thread enqueues its copies on :attr:`side` after :attr:`step_done` and records
    :attr:`copies_done`, which the next step waits for on the device (never on the host).
    Every stream is the one of the parameters' ``device``, whatever the current device is
    (a model on ``cuda:1`` without ``torch.cuda.set_device``).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.side = torch.cuda.Stream(device)
        self.step_done = torch.cuda.Event()
        self.copies_done = torch.cuda.Event()

    def before_step(self) -> None:
        """The step (on the device's current stream) waits for the copies queued before it."""
        torch.cuda.current_stream(self.device).wait_event(self.copies_done)

    def after_step(self) -> None:
        """Mark the step's end: the next copies wait for it."""
        self.step_done.record(torch.cuda.current_stream(self.device))

    def wait_copies(self) -> None:
        """Whatever the device's current stream runs next waits for all copies queued so far."""
        torch.cuda.current_stream(self.device).wait_stream(self.side)


class ADPSGD:
    """ADPSGD over ``process_group`` for ``model`` trained with ``optimizer`` (see the module docs).

    Construct it on every rank of the group, after ``init_process_group`` and ``model.to(device)``.

    Args:
        model: any module; its trainable parameters become views of flat buffers (one per dtype).
        optimizer: the optimizer of ``model``; step hooks are registered on it.
        graph: gossip graph (:data:`dasr.parallel.topology.GRAPHS`).
        period_s: the thread starts a round at most every ``period_s`` seconds (0: free-running).
        process_group: the ranks that gossip (default: all). Pair groups are made from its
            members' global ranks through the rendezvous store; no collective runs on the
            default group unless it is this group.
        seed: schedule seed, the same on every rank.
        timeout_s: gloo timeout of the pair exchanges; also the longest a rank may stay away
            from gossip (e.g. evaluating after :meth:`average`) while the others run.
        sync_init: broadcast the first member's parameters and buffers so replicas start equal.
    """

    name = "adpsgd"
    _instances: ClassVar[dict[tuple[int, ...], int]] = {}

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        graph: str = "exponential",
        period_s: float = 0.1,
        process_group: dist.ProcessGroup | None = None,
        seed: int = 0,
        timeout_s: float = 60.0,
        sync_init: bool = True,
    ):
        if graph not in topology.GRAPHS:
            raise ValueError(f"unknown gossip graph {graph!r}; choose one of {', '.join(topology.GRAPHS)}")
        if period_s < 0 or timeout_s <= 0:
            raise ValueError(f"need period_s >= 0 and timeout_s > 0, got {period_s}, {timeout_s}")
        self.members = group_members(process_group)
        self.rank = dist.get_rank()
        require_one_optimizer(model, optimizer, type(self).__name__)
        self.model, self.optimizer, self.process_group = model, optimizer, process_group
        self.graph, self.seed, self.period_s, self.timeout_s = graph, seed, period_s, timeout_s
        self.world = len(self.members)
        self.flat = FlatParameters(model)
        devices = {b.device for b in self.flat.buffers}
        if len(devices) != 1:
            raise ValueError(f"{type(self).__name__} needs all trainable parameters on one device, got {devices}")
        self.lock = threading.Lock()
        key = tuple(self.members)
        serial = ADPSGD._instances[key] = ADPSGD._instances.get(key, -1) + 1
        self._prefix = f"dasr-gossip/{'-'.join(map(str, key))}/{serial}"
        self.note = AbortNote(self._prefix)
        self._closed = self._in_step = False
        self._steps = 0
        self._lock_wait_s = self._average_s = 0.0
        if sync_init:
            with torch.no_grad():
                for t in [*self.flat.buffers, *model.buffers()]:
                    dist.broadcast(t, src=self.members[0], group=process_group)
        self._setup()
        device = self.flat.buffers[0].device
        self.copies = DeviceCopies(device) if device.type == "cuda" else None
        self.gossip = self._make_gossiper(device)
        self._hooks: list[RemovableHandle] = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    def _make_gossiper(self, device: torch.device) -> Gossiper | None:
        """The gossip thread over this rank's plane, its pair groups made; None for a plane of one."""
        planes = self._planes()
        if len(planes[0]) <= 1:
            return None
        plane, index, groups = pair_groups(planes, self.graph, self.seed, self.timeout_s, self.rank, self._prefix)
        gossip = Gossiper(
            groups=groups,
            members=planes[plane],
            index=index,
            graph=self.graph,
            seed=self.seed,
            sizes=[
                (s.stop - s.start, comm_dtype(b.dtype)) for b, s in zip(self.flat.buffers, self._slices, strict=True)
            ],
            read=self._read,
            merge=self._merge,
            period_s=self.period_s,
            note=self.note,
            pin_memory=self.copies is not None,
        )
        if self.copies is not None:
            self._staging = [torch.empty(s.numel(), dtype=s.dtype, device=device) for s in gossip.snaps]
        return gossip

    # ---- the pieces Hybrid changes
    def _setup(self) -> None:
        """Called once before the gossip planes are built."""
        self._slices = [slice(0, b.numel()) for b in self.flat.buffers]

    def _planes(self) -> list[list[int]]:
        """The global ranks of each gossip plane."""
        return [self.members]

    # ---- the gossip thread's reads and merges
    def _read_fix(self) -> list[torch.Tensor] | None:
        """Called under the lock while reading: what to add to the snapshots (Hybrid: its pending changes)."""
        return None

    def _read(self, snaps: list[torch.Tensor]) -> None:
        parts = [b[s] for b, s in zip(self.flat.buffers, self._slices, strict=True)]
        c = self.copies
        with self.lock:  # on CUDA this only enqueues: the copy completes below with no lock held
            if c is not None:
                c.side.wait_event(c.step_done)
            with torch.cuda.stream(c.side) if c is not None else contextlib.nullcontext():
                for snap, part in zip(snaps, parts, strict=True):
                    snap.copy_(part, non_blocking=c is not None)
            if c is not None:
                c.copies_done.record(c.side)
            fix = self._read_fix()
        if c is not None:
            c.copies_done.synchronize()
        for snap, f in zip(snaps, fix or [], strict=False):
            snap.add_(f)

    def _merge(self, deltas: list[torch.Tensor]) -> None:
        parts = [b[s] for b, s in zip(self.flat.buffers, self._slices, strict=True)]
        c = self.copies
        if c is None:
            with self.lock:
                for part, delta in zip(parts, deltas, strict=True):
                    part.add_(delta)
            return
        with torch.cuda.stream(c.side):  # upload with no lock held
            for dev, delta in zip(self._staging, deltas, strict=True):
                dev.copy_(delta, non_blocking=True)
        with self.lock:
            c.side.wait_event(c.step_done)
            with torch.cuda.stream(c.side):
                for part, dev in zip(parts, self._staging, strict=True):
                    part.add_(dev)
            c.copies_done.record(c.side)

    # ---- optimizer step hooks
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        g = self.gossip
        if g is not None:
            g.raise_error()
            if g.parked:
                g.start()
                g.resume()
        self._end_failed_step()
        t = time.perf_counter()
        self.lock.acquire()
        self._in_step = True
        self._lock_wait_s += time.perf_counter() - t
        if self.copies is not None:
            self.copies.before_step()

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.copies is not None:
            self.copies.after_step()
        self._in_step = False
        self.lock.release()
        self._steps += 1

    def _end_failed_step(self) -> None:
        """Release the lock a step took if that step raised before its post hook (no hook runs on an error).

        Called before anything on the main thread needs the lock or the gossip thread (the next
        step, :meth:`average`, :meth:`close`, :meth:`abort`): until then the gossip thread may
        wait for the lock, and its partner for it, at most ``timeout_s``.
        """
        if self._in_step:
            self._in_step = False
            self.lock.release()

    # ---- public
    def _drain(self) -> None:
        """Park the gossip thread at a round all ranks agree on (collective over the plane)."""
        if self.gossip is not None:
            self.gossip.barrier(PAUSE)
        if self.copies is not None:
            self.copies.wait_copies()

    def average(self) -> None:
        """Make every replica the exact average of all replicas (collective over the group).

        Parks the gossip thread at an agreed round first; the next ``optimizer.step()``
        resumes it. Floating-point buffers are averaged too (see the module docs).
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        t = time.perf_counter()
        self._end_failed_step()
        self.flat.check()
        self._drain()
        with torch.no_grad():
            for b in [*self.flat.buffers, *(b for b in self.model.buffers() if b.is_floating_point())]:
                dist.all_reduce(b, group=self.process_group)
                b.div_(self.world)
        if self.copies is not None:  # the thread's next copies come after these writes
            self.copies.after_step()
        self._average_s += time.perf_counter() - t

    def state_dict(self) -> dict:
        """The gossip position; take it after :meth:`average` so all ranks hold the same round."""
        g = self.gossip
        return {"round": g.round if g else 0, "graph": self.graph, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (collective over the group, before the first step).

        Raises:
            ValueError: the schedule differs, or the ranks of one gossip plane hold different
                rounds (a state not taken after :meth:`average`); raised on every rank alike.
        """
        g = self.gossip
        if g is None:
            return
        if g.started:
            raise RuntimeError("load_state_dict must come before the first optimizer.step()")
        if state.get("graph", self.graph) != self.graph or state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"checkpoint gossip schedule {state.get('graph')}/{state.get('seed')} "
                f"differs from this run's {self.graph}/{self.seed}"
            )
        g.round = self._plane_round(int(state.get("round", 0)))

    def _plane_round(self, mine: int) -> int:
        """``mine`` checked equal on every rank of this rank's gossip plane (collective over the group).

        Each plane agrees on its own stop rounds, so planes (Hybrid's) may hold different rounds;
        the ranks of one plane may not. Every rank checks every plane, so all raise together.
        """
        planes = self._planes()
        n = len(planes)
        plane = next(q for q, ranks in enumerate(planes) if self.rank in ranks)
        bounds = torch.full((2 * n,), -(2**62), dtype=torch.int64, device=self.flat.buffers[0].device)
        bounds[plane], bounds[n + plane] = mine, -mine  # MAX of round and of -round: the plane's max and min
        dist.all_reduce(bounds, op=dist.ReduceOp.MAX, group=self.process_group)
        highest, lowest = bounds[:n].tolist(), [-v for v in bounds[n:].tolist()]
        for q in range(n):
            if highest[q] != lowest[q]:
                raise ValueError(
                    f"the gossip plane of ranks {planes[q]} holds rounds {lowest[q]} to {highest[q]}; "
                    "a state taken after average() holds one round per plane"
                )
        return int(highest[plane])

    def stats(self) -> dict:
        """Counters since construction: steps, lock and gossip times, rounds, bytes exchanged."""
        out: dict[str, float | int] = {
            "steps": self._steps,
            "lock_wait_s": self._lock_wait_s,
            "consensus_s": self._average_s,
            "comm_s": 0.0,
            "exposed_comm_s": self._lock_wait_s,
        }
        if self.gossip is not None:
            s = self.gossip.stats
            out.update({f"gossip_{k}": v for k, v in s.items()})
            out["comm_s"] = s["comm_s"]
            out["gossip_round"] = self.gossip.round
            out["gossip_round_s"] = s["comm_s"] / s["model_exchanges"] if s["model_exchanges"] else 0.0
        return out

    def _release(self) -> None:
        for h in self._hooks:
            h.remove()
        self._end_failed_step()

    def close(self) -> None:
        """Agree on a last round with all ranks, join the thread, re-raise its error (collective; idempotent).

        Afterwards ``optimizer.step()`` is a plain local step again.
        """
        if self._closed:
            return
        self._closed = True
        self._release()
        g = self.gossip
        if g is not None:
            if g.alive or not g.started:
                g.barrier(STOP)
            g.raise_error()
        self._after_stop()

    def abort(self, reason: str) -> None:
        """Leave the gossip after a failure on this rank alone: no agreement, returns within seconds.

        The partners stop with ``GossipError("rank R failed: reason")``. Idempotent; a no-op after close().
        """
        if self._closed:
            return
        self._closed = True
        self._release()
        self.note.write(self.rank, reason)
        if self.gossip is not None:
            self.gossip.abort(wait_s=min(self.timeout_s, 5.0))

    def _after_stop(self) -> None:
        """Hook run once the gossip thread has stopped (collective with the same peers as a step)."""


class AdpsgdStrategy(PublicClassStrategy):
    """The trainer's Strategy interface over :class:`ADPSGD` (options as ADPSGD's keyword arguments)."""

    name = "adpsgd"
    CONFIG_OPTIONS = {"graph": "graph", "seed": "seed", "period_s": "gossip_period_s"}
    independent_steps = True
    impl_class: type[ADPSGD] = ADPSGD

    def __init__(self, **options: Any):
        super().__init__()
        group_members(None)  # fails early without a process group
        self.options = options

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.impl = self.impl_class(model, optimizer, **self.options)
        return model
