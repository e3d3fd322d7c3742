"""N simulated learners running one strategy on the event kernel; samples/s out.

What each learner does mirrors ``dasr.parallel`` (see docs/DESIGN.md):

* every step: ``compute_s`` of work (forward, backward, clip; drawn with coefficient of
  variation ``compute_cv``), a straggler's sleep of ``(factor-1) x`` that compute's wall
  time (no core used), then ``other_s`` of work (optimizer step, loader);
* ``sync``: a barrier per step, then a ring all-reduce of the gradients over all learners;
* ``adpsgd``: no barrier; a gossip thread per learner runs round ``k`` with partner
  ``topology.matching(graph, N, seed, k)`` (the real schedule), waiting only for that
  partner, at most one round per ``gossip_period_s``; a round costs the pair average plus
  ``GOSSIP_PASSES`` memory passes over the parameters (snapshot, copies, merge);
* ``hybrid``: ``sync`` inside groups of ``group_size`` consecutive learners; member ``m`` of
  each group gossips ``1/g`` of the parameters with member ``m`` of the partner group; a
  group's next step all-gathers the pending shards; one tiny all-reduce per step;
* ``localsgd``: local steps; after the first step and every ``average_period``-th after it
  (PyTorch's ``PeriodicModelAverager``) a barrier and a ring all-reduce of the parameters;
* ``ps``: a server thread in learner 0's process, serving the other learners' pushes one at a
  time in arrival order (receive, apply: ``APPLY_PASSES`` memory passes, send); a worker waits
  for its answer; learner 0 applies its own gradient to the master directly (as ``dasr.parallel.ps``).

On a machine whose communication runs on the CPU (gloo over loopback), every transfer is
``Cpu`` work of the processes taking part, competing for the shared cores; on a GPU cluster
transfers take wall time only.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

from dasr.parallel import STRATEGIES, topology
from lab.sim import model
from lab.sim.engine import Cpu, Engine, Event, Sleep, Wait, aggregate_speed
from lab.sim.model import Link

#: memory passes over the parameter vector per gossip round: snapshot, copy into the buffer, halve, subtract, merge
GOSSIP_PASSES = 5
#: memory passes per server update: weight decay, momentum, Nesterov term, parameter update, copy out
APPLY_PASSES = 5
#: the size of hybrid's per-step "anything pending?" all-reduce
FLAG_BYTES = 4


@dataclass
class Workload:
    """One learner's step and what its strategy moves.

    Args:
        compute_s: work of forward + backward + clip per step (one core / one device).
        other_s: work of the rest of a step (optimizer, loader).
        samples_per_step: utterances (or samples) per learner step.
        param_bytes: size of the parameter (= gradient) vector.
        pass_s: one memory pass over that vector (copy or axpy), for gossip and server work.
        compute_cv: coefficient of variation of ``compute_s`` from step to step (lognormal).
        gossip_period_s: adpsgd/hybrid: a gossip round starts at most this often (0: back to back).
        group_size: hybrid: learners per sync group.
        average_period: localsgd: steps between two parameter all-reduces.
        graph: gossip graph (``ring``, ``random-ring``, ``exponential``).
        stragglers: ``{rank: factor}``, a factor >= 1 stretching that rank's compute by sleeping.
    """

    compute_s: float
    samples_per_step: float
    param_bytes: float
    other_s: float = 0.0
    pass_s: float = 0.0
    compute_cv: float = 0.0
    gossip_period_s: float = 0.0
    group_size: int = 1
    average_period: int = 8
    graph: str = "ring"
    stragglers: dict[int, float] = field(default_factory=dict)


@dataclass
class Cluster:
    """Where the learners run.

    Args:
        cores: cores all learners share (None: each learner has its own processor).
        link: link between learners on different nodes.
        node_link: link between learners of one node (None: ``link``).
        node_size: learners per node.
        comm_on_cpu: transfers are CPU work of the processes involved (gloo on CPU), not wall time only.
        speedup: ``{k: s(k)}``, measured aggregate speed of ``k`` tasks on the shared cores relative to
            one (None: ideal processor sharing); see :class:`lab.sim.engine.Engine`.
    """

    cores: int | None
    link: Link
    node_link: Link | None = None
    node_size: int = 1
    comm_on_cpu: bool = False
    speedup: dict[int, float] | None = None

    def link_for(self, ranks: list[int]) -> Link:
        """The slowest link a collective over ``ranks`` crosses."""
        same_node = len({r // self.node_size for r in ranks}) == 1
        return self.node_link if same_node and self.node_link is not None else self.link


@dataclass
class Result:
    """What a simulated run measured (after the warm-up)."""

    strategy: str
    nproc: int
    samples_per_s: float
    steps: list[int]
    step_s: float  # median over learners of the mean wall time per step
    gossip_rounds: int = 0


def simulate(
    strategy: str, nproc: int, work: Workload, cluster: Cluster, steps: int = 200, warmup_steps: int = 10, seed: int = 0
) -> Result:
    """Run ``nproc`` learners of ``strategy`` until the slowest has done about ``warmup_steps + steps`` steps.

    Samples/s counts the steps finished between the end of the warm-up and the end of the run.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "single" and nproc != 1:
        raise ValueError("the single strategy runs one learner")
    if strategy == "hybrid" and (work.group_size < 1 or nproc % work.group_size):
        raise ValueError(f"hybrid group size {work.group_size} must divide {nproc}")
    run = _Run(strategy, nproc, work, cluster, seed)
    slowest = max([1.0, *work.stragglers.values()])
    if cluster.speedup is not None:
        crowding = nproc / aggregate_speed(nproc, cluster.speedup)
    else:
        crowding = max(1.0, nproc / (cluster.cores or nproc))
    one_step = (work.compute_s * slowest + work.other_s) * crowding
    t_warm = warmup_steps * one_step * 1.5
    t_end = t_warm + steps * one_step * 1.5
    run.engine.run(t_warm)
    at_warm = list(run.steps)
    run.engine.run(t_end)
    done = [b - a for a, b in zip(at_warm, run.steps)]
    span = t_end - t_warm
    per_rank = [span / d if d else math.inf for d in done]
    return Result(
        strategy, nproc, sum(done) * work.samples_per_step / span, done, float(np.median(per_rank)), run.gossip_rounds
    )


class _Run:
    """The processes of one simulated run and their shared state."""

    def __init__(self, strategy: str, n: int, work: Workload, cluster: Cluster, seed: int):
        self.engine = Engine(cluster.cores, cluster.speedup)
        self.strategy, self.n, self.work, self.cluster = strategy, n, work, cluster
        self.rng = np.random.default_rng(seed)
        self.steps = [0] * n
        self.gossip_rounds = 0
        self.pending = collections.defaultdict(bool)  # hybrid: group -> gossip result waiting
        self.queue: collections.deque = collections.deque()  # ps: (rank, done event)
        self.wake = Event()
        g = work.group_size if strategy == "hybrid" else 1
        for r in range(n):
            self.engine.spawn(self.learner(r))
        if strategy == "adpsgd" and n > 1:
            for r in range(n):
                self.engine.spawn(self.gossip(r, list(range(n)), r, work.param_bytes))
        if strategy == "hybrid" and n > g:
            planes = [list(range(m, n, g)) for m in range(g)]  # member m of every group
            for r in range(n):
                self.engine.spawn(self.gossip(r, planes[r % g], r // g, work.param_bytes / g))
        if strategy == "ps" and n > 1:
            self.engine.spawn(self.server())

    # -- helpers -------------------------------------------------------------------------------
    def comm(self, seconds: float):
        """Communication-side work lasting ``seconds`` (a transfer, a server update): CPU work where gloo
        runs on the CPU, wall time otherwise."""
        return Cpu(seconds) if self.cluster.comm_on_cpu else Sleep(seconds)

    def collective(self, key, ranks: list[int], seconds: float):
        """Barrier of ``ranks`` on ``key``, the transfer, and a closing barrier (all finish together)."""
        yield Wait(self.engine.rendezvous(("in", key), len(ranks)))
        yield self.comm(seconds)
        yield Wait(self.engine.rendezvous(("out", key), len(ranks)))

    def draw(self) -> float:
        cv = self.work.compute_cv
        if cv <= 0:
            return self.work.compute_s
        sigma2 = math.log1p(cv * cv)
        return self.work.compute_s * float(self.rng.lognormal(-sigma2 / 2, math.sqrt(sigma2)))

    # -- processes -----------------------------------------------------------------------------
    def learner(self, r: int):
        w, n, engine = self.work, self.n, self.engine
        factor = w.stragglers.get(r, 1.0)
        g = w.group_size if self.strategy == "hybrid" else n
        group = list(range(r - r % g, r - r % g + g))
        step = 0
        while True:
            t0 = engine.now
            yield Cpu(self.draw())
            if factor > 1:
                yield Sleep((factor - 1) * (engine.now - t0))
            if self.strategy in ("sync", "hybrid") and len(group) > 1:
                link = self.cluster.link_for(group)
                seconds = model.ring_allreduce_s(w.param_bytes, len(group), link)
                if self.strategy == "hybrid":
                    seconds += model.ring_allreduce_s(FLAG_BYTES, len(group), link)
                    if self.pending[group[0]]:
                        seconds += model.allgather_s(w.param_bytes, len(group), link) + w.pass_s
                yield from self.collective(("step", group[0], step), group, seconds)
                if r == group[0]:
                    self.pending[group[0]] = False
            elif self.strategy == "localsgd" and n > 1 and step % w.average_period == 0:
                link = self.cluster.link_for(group)
                yield from self.collective(("avg", step), group, model.ring_allreduce_s(w.param_bytes, n, link))
            elif self.strategy == "ps" and n > 1 and r == 0:  # rank 0 applies its own gradient to the master directly
                yield self.comm(APPLY_PASSES * w.pass_s)
            elif self.strategy == "ps" and n > 1:
                done = Event()
                self.queue.append((r, done))
                engine.fire(self.wake)
                yield Wait(done)
            yield Cpu(w.other_s)
            step += 1
            self.steps[r] += 1

    def gossip(self, r: int, plane: list[int], index: int, nbytes: float):
        """Learner ``r``'s gossip thread in ``plane`` (the ranks it may pair with), at ``index`` in it."""
        w, engine = self.work, self.engine
        passes = GOSSIP_PASSES * w.pass_s * nbytes / w.param_bytes
        k = 0
        while True:
            t0 = engine.now
            p = topology.matching(w.graph, len(plane), 0, k)[index]
            if p != index:
                pair = sorted((plane[index], plane[p]))
                yield from self.collective(
                    ("pair", *pair, k), pair, model.pair_average_s(nbytes, self.cluster.link_for(pair))
                )
                yield Cpu(passes)
                self.gossip_rounds += 1
                if self.strategy == "hybrid":
                    self.pending[r - r % w.group_size] = True
            k += 1
            yield Sleep(max(w.gossip_period_s - (engine.now - t0), 0.0))

    def server(self):
        """Learner 0's server thread: the other learners' pushes one at a time, in arrival order."""
        w, engine = self.work, self.engine
        while True:
            if not self.queue:
                self.wake = Event()
                yield Wait(self.wake)
                continue
            r, done = self.queue.popleft()
            yield self.comm(model.send_s(w.param_bytes, self.cluster.link_for([0, r])))
            yield self.comm(APPLY_PASSES * w.pass_s)
            yield self.comm(model.send_s(w.param_bytes, self.cluster.link_for([0, r])))
            engine.fire(done)
