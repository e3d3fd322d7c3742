"""Elastic ADPSGD: workers die, hang, are replaced and join while the others keep training.

Membership lives on a store outside every worker (:mod:`dasr.parallel.membership`): a lease per
worker and views with a version. Each worker's gossip thread (:class:`ElasticGossiper`)::

    every round:  read the view; a new version -> switch to it (below)
                  partner = matching(graph, len(view), seed, round) over the view's slots
                  exchange with it over the pair's gloo group of this version; a failure
                  (dead partner, timeout) is an idle round, and that partner is skipped
                  until the next version; one the view still holds two leases later was
                  not dead: ask the coordinator for a new view of the same members
    a switch:     announce (round, fresh) under switch/<version>; once every member of the
                  view did, all take round = max(announced) + 1; then each *fresh* member
                  (a replacement, or everyone at the first view) receives the parameters and
                  the optimizer's state from a holder over a pair group (a broadcast), and
                  only then trains or gossips

No exchange waits for a worker the view does not hold; the pair groups of a version are made
fresh for it, so a dead peer's group is never used again. :meth:`ElasticADPSGD.average` is a
collective over the live set that survives a member's death in the middle (a commit decided
by ``compare_set`` on the store, else the next attempt over the next view).

Usage, in a process started by :func:`dasr.parallel.elastic_launch.launch_elastic` (or with the
store address and slot given)::

    gossip = ElasticADPSGD(model, optimizer, graph="exponential", period_s=0.05)   # waits to be loaded
    claims = gossip.claims()                   # batches each trained once (loader.ElasticClaims)
    for batch in loader: loss_fn(model, batch).backward(); optimizer.step(); optimizer.zero_grad()
    gossip.average()                           # the exact average over the live workers
    gossip.close()
"""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from dasr.data.loader import ElasticClaims
from dasr.parallel import topology
from dasr.parallel.adpsgd import ADPSGD, DeviceCopies, comm_dtype
from dasr.parallel.flat import FlatParameters
from dasr.parallel.gossip import GossipError, _allreduce, average_with_partner
from dasr.parallel.membership import PREFIX, Member, View, connect, read_view
from dasr.parallel.strategy import PublicClassStrategy

__all__ = ["ElasticADPSGD", "ElasticAdpsgdStrategy", "ElasticGossiper"]

#: environment a launched elastic worker finds: the coordinator's store and its slot
STORE_ENV, SLOT_ENV = "DASR_ELASTIC_STORE", "DASR_ELASTIC_SLOT"
_POLL_S = 0.02


def pair_group(store: dist.Store, key: str, first: bool, timeout_s: float) -> Any:
    """A 2-rank gloo group rendezvousing under ``key`` (``first``: this side is rank 0)."""
    return dist.ProcessGroupGloo(dist.PrefixStore(key + "/", store), 0 if first else 1, 2, timedelta(seconds=timeout_s))


def _broadcast(group: Any, tensor: torch.Tensor) -> None:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait()


def _broadcast_bytes(group: Any, blob: torch.Tensor | None) -> torch.Tensor:
    """Broadcast a uint8 vector of any length from rank 0 (``blob``) to rank 1 (``None`` there)."""
    size = torch.tensor([0 if blob is None else blob.numel()], dtype=torch.int64)
    _broadcast(group, size)
    if blob is None:
        blob = torch.empty(int(size.item()), dtype=torch.uint8)
    _broadcast(group, blob)
    return blob


class ElasticGossiper:
    """The gossip thread of one elastic worker (see the module docs).

    Args:
        member: this worker's membership (slot, incarnation, store address).
        sizes: ``(numel, dtype)`` of each vector exchanged.
        read / merge: as :class:`dasr.parallel.gossip.Gossiper`'s; ``load(tensors, state)`` overwrites
            the live parameters, buffers and optimizer state with a donor's; ``donate()`` returns the
            tensors to send (room for them on a receiver), ``donate_state()`` the optimizer's state.
        pair_timeout_s: gloo and store timeout of a pair exchange (a dead partner costs this once).
    """

    def __init__(
        self,
        *,
        member: Member,
        graph: str,
        seed: int,
        sizes: list[tuple[int, torch.dtype]],
        read: Any,
        merge: Any,
        donate: Any,
        donate_state: Any,
        load: Any,
        period_s: float,
        pair_timeout_s: float,
    ):
        self.member, self.graph, self.seed, self.period_s = member, graph, seed, period_s
        self.read, self.merge, self.donate, self.load = read, merge, donate, load
        self.donate_state = donate_state
        self.pair_timeout_s = pair_timeout_s
        self.snaps = [torch.empty(n, dtype=dt) for n, dt in sizes]
        self.bufs = [torch.empty_like(s) for s in self.snaps]
        self.round = 0
        self.avg_seq = 0  # averages completed by the live set (a replacement takes its donor's)
        self.view: View | None = None
        self._admitted = ""  # the last incarnation of this worker a view held
        self.fresh = True
        self.loaded = threading.Event()
        self._groups: dict[int, Any] = {}
        self._suspects: dict[int, float] = {}  # partner -> when an exchange with it failed (monotonic)
        self._resync_asked_at = 0  # the view version whose resync this worker asked for
        self._cv = threading.Condition()
        self._stop = self._park = False
        self._parked_ack = threading.Event()
        self.error: BaseException | None = None
        self.stats: dict[str, float] = dict.fromkeys(
            ("rounds", "idle_rounds", "failed_exchanges", "model_exchanges", "model_bytes", "comm_s", "merge_s"), 0
        )
        self.stats.update(switches=0, donations_given=0, donations_received=0, rejoins=0, resyncs_asked=0, version=0)
        self._thread = threading.Thread(target=self._run, name=f"dasr-elastic-gossip-{member.slot}", daemon=True)

    # ---- main-thread side
    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self) -> None:
        if not self.started:
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def parked(self) -> bool:
        return self._park

    def park(self) -> None:
        """Stop exchanging (switches and donations go on) and wait until no exchange is in flight."""
        with self._cv:
            self._parked_ack.clear()
            self._park = True
            self._cv.notify_all()
        while not self._parked_ack.wait(1.0):
            self.raise_error()

    def resume(self) -> None:
        with self._cv:
            self._park = False
            self._cv.notify_all()

    def stop(self, wait_s: float) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(wait_s)

    def raise_error(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise GossipError(f"elastic gossip thread of slot {self.member.slot} failed: {err!r}") from err

    # ---- thread side
    def _wait(self, seconds: float) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._stop, timeout=seconds)

    def _run(self) -> None:
        try:
            store = connect(self.member.address, timeout_s=self.pair_timeout_s)
            resync_after_s = 2 * float(store.get(f"{PREFIX}/lease_s"))
            while not self._stop:
                t0 = time.perf_counter()
                view = read_view(store)
                if self.view is None or view.version != self.view.version:
                    self._switch(store, view)
                    continue
                if (self.member.slot, self.member.incarnation) not in view.members:
                    self._rejoin()
                    continue
                if self._park or self.fresh:
                    self._parked_ack.set()
                    self._wait(_POLL_S)
                    continue
                self._one_round(store, view)
                self._ask_resync(store, view, resync_after_s)
                left = self.period_s - (time.perf_counter() - t0)
                if left > 0:
                    self._wait(left)
        except BaseException as e:  # re-raised in the main thread by raise_error()
            self.error = e
            self._parked_ack.set()

    def _rejoin(self) -> None:
        """Not in the view: wait to be let in, or, dropped after being in (hung past the lease), join again fresh."""
        if self._admitted == self.member.incarnation:
            self.fresh = True
            self.member.join()
            self.stats["rejoins"] += 1
        self._parked_ack.set()
        self._wait(_POLL_S)

    def _one_round(self, store: dist.Store, view: View) -> None:
        slots = view.slots
        me = slots.index(self.member.slot)
        partner = slots[topology.matching(self.graph, len(slots), self.seed, self.round)[me]]
        if partner == self.member.slot or partner in self._suspects:
            self.stats["idle_rounds"] += 1
        else:
            try:
                self._exchange(self._group(store, view, partner), view)
            except RuntimeError:  # dead, hung or gone partner: an idle round, and no more tries this version
                self._suspects[partner] = time.monotonic()
                self._groups.pop(partner, None)
                self.stats["failed_exchanges"] += 1
        self.round += 1
        self.stats["rounds"] += 1

    def _ask_resync(self, store: dist.Store, view: View, after_s: float) -> None:
        """A partner silenced longer than ``after_s`` that the view still holds was not dead (a
        timeout at start-up, or rounds out of step after one): ask once per version for a new view
        of the same members, whose switch clears the suspects and realigns the rounds. Without it
        the pair stays silent to the next fault, in a run without faults to its end."""
        if not self._suspects or self._resync_asked_at == view.version:
            return
        if time.monotonic() - min(self._suspects.values()) > after_s:
            store.add(f"{PREFIX}/resync", 1)
            self._resync_asked_at = view.version
            self.stats["resyncs_asked"] += 1

    def _group(self, store: dist.Store, view: View, partner: int) -> Any:
        if partner not in self._groups:
            a, b = sorted((self.member.slot, partner))
            key = f"{PREFIX}/pairs/v{view.version}/{a}-{b}"
            self._groups[partner] = pair_group(store, key, self.member.slot == a, self.pair_timeout_s)
        return self._groups[partner]

    def _exchange(self, group: Any, view: View) -> None:
        t0 = time.perf_counter()
        header = torch.tensor([view.version, self.round], dtype=torch.int64)
        _allreduce(group, header)
        if header.tolist() != [2 * view.version, 2 * self.round]:
            raise RuntimeError(f"pair out of step: version/round sums {header.tolist()}")
        average_with_partner(group, self.read, self.merge, self.snaps, self.bufs, self.stats, t0)

    def _switch(self, store: dist.Store, view: View) -> None:
        """Agree on the round with every member of ``view``, then hand parameters to its fresh members."""
        self._groups.clear()
        self._suspects.clear()
        mine = (self.member.slot, self.member.incarnation)
        if mine not in view.members:
            self.view = view
            return
        key = f"{PREFIX}/switch/{view.version}"
        store.set(f"{key}/{self.member.slot}", f"{self.round} {int(self.fresh)} {self.avg_seq}")
        keys = [f"{key}/{s}" for s in view.slots]
        while not store.check(keys):
            if self._stop or read_view(store).version != view.version:
                return  # a newer view: switch to that one instead
            self._wait(_POLL_S)
        announced = [v.decode().split() for v in store.multi_get(keys)]
        self.round = max(int(a[0]) for a in announced) + 1
        self.view = view
        self._admitted = self.member.incarnation
        self.stats["switches"] += 1
        self.stats["version"] = view.version
        fresh = [s for s, a in zip(view.slots, announced, strict=True) if a[1] == "1"]
        holders = [s for s in view.slots if s not in fresh] or [fresh.pop(0)]
        if self.member.slot == holders[0] and self.fresh:  # the first view: its lowest slot is the model
            self.fresh = False
            self._loaded(store)
        for i, receiver in enumerate(fresh):
            donor = holders[i % len(holders)]
            if self.member.slot in (donor, receiver):
                self._hand_over(store, view, donor, receiver)

    def _loaded(self, store: dist.Store) -> None:
        """This worker holds the model: say so (the coordinator's next view counts it in averages)."""
        self.member.mark_ready(store)
        self.loaded.set()

    def _hand_over(self, store: dist.Store, view: View, donor: int, receiver: int) -> None:
        """Send (donor) or receive (receiver) the parameters, buffers, optimizer state and averaging count."""
        giving = self.member.slot == donor
        try:
            key = f"{PREFIX}/handover/v{view.version}/{donor}-{receiver}"
            group = pair_group(store, key, giving, 4 * self.pair_timeout_s)
            tensors = self.donate()
            seq = torch.tensor([self.avg_seq], dtype=torch.int64)
            for t in [seq, *tensors]:
                _broadcast(group, t)
            state = _broadcast_bytes(group, self.donate_state() if giving else None)
        except RuntimeError:
            if not giving:  # come back under a new incarnation: the next view finds another donor
                self.member.join()
                self.stats["rejoins"] += 1
            return
        if giving:
            self.stats["donations_given"] += 1
            return
        self.load(tensors, state)
        self.avg_seq = int(seq.item())
        self.fresh = False
        self.stats["donations_received"] += 1
        self._loaded(store)


class ElasticADPSGD(ADPSGD):
    """ADPSGD whose workers may die, hang or join at any time (see the module docs).

    Construct it in each worker after ``model.to(device)``; it needs no torch process group.
    The constructor joins the run and returns once this worker holds the live set's model
    (the first view's lowest slot's at the start; a live peer's when it replaces one).

    Args:
        model, optimizer, graph, period_s, seed: as :class:`ADPSGD`'s.
        address: the run's store: the coordinator's ``host:port``, or ``etcd://...`` (default: ``$DASR_ELASTIC_STORE``).
        slot: this worker's slot (default: ``$DASR_ELASTIC_SLOT``).
        pair_timeout_s: gloo timeout of a pair exchange: a dead or hung partner costs one idle
            round this long (the training thread never waits for it).
        join_timeout_s: how long the constructor waits to be let in and loaded.
    """

    name = "adpsgd-elastic"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        address: str | None = None,
        slot: int | None = None,
        graph: str = "exponential",
        period_s: float = 0.1,
        seed: int = 0,
        pair_timeout_s: float = 5.0,
        join_timeout_s: float = 300.0,
    ):
        if graph not in topology.GRAPHS:
            raise ValueError(f"unknown gossip graph {graph!r}; choose one of {', '.join(topology.GRAPHS)}")
        if period_s < 0 or pair_timeout_s <= 0:
            raise ValueError(f"need period_s >= 0 and pair_timeout_s > 0, got {period_s}, {pair_timeout_s}")
        address = address or os.environ.get(STORE_ENV, "")
        if not address or (slot is None and SLOT_ENV not in os.environ):
            raise ValueError(
                f"elastic adpsgd needs the coordinator's address and a slot (or ${STORE_ENV}, ${SLOT_ENV})"
            )
        self.model, self.optimizer, self.process_group = model, optimizer, None
        self.graph, self.seed, self.period_s, self.timeout_s = graph, seed, period_s, pair_timeout_s
        self.flat = FlatParameters(model)
        self.lock = threading.Lock()
        self._closed = self._in_step = False
        self._steps = 0
        self._lock_wait_s = self._average_s = 0.0
        self._slices = [slice(0, b.numel()) for b in self.flat.buffers]
        device = self.flat.buffers[0].device
        self.copies = DeviceCopies(device) if device.type == "cuda" else None
        self.member = Member(address, int(os.environ[SLOT_ENV]) if slot is None else slot)
        self.rank = self.member.slot
        self.leader = -1  # the lowest slot of the last average this worker took part in (who writes shared files)
        self.elastic = ElasticGossiper(
            member=self.member,
            graph=graph,
            seed=seed,
            sizes=[(b.numel(), comm_dtype(b.dtype)) for b in self.flat.buffers],
            read=self._read,
            merge=self._merge,
            donate=self._donation,
            donate_state=self._optimizer_state,
            load=self._load,
            period_s=period_s,
            pair_timeout_s=pair_timeout_s,
        )
        # ADPSGD's step hooks and stats() drive it through the main-thread methods Gossiper also has
        self.gossip = self.elastic  # type: ignore[assignment]
        if self.copies is not None:
            self._staging = [torch.empty(s.numel(), dtype=s.dtype, device=device) for s in self.elastic.snaps]
        t = time.perf_counter()
        self.member.join()
        self.elastic.start()
        self._wait_loaded(join_timeout_s)
        self.join_s = time.perf_counter() - t
        self._hooks: list[RemovableHandle] = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    def _wait_loaded(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.elastic.loaded.wait(0.5):
            self.elastic.raise_error()
            if time.monotonic() > deadline:
                self.elastic.stop(1.0)
                raise GossipError(f"slot {self.rank} was not let into the run within {timeout_s:.0f} s")

    def _float_buffers(self) -> list[torch.Tensor]:
        return [b for b in self.model.buffers() if b.is_floating_point()]

    def _donation(self) -> list[torch.Tensor]:
        """What a replacement receives: the parameters (a snapshot, or room for them) and float buffers."""
        snaps = [torch.empty_like(s) for s in self.elastic.snaps]
        if not self.elastic.fresh:
            self._read(snaps)
        return [*snaps, *(b.detach().cpu().clone() for b in self._float_buffers())]

    def _optimizer_state(self) -> torch.Tensor:
        """The optimizer's state, serialized: a replacement goes on with its donor's moments and step counts.

        Without them an AdamW replacement starts its moments at zero, and its first updates are
        full-size sign steps that gossip then spreads to every replica.
        """
        buffer = io.BytesIO()
        with self.lock:
            torch.save(self.optimizer.state_dict(), buffer)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    def _load(self, tensors: list[torch.Tensor], state: torch.Tensor) -> None:
        n = len(self.flat.buffers)
        optimizer_state = torch.load(io.BytesIO(state.numpy().tobytes()), map_location="cpu", weights_only=True)
        with self.lock, torch.no_grad():
            for b, t in zip(self.flat.buffers, tensors[:n], strict=True):
                b.copy_(t)
            for b, t in zip(self._float_buffers(), tensors[n:], strict=True):
                b.copy_(t)
            self.optimizer.load_state_dict(optimizer_state)

    def claims(self) -> ElasticClaims:
        """Batch claims of this run for this worker (each batch trained once; see loader.ElasticClaims)."""
        return ElasticClaims(connect(self.member.address), PREFIX, self.rank, lambda: self.member.incarnation)

    def average(self, timeout_s: float = 600.0, resume: bool = False) -> None:
        """Make every live replica the exact average of the ready replicas (collective over the live set).

        Workers that hold the model (the view's ``ready`` ones) take part; a replacement still
        loading does not wait for, nor is waited for. A member that dies in the middle makes the
        survivors try again over the next view. The ``k``-th call of every worker meets the
        others' ``k``-th (a replacement counts on from its donor's). The gossip stays parked until
        the next ``optimizer.step()``, or ``resume=True`` restarts it at once (then evaluate a copy).
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        t = time.perf_counter()
        self.flat.check()
        g = self.elastic
        g.park()
        LiveAverage(self, f"{PREFIX}/avg/{g.avg_seq}", timeout_s).run()
        g.avg_seq += 1
        if resume:
            g.resume()
        self._average_s += time.perf_counter() - t

    def state_dict(self) -> dict:
        return {"round": self.elastic.round, "graph": self.graph, "seed": self.seed, "elastic": True}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: an elastic worker takes the round and model from the live set when it joins."""

    def stats(self) -> dict:
        s = self.elastic.stats
        out = super().stats()
        out["join_s"] = self.join_s
        out["gossip_round_s"] = s["comm_s"] / s["model_exchanges"] if s["model_exchanges"] else 0.0
        return out

    def close(self) -> None:
        """Leave the run: stop the thread, give up the lease (nobody waits for this; idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._release()
        self.elastic.stop(wait_s=self.timeout_s + 5)
        self.member.leave()

    def abort(self, reason: str) -> None:
        """As :meth:`close`: in an elastic run a failing worker simply leaves."""
        self.close()


class LiveAverage:
    """One :meth:`ElasticADPSGD.average`: attempts over the current view until one commits."""

    def __init__(self, owner: ElasticADPSGD, key: str, timeout_s: float):
        self.owner, self.key, self.timeout_s = owner, key, timeout_s
        self.store = owner.member.store
        self.slot = owner.rank
        self.deadline = time.monotonic() + timeout_s

    def _check_time(self) -> None:
        self.owner.elastic.raise_error()
        if time.monotonic() > self.deadline:
            raise GossipError(f"slot {self.slot}: average() over the live set did not complete in {self.timeout_s} s")

    def run(self) -> None:
        attempt = 0
        while True:
            self._check_time()
            decided = f"{self.key}/{attempt}/decision"
            if self.store.check([decided]):  # decided without this worker (still loading, or late)
                if self.store.get(decided) == b"commit":
                    return self._late()
                attempt += 1
                continue
            view = read_view(self.store)
            me = (self.slot, self.owner.member.incarnation)
            if me not in view.members or self.slot not in view.ready:
                time.sleep(_POLL_S)  # not holding the model in this view: wait for a view that says so
                continue
            result = self._try(f"{self.key}/{attempt}", view)
            decision = self._decide(f"{self.key}/{attempt}", view, result is not None)
            if decision == "commit":  # without this worker's part if it has no result (another view's members)
                return self._apply(result, view) if result is not None else self._late()
            attempt += 1

    def _late(self) -> None:
        """The attempt committed without this worker (it was still loading): keep its replica, and leave
        evaluating and saving this average to the workers that made it."""
        self.owner.leader = -1

    def _try(self, attempt: str, view: View) -> list[torch.Tensor] | None:
        """All-reduce the ready replicas of ``view``; None if one failed, the view changed or the attempt was
        decided meanwhile (by members that saw another view)."""
        members = sorted(view.ready)
        o = self.owner
        key = f"{attempt}/v{view.version}"
        self.store.set(f"{key}/in/{self.slot}", "1")
        keys = [f"{key}/in/{s}" for s in members]
        while not self.store.check(keys):
            self._check_time()
            if read_view(self.store).version != view.version or self.store.check([f"{attempt}/decision"]):
                return None
            time.sleep(_POLL_S)
        tensors = [b.detach().to("cpu", torch.float64, copy=True) for b in [*o.flat.buffers, *o._float_buffers()]]
        done: list[bool] = []
        errors: list[BaseException] = []

        def all_reduce() -> None:
            try:
                client = connect(o.member.address, timeout_s=o.timeout_s)  # held here: see EtcdStore's docstring
                store = dist.PrefixStore(f"{key}/pg/", client)
                timeout = timedelta(seconds=4 * o.timeout_s)
                group = dist.ProcessGroupGloo(store, members.index(self.slot), len(members), timeout)
                for t in tensors:
                    _allreduce(group, t)
                done.append(True)
            except RuntimeError:  # a member failed or went: this attempt fails, the next view tries again
                done.append(False)
            except BaseException as e:  # a bug, not a fault: raised in the caller's thread below
                errors.append(e)

        # A member that died after announcing itself never connects, and gloo would wait out its
        # timeout (4 pair timeouts, 20 s by default) for it. So the all-reduce runs in a thread of
        # its own, and this attempt is given up as soon as a newer view has dropped one of its
        # members (a lease later). A member whose all-reduce had finished writes ok, but the
        # decision is abort all the same (_decide: a member gone without ok). The abandoned
        # thread holds only these copies, and ends at gloo's timeout.
        reducer = threading.Thread(target=all_reduce, name=f"dasr-elastic-average-{self.slot}", daemon=True)
        reducer.start()
        while reducer.is_alive():
            reducer.join(_POLL_S)
            if reducer.is_alive() and self._gone(view):
                return None
        if errors:
            raise errors[0]
        return [t.div_(len(members)) for t in tensors] if done == [True] else None

    def _gone(self, view: View) -> list[tuple[int, str]]:
        """The members of ``view`` that held the model and are not in the current view."""
        now = read_view(self.store)
        return [m for m in view.members if m[0] in view.ready and m not in now.members]

    def _decide(self, key: str, view: View, ok: bool) -> str:
        """Commit when every member's all-reduce succeeded; abort when one failed or left without success."""
        if ok:
            self.store.set(f"{key}/ok/{self.slot}", "1")
        while True:
            self._check_time()
            if self.store.check([f"{key}/decision"]):
                return self.store.get(f"{key}/decision").decode()
            if self.store.check([f"{key}/ok/{s}" for s in sorted(view.ready)]):
                return self.store.compare_set(f"{key}/decision", "", "commit").decode()
            if not ok or any(not self.store.check([f"{key}/ok/{s}"]) for s, _ in self._gone(view)):
                return self.store.compare_set(f"{key}/decision", "", "abort").decode()
            time.sleep(_POLL_S)

    def _apply(self, result: list[torch.Tensor], view: View) -> None:
        o = self.owner
        o.leader = min(view.ready)
        with o.lock, torch.no_grad():
            for b, t in zip([*o.flat.buffers, *o._float_buffers()], result, strict=True):
                b.copy_(t)


class ElasticAdpsgdStrategy(PublicClassStrategy):
    """The trainer's Strategy interface over :class:`ElasticADPSGD` (``dasr train --strategy adpsgd --elastic``).

    Batch claims come from the coordinator's store (:meth:`claims`, usable before :meth:`wrap`);
    evaluation and the saved model are the lowest live slot's (:meth:`leads`) after :meth:`consensus`.
    """

    name = "adpsgd"
    CONFIG_OPTIONS = {
        "graph": "graph",
        "seed": "seed",
        "period_s": "gossip_period_s",
        "pair_timeout_s": "pair_timeout_s",
    }
    independent_steps = True
    elastic = True

    def __init__(self, **options: Any):
        super().__init__()
        self.options = options
        self.address, self.slot = os.environ.get(STORE_ENV, ""), int(os.environ.get(SLOT_ENV, "-1"))
        if not self.address or self.slot < 0:
            raise ValueError(f"an elastic worker needs ${STORE_ENV} and ${SLOT_ENV} (start it with launch_elastic)")

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.impl = ElasticADPSGD(model, optimizer, address=self.address, slot=self.slot, **self.options)
        return model

    def claims(self) -> ElasticClaims:
        """This worker's batch claims (the incarnation is read when a claim is made)."""
        return ElasticClaims(connect(self.address), PREFIX, self.slot, lambda: self._impl().member.incarnation)

    def leads(self, rank: int) -> bool:
        return self._impl().leader == rank

    def resume(self) -> None:
        """Restart the gossip after :meth:`consensus` without a step (the leader evaluating a copy)."""
        self._impl().elastic.resume()

    def live_epoch(self) -> int:
        """The earliest epoch a live member is in (where a replacement starts; 0 at the start)."""
        store = self._impl().member.store
        keys = [f"{PREFIX}/epoch/{s}" for s in read_view(store).slots if s != self.slot]
        return min((int(store.get(k)) for k in keys if store.check([k])), default=0)

    def announce_epoch(self, epoch: int) -> None:
        """Tell replacements which epoch this worker trains."""
        self._impl().member.store.set(f"{PREFIX}/epoch/{self.slot}", str(epoch))
