"""Who is in an elastic run: leases on a store outside every worker, and views with a version.

The store is a ``torch.distributed.TCPStore`` served by a small coordinator process
(:func:`start_coordinator`, or ``python -m dasr.parallel.membership``), so no worker's death takes
it down. The coordinator is the one place membership is decided (as torchft's lighthouse decides
its quorum): every ``poll_s`` it reads each slot's join record and heartbeat, and a
member whose heartbeat has not moved for ``lease_s`` (by the coordinator's own clock: no clock is
compared across machines) is out. Each change of the live set is published as the next *view*::

    dasr-elastic/view = "7 0:3f2a,1:9c1d,3:77e0"      # version 7: slots 0, 1, 3 and their incarnations

Workers (:class:`Member`) join by writing ``join/<slot> = <incarnation>`` and keep a heartbeat
thread writing ``beat/<slot> = "<incarnation> <count>"``; one that leaves on purpose writes ``left/<slot>``. A dead or
hung member's unfinished batch claim goes back to the pool (:func:`dasr.data.loader.release_claim`).
Every live worker reads the same view from the store, so all of them draw the same matchings
over it (:mod:`dasr.parallel.elastic`).

The store can also be an etcd cluster (``etcd://h1:2379,h2:2379,h3:2379/run-7``, see
:mod:`dasr.parallel.etcd_store`), which outlives any one host. Then every node runs a coordinator
replica; the one holding an etcd lease decides (:mod:`dasr.parallel.leadership`), and when its
host is lost another takes over where the store says the run stands.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from dasr.data.loader import release_claim
from dasr.errors import DasrError
from dasr.parallel.etcd_store import EtcdStore, is_etcd_address
from dasr.parallel.launch import serve_store
from dasr.parallel.leadership import EtcdLeadership, SoleDecider

log = logging.getLogger(__name__)

PREFIX = "dasr-elastic"
FOLLOWER_POLL_S = 0.5  # how often a coordinator replica that does not decide looks at the store


def connect(address: str, timeout_s: float = 60.0) -> dist.Store:
    """A client of the run's store: the coordinator's at ``host:port``, or an etcd cluster's (``etcd://...``)."""
    if is_etcd_address(address):
        return EtcdStore.from_address(address, timeout_s=timeout_s)
    host, port = address.rsplit(":", 1)
    return dist.TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=timeout_s))


@dataclass(frozen=True)
class View:
    """One version of the live set: ``members`` are ``(slot, incarnation)`` pairs, sorted by slot;
    ``ready`` the slots that hold the model (a replacement is a member before it is ready)."""

    version: int
    members: tuple[tuple[int, str], ...]
    ready: frozenset[int] = frozenset()

    @property
    def slots(self) -> list[int]:
        return [s for s, _ in self.members]

    def encode(self) -> str:
        return f"{self.version} " + ",".join(f"{s}:{i}{'*' * (s in self.ready)}" for s, i in self.members)

    @classmethod
    def decode(cls, text: str) -> View:
        version, _, rest = text.partition(" ")
        parts = [m.partition(":") for m in rest.split(",") if m]
        members = tuple((int(s), i.rstrip("*")) for s, _, i in parts)
        return cls(int(version), members, frozenset(int(s) for s, _, i in parts if i.endswith("*")))


def read_view(store: dist.Store) -> View:
    """The current view (version 0 and nobody before the coordinator's first one)."""
    return View.decode(store.get(f"{PREFIX}/view").decode())


class Coordinator:
    """Decides the live set from join records and heartbeats and publishes it as versioned views.

    Args:
        store: the run's store (a TCPStore this process serves, or an etcd cluster).
        slots: how many worker slots the run has.
        lease_s: a member whose heartbeat has not moved for this long is out.
        settle_s: the first view waits for all slots to join, or this long after the first join.
        leadership: who decides (default: this coordinator alone); with
            :class:`~dasr.parallel.leadership.EtcdLeadership`, this one only while it leads.
    """

    def __init__(
        self,
        store: dist.Store,
        slots: int,
        lease_s: float,
        settle_s: float = 60.0,
        leadership: SoleDecider | EtcdLeadership | None = None,
    ):
        self.store, self.slots, self.lease_s, self.settle_s = store, slots, lease_s, settle_s
        self.leadership = leadership or SoleDecider(store)
        self.in_office = False
        self.version = 0
        self.live: dict[int, str] = {}
        self._seen: dict[int, tuple[str, str, float]] = {}  # slot -> (incarnation, last beat, when it moved)
        self._first_join: float | None = None
        self._resyncs = 0  # members' requests for a fresh view of the same members, answered so far
        self._last_poll = 0.0
        self._fresh_view = False  # publish a view even of the same members (a replica took over)
        if isinstance(self.leadership, SoleDecider):
            self.take_office()

    def take_office(self) -> None:
        """Start deciding: lay out a new run's keys, or take up the run where the store says it stands.

        ``slots`` is written last: members wait for it, so none joins before the layout is done.
        A replica taking over holds the published view's members live, and starts their leases on
        its own clock now: one that died meanwhile is dropped ``lease_s`` from now.
        """
        stored_slots = int(self.store.get(f"{PREFIX}/slots")) if self.store.check([f"{PREFIX}/slots"]) else None
        if stored_slots is None:
            keys = ("join", "left", "held", "ready", "expired", "beat")
            layout = {f"{PREFIX}/{key}/{s}": "" for key in keys for s in range(self.slots)}
            layout |= {f"{PREFIX}/lease_s": str(self.lease_s), f"{PREFIX}/view": View(0, ()).encode()}
            for key, value in layout.items():
                self.store.set(key, value)
            self.store.set(f"{PREFIX}/slots", str(self.slots))
        elif stored_slots != self.slots:
            raise DasrError(f"the store's run has {stored_slots} slots, not {self.slots}")
        else:
            view = read_view(self.store)
            self.version = view.version
            self.live = {s: inc + "*" * (s in view.ready) for s, inc in view.members}
            self._resyncs = int(self.store.add(f"{PREFIX}/resync", 0))
            self._seen = {}
            # a resync asked while nobody decided would go unanswered (each worker asks once per view)
            self._fresh_view = view.version > 0
            self._first_join = time.monotonic() if view.version == 0 else None
        self.in_office = True

    def _candidates(self, now: float) -> dict[int, str]:
        """Slots whose current incarnation joined, has not left, and holds its lease (``*``: and is ready)."""
        kinds = ("join", "left", "ready", "expired", "beat")
        keys = [f"{PREFIX}/{k}/{s}" for k in kinds for s in range(self.slots)]
        values = [v.decode() for v in self.store.multi_get(keys)]  # one read (on etcd: one request)
        n = self.slots
        joins, lefts, readies, expired, beats = (values[i * n : (i + 1) * n] for i in range(len(kinds)))
        if now - self._last_poll > self.lease_s / 2:  # this coordinator's own reads were held up: nobody's fault
            self._seen = {}
        self._last_poll = now
        out = {}
        for s in range(self.slots):
            inc = joins[s]
            beat = beats[s] if beats[s].startswith(f"{inc} ") else ""  # a lost incarnation's beats hold no lease
            if not inc or inc in (lefts[s], expired[s]):
                continue
            seen = self._seen.get(s)
            if seen is None or seen[0] != inc or seen[1] != beat:
                self._seen[s] = (inc, beat, now)
            elif now - seen[2] > self.lease_s:  # kept in the store: a replica taking over must not let it back in
                self.store.set(f"{PREFIX}/expired/{s}", inc)
                continue
            out[s] = inc + "*" * (readies[s] == inc)
        return out

    def poll(self) -> View | None:
        """Check leases once; publish and return a new view if the live set changed."""
        now = time.monotonic()
        live = self._candidates(now)
        if self.version == 0:
            if live and self._first_join is None:
                self._first_join = now
            if len(live) < self.slots and (self._first_join is None or now - self._first_join < self.settle_s):
                return None
        resync = self._resync_asked() or self._fresh_view
        if live == self.live and not resync:
            return None
        for s, inc in self.live.items():
            if live.get(s, "").rstrip("*") != inc.rstrip("*"):
                release_claim(self.store, PREFIX, s, inc.rstrip("*"))
        view = View.decode(f"{self.version + 1} " + ",".join(f"{s}:{i}" for s, i in sorted(live.items())))
        if not self.leadership.publish(
            {f"{PREFIX}/view/{view.version}": view.encode(), f"{PREFIX}/view": view.encode()}
        ):
            self.in_office = False  # another replica took over: it decides from what the store holds
            return None
        self.live, self.version, self._fresh_view = live, view.version, False
        return view

    def _resync_asked(self) -> bool:
        """A member asked for a new view of the same members (its gossip pairs fell silent, see
        :class:`dasr.parallel.elastic.ElasticGossiper`): the switch realigns rounds and pair groups."""
        asked = int(self.store.add(f"{PREFIX}/resync", 0))
        if asked == self._resyncs or self.version == 0:
            return False
        self._resyncs = asked
        return True

    def serve(self, poll_s: float = 0.1, parent: int | None = None, until_run_ends: bool = False) -> None:
        """Poll until the launcher sets ``dasr-elastic/stop`` (or, given its ``parent`` pid, dies);
        ``until_run_ends``: also stop once the run is over (see :meth:`run_over`). A replica on etcd
        decides only while it leads."""
        while parent is None or os.getppid() == parent:
            try:
                if self.store.check([f"{PREFIX}/stop"]) or (until_run_ends and self.run_over()):
                    return
                if self.leadership.held():
                    self._decide()
                else:
                    self.in_office = False
                    time.sleep(FOLLOWER_POLL_S)  # only campaigning: a new leader is due a lease later anyway
            except dist.DistError as e:  # etcd out of reach from here: the replicas that reach it decide
                if isinstance(self.leadership, SoleDecider):
                    raise
                log.warning("coordinator replica: the store does not answer (%s)", e)
                self.in_office = False
            time.sleep(poll_s)

    def _decide(self) -> None:
        """Take office if this coordinator is not in it yet, and poll once."""
        if not self.in_office:
            self.take_office()
            log.info("coordinator in office at view version %d", self.version)
        self.poll()

    def run_over(self) -> bool:
        """Nobody is live after the first view, and some worker left on purpose (finished): the run ended.

        A coordinator started apart ends then, so that a second run cannot find the first one's
        claims, epochs and averages on its store (it would train nothing and say nothing). Read
        from the store, so a replica that does not lead sees it too."""
        return finished_run(self.store)


class Member:
    """This worker's place in the run: its join record and the heartbeat thread that holds its lease.

    Args:
        address: the run's store: the coordinator's ``host:port``, or ``etcd://...``.
        slot: this worker's slot (its rank in the run's numbering; a replacement takes the dead one's).
        heartbeat_s: seconds between heartbeats (well under the coordinator's lease).
    """

    def __init__(self, address: str, slot: int, heartbeat_s: float = 0.2):
        self.address, self.slot, self.heartbeat_s = address, slot, heartbeat_s
        self.store = connect(address)
        self.slots = int(self.store.get(f"{PREFIX}/slots"))
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside the run's {self.slots} slots")
        self.incarnation = ""
        self._stop = threading.Event()
        self._beats_sent = 0
        self._beats = threading.Thread(target=self._beat, name=f"dasr-lease-{slot}", daemon=True)

    def join(self) -> str:
        """Write a new incarnation for this slot (also to come back after being dropped); returns it."""
        self.incarnation = uuid.uuid4().hex[:8]
        self._beat_once(self.store)
        self.store.set(f"{PREFIX}/join/{self.slot}", self.incarnation)
        if not self._beats.is_alive() and not self._stop.is_set():
            self._beats.start()
        return self.incarnation

    def _beat(self) -> None:
        store: dist.Store | None = None
        while not self._stop.wait(self.heartbeat_s):
            try:
                store = store or connect(self.address)
                self._beat_once(store)
            except RuntimeError:  # the store does not answer (DistNetworkError is one): it may again (etcd's quorum)
                store = None

    def _beat_once(self, store: dist.Store) -> None:
        """Move this slot's heartbeat: a value it never held (one write, where ``add`` is a read and a write on etcd)."""
        self._beats_sent += 1
        store.set(f"{PREFIX}/beat/{self.slot}", f"{self.incarnation} {self._beats_sent}")

    def mark_ready(self, store: dist.Store) -> None:
        """This incarnation holds the live set's model now (the next view says so); ``store``: the caller's client."""
        store.set(f"{PREFIX}/ready/{self.slot}", self.incarnation)

    def view(self, store: dist.Store | None = None) -> View:
        """The current view (read through ``store``, e.g. a thread's own client, or this member's)."""
        return read_view(store or self.store)

    def leave(self) -> None:
        """Leave on purpose: the coordinator drops this slot at once, and its claims are done."""
        self._stop.set()
        try:
            self.store.set(f"{PREFIX}/left/{self.slot}", self.incarnation)
        except RuntimeError:
            pass


def claims_summary(store: dist.Store) -> dict:
    """What the run's batch claims came to: batches trained once, twice or more, re-offered, left re-offered."""
    keys = store.list_keys()
    counts = [int(store.add(k, 0)) for k in keys if k.startswith(f"{PREFIX}/done/")]
    epochs = {k.split("/")[2] for k in keys if k.startswith(f"{PREFIX}/reoffered/")}
    reoffered = [int(store.add(k, 0)) for k in keys if k.startswith(f"{PREFIX}/reoffered/")]
    return {
        "batches_trained": len(counts),
        "trained_once": sum(c == 1 for c in counts),
        "trained_twice_or_more": sum(c > 1 for c in counts),
        "reoffered": sum(reoffered),
        "reoffered_never_taken": sum(int(store.queue_len(f"{PREFIX}/requeue/{e}")) for e in epochs),
    }


def start_coordinator(
    slots: int, lease_s: float = 5.0, settle_s: float = 60.0, store: str = ""
) -> tuple[subprocess.Popen, str]:
    """Start the coordinator in a process of its own; returns it and the run's store address.

    Without ``store`` it serves a TCPStore on 127.0.0.1; with an etcd ``store`` it is one replica
    of the run's coordinator there (it decides while it holds the leadership)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dasr.parallel.membership", str(slots), "--lease-s", str(lease_s)]
        + ["--settle-s", str(settle_s), "--exit-with-parent"]
        + (["--store", store] if store else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("serving "):
        proc.kill()
        raise RuntimeError(f"the elastic coordinator did not start (it said {line!r})")
    return proc, line.split()[1]


def stop_coordinator(proc: subprocess.Popen, address: str) -> None:
    """Ask the coordinator to end, and wait for it (killing it if it does not).

    A replica on etcd is ended alone: ``stop`` on the shared store would end every node's replica."""
    try:
        if is_etcd_address(address):
            proc.terminate()
        else:
            connect(address, timeout_s=5).set(f"{PREFIX}/stop", "1")
        proc.wait(timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def finished_run(store: dist.Store) -> bool:
    """Whether the store holds a run that is over (see :meth:`Coordinator.run_over`): a new run needs
    a store of its own (on etcd, a namespace of its own)."""
    if not store.check([f"{PREFIX}/slots", f"{PREFIX}/view"]):
        return False
    view, slots = read_view(store), int(store.get(f"{PREFIX}/slots"))
    return view.version > 0 and not view.members and any(store.multi_get([f"{PREFIX}/left/{s}" for s in range(slots)]))


def main() -> None:
    """``python -m dasr.parallel.membership SLOTS``: serve the store and decide membership until stopped.

    On one machine ``dasr train --elastic`` starts it (``--exit-with-parent``). For several machines
    start it on its own host, e.g. ``--host 10.0.0.5 --port 29600``, and give every node's
    ``dasr train --elastic --coordinator 10.0.0.5:29600``; it then serves one run, prints what the
    batch claims came to and exits when the run is over (or at Ctrl-C). With ``--store
    etcd://...`` it serves nothing: it is one replica of the run's coordinator on that etcd
    cluster (``dasr train --elastic --coordinator etcd://...`` starts one on every node).
    """
    parser = argparse.ArgumentParser(description="elastic adpsgd coordinator: store, leases, views")
    parser.add_argument("slots", type=int, help="worker slots of the run: nproc x nnodes")
    parser.add_argument("--lease-s", type=float, default=5.0, help="seconds without a heartbeat before a drop")
    parser.add_argument("--settle-s", type=float, default=60.0, help="the first view waits this long for all slots")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    parser.add_argument("--store", default="", help="etcd://HOST:PORT,...[/NAMESPACE]: a replica on etcd, no own store")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the starting process dies")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store: dist.Store
    leadership: SoleDecider | EtcdLeadership
    if args.store:
        etcd = EtcdStore.from_address(args.store, timeout_s=args.lease_s)
        store, leadership = etcd, EtcdLeadership(etcd, ttl_s=args.lease_s)
        print(f"serving {args.store} as a coordinator replica", flush=True)
    else:
        tcp = serve_store(args.port, args.host)
        store, leadership = tcp, SoleDecider(tcp)
        print(f"serving {args.host}:{tcp.port}", flush=True)
    coordinator = Coordinator(store, args.slots, args.lease_s, args.settle_s, leadership)
    try:
        if args.exit_with_parent:
            coordinator.serve(parent=os.getppid())
        else:
            coordinator.serve(until_run_ends=True)
            print(f"run over; batch claims: {claims_summary(store)}", flush=True)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
