"""The gossip thread of ADPSGD: pairwise averaging rounds, an agreed stop/pause, an abort.

Each worker runs one :class:`Gossiper` thread per gossip plane it belongs to. Round ``k``
pairs the ranks by :func:`dasr.parallel.topology.matching`; a rank exchanges only with its
round-``k`` partner, over that pair's own gloo process group (:func:`pair_groups`):

1. both all-reduce (MAX) a small int64 *header* with one slot per rank of the plane;
2. unless the merged header shows a pending stop/pause (then only the header travels),
   both take a snapshot of their vectors (``read``), all-reduce it, halve it, and add
   ``average - snapshot`` into the live vectors (``merge``), so local updates made
   meanwhile are kept and the sum over replicas is unchanged.

Agreeing on a round (stop, pause): a rank whose main thread asks writes
``(round + 1) * 4 + kind`` into its slot. Once a thread sees all slots filled, every rank
computes the same round ``P = K + D`` (``K``: the largest slot's round, ``D``: rounds the
schedule needs from ``K`` to spread anything to everyone), so all ranks run exactly rounds
``< P`` and stop (or park) there. Nobody is left waiting for a partner.

Aborting (a rank that fails alone): :meth:`Gossiper.abort` writes ``(round + 1) * 4 + 3``
into the rank's slot, with no agreement needed; the reason goes to the rendezvous store
(:class:`AbortNote`). The slot floods along the schedule like a request, so every rank
computes the same last round ``A = K + D`` from the earliest abort's round ``K``; all run
header-only rounds up to ``A`` (nobody is left waiting for a partner, even though failed
workers' processes may linger) and stop there: the aborting rank quietly, the others with
``GossipError("rank R failed: reason")``. A thread that loses its partner (a closed
connection, a timeout) names an aborted rank the same way if the store has one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from dasr.parallel import topology

PAUSE, STOP, ABORT = 1, 2, 3
_KIND_NAME = {PAUSE: "average()", STOP: "close()"}
_MAX = dist.ReduceOp.MAX
PairGroup = dist.ProcessGroupGloo


class GossipError(RuntimeError):
    """The gossip failed (a partner failed, disagreed or timed out); raised in the main thread."""


def _allreduce(group: Any, tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> None:
    """All-reduce ``tensor`` in place on a bare gloo pair group (its methods are untyped in torch's stubs)."""
    opts = dist.AllreduceOptions()
    opts.reduceOp = op
    group.allreduce([tensor], opts).wait()


def average_with_partner(
    group: Any,
    read: Callable[[list[torch.Tensor]], None],
    merge: Callable[[list[torch.Tensor]], None],
    snaps: list[torch.Tensor],
    bufs: list[torch.Tensor],
    stats: dict,
    t0: float,
) -> None:
    """One pair average: ``read`` the parameters into ``snaps``, all-reduce them with the partner, and
    ``merge`` the change ``(x_i + x_j)/2 - x_i`` (in ``bufs``) into the live parameters; counts into ``stats``
    (``t0``: when the exchange began)."""
    read(snaps)
    for snap, buf in zip(snaps, bufs, strict=True):
        if snap.numel():
            buf.copy_(snap)
            _allreduce(group, buf)
            buf.mul_(0.5).sub_(snap)
            stats["model_bytes"] += snap.numel() * snap.element_size()
    t1 = time.perf_counter()
    merge(bufs)
    stats["model_exchanges"] += 1
    stats["comm_s"] += t1 - t0
    stats["merge_s"] += time.perf_counter() - t1


def pair_groups(
    planes: list[list[int]], graph: str, seed: int, timeout_s: float, rank: int, prefix: str
) -> tuple[int, int, dict[tuple[int, int], PairGroup]]:
    """Create this rank's gloo group for every pair the schedule can produce in its plane.

    ``planes[q]`` lists the global ranks gossiping together (plane index = gossip rank). The
    groups are plain ``ProcessGroupGloo`` objects rendezvousing through the default store
    under ``prefix``: only the two ranks of a pair take part, so no other rank (and no
    collective of the default group) is involved. Every rank creates its pairs in one
    global sorted order, which cannot deadlock.

    Returns:
        (my plane, my index in it, {(a, b) in plane indices: group}).
    """
    my_plane = next(q for q, m in enumerate(planes) if rank in m)
    members = planes[my_plane]
    index = members.index(rank)
    store = dist.distributed_c10d._get_default_store()
    mine: dict[tuple[int, int], PairGroup] = {}
    for a, b in topology.pairs(graph, len(members), seed):
        if index in (a, b):
            ranks = (members[a], members[b])
            pair_store = dist.PrefixStore(f"{prefix}/pair-{ranks[0]}-{ranks[1]}/", store)
            mine[(a, b)] = dist.ProcessGroupGloo(pair_store, (a, b).index(index), 2, timedelta(seconds=timeout_s))
    return my_plane, index, mine


class AbortNote:
    """Why a rank aborted, kept in the rendezvous store under ``prefix`` for its partners to read."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.store = dist.distributed_c10d._get_default_store()

    def write(self, rank: int, reason: str) -> None:
        """Record that ``rank`` failed because of ``reason`` (with the time, to find the first failure).

        Best effort: a store that is gone (its host process died) records nothing.
        """
        try:
            self.store.set(f"{self.prefix}/aborted/{rank}", f"{time.time():.6f} {reason}")
        except RuntimeError:
            pass

    def read(self, ranks: list[int]) -> str | None:
        """``"rank R failed: reason"`` for the one of ``ranks`` that aborted first, else ``None``
        (also when the store is gone)."""
        notes = []
        try:
            for r in ranks:
                key = f"{self.prefix}/aborted/{r}"
                if self.store.check([key]):
                    stamp, reason = self.store.get(key).decode(errors="replace").split(" ", 1)
                    notes.append((float(stamp), r, reason))
        except RuntimeError:
            pass
        if not notes:
            return None
        _, r, reason = min(notes)
        return f"rank {r} failed: {reason}"


class Gossiper:
    """The communication thread of one worker in one gossip plane.

    Args:
        groups: this rank's pair groups, ``{(a, b): group}`` in plane indices.
        members: global ranks of the plane; ``index``: this rank's index in it.
        sizes: ``(numel, dtype)`` of each vector exchanged (one per parameter dtype).
        read: ``read(snaps)`` fills the CPU tensors ``snaps`` with the current vectors.
        merge: ``merge(deltas)`` adds the CPU tensors ``deltas`` into the live vectors.
        note: where aborts are recorded.
    """

    def __init__(
        self,
        *,
        groups: dict[tuple[int, int], PairGroup],
        members: list[int],
        index: int,
        graph: str,
        seed: int,
        sizes: list[tuple[int, torch.dtype]],
        read: Callable[[list[torch.Tensor]], None],
        merge: Callable[[list[torch.Tensor]], None],
        period_s: float,
        note: AbortNote,
        pin_memory: bool = False,
    ):
        self.groups, self.members, self.index = groups, members, index
        self.size = len(members)
        self.graph, self.seed, self.period_s = graph, seed, period_s
        self.read, self.merge, self.note = read, merge, note
        self.snaps = [torch.empty(n, dtype=dt, pin_memory=pin_memory) for n, dt in sizes]
        self.bufs = [torch.empty_like(s) for s in self.snaps]
        self.header = torch.zeros(self.size, dtype=torch.int64)
        self.round = 0  # next round to run
        self._cv = threading.Condition()
        self._parked = True  # waits for resume() or a request
        self._request: int | None = None  # PAUSE / STOP / ABORT asked by the main thread
        self._agreed: int | None = None
        self._barrier_done = threading.Event()
        self.error: BaseException | None = None
        self.stats = {
            "rounds": 0,
            "idle_rounds": 0,
            "model_exchanges": 0,
            "header_exchanges": 0,
            "model_bytes": 0,
            "comm_s": 0.0,
            "merge_s": 0.0,
            "barriers": 0,
        }
        self._thread = threading.Thread(target=self._run, name=f"dasr-gossip-{index}", daemon=True)
        self._started = False

    # ---- main-thread side
    @property
    def started(self) -> bool:
        return self._started

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def parked(self) -> bool:
        return self._parked

    def resume(self) -> None:
        with self._cv:
            self._parked = False
            self._cv.notify_all()

    def barrier(self, kind: int) -> None:
        """Ask the thread to stop (``STOP``) or park (``PAUSE``) at a round all ranks agree on; wait for it."""
        self.start()
        with self._cv:
            self._barrier_done.clear()
            self._request = kind
            self._cv.notify_all()
        while not self._barrier_done.wait(1.0):
            if not self._thread.is_alive():
                break
        self.raise_error()
        if kind == STOP:
            self._thread.join()

    def abort(self, wait_s: float) -> None:
        """Flood "this rank failed" (header only) to every rank and quit; wait at most ``wait_s`` for it.

        The thread finishes in the background if partners are slow to meet it (e.g. parked).
        """
        with self._cv:
            self._request = ABORT
            self._cv.notify_all()
        if self._thread.is_alive() or not self._started:
            self.start()
            self._thread.join(wait_s)

    def raise_error(self) -> None:
        """Raise the thread's error (once) as a :class:`GossipError` naming the failed rank if one aborted."""
        if self.error is None:
            return
        err, self.error = self.error, None
        failed = self.note.read([m for i, m in enumerate(self.members) if i != self.index])
        if failed is not None:
            raise GossipError(f"{failed} (noticed by the gossip of rank {self.members[self.index]})") from err
        raise GossipError(
            f"gossip thread of rank {self.members[self.index]} failed at round {self.round}: {err!r}"
        ) from err

    # ---- thread side
    def _agreed_round(self) -> int | None:
        if self._agreed is None and bool((self.header > 0).all()):
            k_max = int((self.header // 4).max()) - 1
            self._agreed = k_max + topology.spread_rounds(self.graph, self.size, self.seed, k_max)
        return self._agreed

    def _abort_round(self) -> int | None:
        """The round all ranks stop at after the earliest abort this rank knows of (``None``: none)."""
        aborted = [int(v) // 4 - 1 for v in self.header if int(v) % 4 == ABORT]
        if not aborted:
            return None
        k = min(aborted)
        return k + topology.spread_rounds(self.graph, self.size, self.seed, k)

    def _finish_barrier(self) -> int:
        kinds = {int(v) % 4 for v in self.header}
        self.header.zero_()
        self._agreed = None
        self.stats["barriers"] += 1
        if len(kinds) != 1:
            raise RuntimeError(
                "ranks disagree: some called " + " and others ".join(_KIND_NAME[k] for k in sorted(kinds))
            )
        return kinds.pop()

    def _exchange(self, group: PairGroup) -> None:
        t0 = time.perf_counter()
        _allreduce(group, self.header, _MAX)
        if bool((self.header > 0).any()):  # a stop, pause or abort is pending: only the header travels
            self.stats["header_exchanges"] += 1
            self.stats["comm_s"] += time.perf_counter() - t0
            return
        average_with_partner(group, self.read, self.merge, self.snaps, self.bufs, self.stats, t0)

    def _partner_group(self) -> PairGroup | None:
        p = topology.matching(self.graph, self.size, self.seed, self.round)[self.index]
        return None if p == self.index else self.groups[(min(p, self.index), max(p, self.index))]

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: not self._parked or self._request is not None)
                    request = self._request
                    if request in (PAUSE, STOP) and self.header[self.index] == 0:
                        self.header[self.index] = (self.round + 1) * 4 + request
                    elif request == ABORT and self.header[self.index] % 4 != ABORT:
                        self.header[self.index] = (self.round + 1) * 4 + ABORT
                last = self._abort_round()
                if last is not None and self.round >= last:
                    if request == ABORT:
                        return
                    failed = [self.members[i] for i in range(self.size) if int(self.header[i]) % 4 == ABORT]
                    raise RuntimeError(f"rank(s) {failed} aborted; gossip stopped at round {self.round}")
                agreed = self._agreed_round() if last is None else None  # an abort overrides a pause/stop
                if agreed is not None and self.round >= agreed:
                    kind = self._finish_barrier()
                    with self._cv:
                        self._request = None
                        self._parked = True
                    self._barrier_done.set()
                    if kind == STOP:
                        return
                    continue
                t0 = time.perf_counter()
                group = self._partner_group()
                if group is None:
                    self.stats["idle_rounds"] += 1
                else:
                    self._exchange(group)
                self.round += 1
                self.stats["rounds"] += 1
                if request is None and last is None and self.period_s > 0:  # pace; a request or abort skips it
                    left = self.period_s - (time.perf_counter() - t0)
                    if left > 0:
                        with self._cv:
                            self._cv.wait_for(lambda: self._request is not None, timeout=left)
        except BaseException as e:
            self.error = e
            self._barrier_done.set()
