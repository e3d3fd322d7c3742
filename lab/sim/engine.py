"""A small discrete-event kernel (heapq) with processes as generators and processor sharing on C cores.

A process is a generator that yields requests and is resumed when they are done::

    def worker(engine):
        yield Cpu(0.3)               # 0.3 s of work on one core; slower while > C tasks compute
        yield Sleep(0.1)             # wall time that uses no core (a straggler's sleep, a NIC transfer)
        yield Wait(event)            # until someone calls event.fire()

    engine = Engine(cores=2)
    engine.spawn(worker(engine))
    engine.run(until=60.0)

Processor sharing: with ``k`` tasks in ``Cpu`` and ``C`` cores, each progresses at rate
``min(1, C / k)`` (``cores=None``: every task has its own processor, rate 1). Real cores
share less than ideally (SMT siblings, memory bandwidth, caches): given measured
``speedup = {k: s(k)}``, the aggregate speed of ``k`` concurrent tasks relative to one
alone, each progresses at ``s(k) / k`` instead (:func:`aggregate_speed` interpolates ``s``)::

    engine = Engine(cores=2, speedup={1: 1.0, 2: 1.8, 4: 1.65})
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

Process = Generator


@dataclass
class Cpu:
    """Request ``work`` seconds of one core's time."""

    work: float


@dataclass
class Sleep:
    """Request ``seconds`` of wall time that uses no core."""

    seconds: float


@dataclass
class Event:
    """Fires once; processes waiting on it resume at that moment."""

    fired: bool = False
    waiters: list = field(default_factory=list)


@dataclass
class Wait:
    """Request: resume when ``event`` has fired (at once if it already has)."""

    event: Event


def aggregate_speed(k: int, speedup: dict[int, float]) -> float:
    """``s(k)``: measured aggregate speed of ``k`` concurrent tasks, linear between measured counts.

    ``s(1) = 1`` by definition; beyond the largest measured count the aggregate stays at its
    last value (the cores are saturated: more tasks only split the same throughput).
    """
    counts = sorted({1, *speedup})
    return float(np.interp(k, counts, [speedup.get(c, 1.0) for c in counts]))


class Engine:
    """Runs processes in simulated time; ``now`` is the current time in seconds.

    Args:
        cores: cores all tasks share (None: every task has its own processor).
        speedup: ``{k: s(k)}`` measured on those cores (None: ideal sharing, ``s(k) = min(k, cores)``).
    """

    def __init__(self, cores: int | None = None, speedup: dict[int, float] | None = None):
        if cores is not None and cores < 1:
            raise ValueError(f"cores must be >= 1 or None, got {cores}")
        if speedup is not None and (cores is None or any(k < 1 or s <= 0 for k, s in speedup.items())):
            raise ValueError(f"speedup needs shared cores, counts >= 1 and positive factors, got {speedup}")
        self.cores = cores
        self.speedup = speedup
        self.now = 0.0
        self._timers: list = []  # (time, seq, process)
        self._seq = itertools.count()
        self._computing: dict[int, list] = {}  # seq -> [remaining work, process]
        self._rendezvous: dict = {}

    def spawn(self, process: Process) -> None:
        """Start ``process`` at the current time."""
        self._at(self.now, process)

    def fire(self, event: Event) -> None:
        """Fire ``event``: its waiters resume now."""
        if event.fired:
            return
        event.fired = True
        for p in event.waiters:
            self._at(self.now, p)
        event.waiters.clear()

    def rendezvous(self, key, count: int) -> Event:
        """The event that fires when ``count`` callers have asked for ``key`` (a barrier; fires at the last arrival)."""
        entry = self._rendezvous.setdefault(key, [0, Event()])
        entry[0] += 1
        event = entry[1]
        if entry[0] >= count:
            del self._rendezvous[key]
            self.fire(event)
        return event

    def rate(self) -> float:
        """Progress per second of each computing task now."""
        k = len(self._computing)
        if self.cores is None or k == 0:
            return 1.0
        if self.speedup is not None:
            return aggregate_speed(k, self.speedup) / k
        return 1.0 if k <= self.cores else self.cores / k

    def run(self, until: float) -> None:
        """Advance time to ``until`` (or until nothing is left to do)."""
        while True:
            rate = self.rate()
            t_cpu = math.inf
            if self._computing:
                first = min(self._computing, key=lambda s: self._computing[s][0])
                t_cpu = self.now + self._computing[first][0] / rate
            t_timer = self._timers[0][0] if self._timers else math.inf
            t_next = min(t_cpu, t_timer)
            if t_next > until:
                self._progress(until - self.now, rate)
                self.now = until
                return
            self._progress(t_next - self.now, rate)
            self.now = t_next
            if t_cpu <= t_timer:
                done = [s for s, (left, _) in self._computing.items() if left <= 1e-12 or s == first]
                for s in sorted(done):
                    self._resume(self._computing.pop(s)[1])
            else:
                _, _, process = heapq.heappop(self._timers)
                self._resume(process)

    def _progress(self, dt: float, rate: float) -> None:
        for entry in self._computing.values():
            entry[0] -= dt * rate

    def _at(self, t: float, process: Process) -> None:
        heapq.heappush(self._timers, (t, next(self._seq), process))

    def _resume(self, process: Process) -> None:
        try:
            request = next(process)
        except StopIteration:
            return
        if isinstance(request, Cpu):
            if request.work <= 0 or self.cores is None:  # own processor: plain wall time
                self._at(self.now + max(request.work, 0.0), process)
            else:
                self._computing[next(self._seq)] = [request.work, process]
        elif isinstance(request, Sleep):
            self._at(self.now + max(request.seconds, 0.0), process)
        elif isinstance(request, Wait):
            if request.event.fired:
                self._at(self.now, process)
            else:
                request.event.waiters.append(process)
        else:
            raise TypeError(f"a process yielded {request!r}; expected Cpu, Sleep or Wait")
