"""``adpsgd``: asynchronous decentralized parallel SGD (Lian et al., ICML 2018).

Each worker applies its own gradients to its own replica. A communication thread per
worker averages the whole model with one partner at a time, at its own pace (every
``period_s`` seconds), independent of the training loop:

1. under the lock it shares with the optimizer step, copy the flat parameter vector
   (all parameters are views of one flat buffer) into a CPU snapshot;
2. with no lock held, all-reduce the snapshot with round ``k``'s partner
   (:func:`dasr.parallel.topology.matching`) on that pair's own gloo group, halve it;
3. under the lock, add ``average - snapshot`` into the live parameters in place, so the
   local updates made meanwhile are kept. The sum of all replicas is unchanged.

Rounds run strictly in order and a rank waits only for its round-``k`` partner, so pairs
always meet: no server, no global barrier. A slow worker contributes fewer gradients but
does not slow anyone's averaging (its thread keeps pace).

Agreeing on a round (stop, pause for consensus): with every exchange the pair also
all-reduces (MAX) a small header with one slot per rank. When a rank's main thread asks
for a stop or a pause, its thread writes the current round into its slot. Once a thread
sees all slots filled, every rank computes the same round ``P = K + D`` (``K``: the
largest slot, ``D``: rounds the schedule needs from ``K`` to spread anything to
everyone); each rank has seen all slots by the end of round ``P - 1``, so all ranks run
exactly rounds ``< P`` and stop (or park) there. Nobody is left waiting for a partner.

``consensus()`` pauses every thread at such an agreed round, then averages all replicas
once with an all-reduce on the default group from the main thread. The thread stays
parked (the model is stable for evaluation and checkpointing) until the next ``step()``.
A worker may stay away from gossip (parked, e.g. for a long evaluation) at most
``timeout_s`` while the others already run: set it accordingly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from dasr.parallel import topology
from dasr.parallel.strategy import Strategy

_PAUSE, _STOP = 1, 2
_KIND_NAME = {_PAUSE: "consensus()", _STOP: "close()"}


class GossipError(RuntimeError):
    """The communication thread failed; raised in the main thread."""


# --------------------------------------------------------------------------- helpers


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """Make every parameter of ``model`` a view of one flat buffer; return the buffer.

    Parameters keep their identity (the optimizer still holds them); only their storage
    moves. All parameters must share dtype and device. Call it after ``model.to(device)``
    and do not move the model afterwards (cuDNN RNNs would re-flatten their weights into a
    buffer of their own, outside ``flat``).
    """
    params = [p for p in model.parameters()]
    if not params:
        raise ValueError("the model has no parameters")
    dtypes = {(p.dtype, p.device) for p in params}
    if len(dtypes) != 1:
        raise ValueError(f"gossip needs one dtype and device for all parameters, got {sorted(map(str, dtypes))}")
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        offset = 0
        for p in params:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            offset += n
    # Do not let cuDNN RNNs re-flatten (``flatten_parameters``/``_init_flat_weights`` or
    # ``.to()`` after this point would move their weights out of ``flat`` again).
    return flat


def make_pair_groups(
    planes: list[list[int]], graph: str, seed: int, timeout_s: float, rank: int
) -> tuple[int, int, dict[tuple[int, int], object]]:
    """Create one gloo group per pair the schedule can produce in every plane.

    ``planes[q]`` lists the global ranks gossiping together (plane index = gossip rank).
    Every rank must call this with the same arguments: groups are created in one sorted
    global order, on the main thread, before any thread starts.

    Returns:
        (my plane, my index in it, {(a, b) in plane indices: group}) for this rank's pairs.
    """
    todo = []
    for q, members in enumerate(planes):
        for a, b in topology.pairs(graph, len(members), seed):
            todo.append((sorted((members[a], members[b])), q, a, b))
    todo.sort()
    mine: dict[tuple[int, int], object] = {}
    my_plane = next(q for q, m in enumerate(planes) if rank in m)
    my_index = planes[my_plane].index(rank)
    for ranks, q, a, b in todo:
        g = dist.new_group(ranks, backend="gloo", timeout=timedelta(seconds=timeout_s))
        if q == my_plane and my_index in (a, b):
            mine[(a, b)] = g
    return my_plane, my_index, mine


class Gossiper:
    """The communication thread of one worker in one gossip plane.

    Args:
        groups: this rank's pair groups, ``{(a, b): group}`` in plane indices.
        size: ranks in the plane; ``index``: this rank's index in it.
        numel: length of the vector being averaged.
        read: ``read(out)`` fills the CPU tensor ``out`` with the current vector (takes the lock).
        merge: ``merge(delta)`` adds ``delta`` (CPU) into the live vector (takes the lock).
    """

    def __init__(
        self,
        *,
        groups,
        size: int,
        index: int,
        graph: str,
        seed: int,
        numel: int,
        read: Callable[[torch.Tensor], None],
        merge: Callable[[torch.Tensor], None],
        period_s: float,
        pin_memory: bool = False,
    ):
        self.groups, self.size, self.index = groups, size, index
        self.graph, self.seed, self.period_s = graph, seed, period_s
        self.read, self.merge = read, merge
        self.snap = torch.empty(numel, dtype=torch.float32, pin_memory=pin_memory)
        self.buf = torch.empty_like(self.snap)
        self.header = torch.zeros(size, dtype=torch.int64)
        self.round = 0  # next round to run
        self._cv = threading.Condition()
        self._parked = True  # waits for resume() or a request
        self._request: int | None = None  # _PAUSE / _STOP asked by the main thread
        self._agreed: int | None = None
        self._barrier_done = threading.Event()
        self.error: BaseException | None = None
        self.stats = {"rounds": 0, "idle_rounds": 0, "comm_s": 0.0, "merge_s": 0.0, "barriers": 0}
        self._thread = threading.Thread(target=self._run, name=f"dasr-gossip-{index}", daemon=True)
        self._started = False

    # ---- main-thread side
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
        """Ask the thread to stop (``_STOP``) or park (``_PAUSE``) at a round all ranks agree on; wait for it."""
        self.start()
        with self._cv:
            self._barrier_done.clear()
            self._request = kind
            self._cv.notify_all()
        while not self._barrier_done.wait(1.0):
            if not self._thread.is_alive():
                break
        self.raise_error()
        if kind == _STOP:
            self._thread.join()

    def raise_error(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise GossipError(
                f"gossip thread of plane rank {self.index} failed at round {self.round}: {err!r}"
            ) from err

    # ---- thread side
    def _agreed_round(self) -> int | None:
        if self._agreed is None and bool((self.header > 0).all()):
            k_max = int((self.header // 4).max()) - 1
            self._agreed = k_max + topology.spread_rounds(self.graph, self.size, self.seed, k_max)
        return self._agreed

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

    def _exchange(self, group) -> None:
        t0 = time.perf_counter()
        dist.all_reduce(self.header, op=dist.ReduceOp.MAX, group=group)
        self.read(self.snap)
        self.buf.copy_(self.snap)
        dist.all_reduce(self.buf, group=group)
        t1 = time.perf_counter()
        self.buf.mul_(0.5).sub_(self.snap)
        self.merge(self.buf)
        self.stats["comm_s"] += t1 - t0
        self.stats["merge_s"] += time.perf_counter() - t1

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: not self._parked or self._request is not None)
                    request = self._request
                    if request is not None and self.header[self.index] == 0:
                        self.header[self.index] = (self.round + 1) * 4 + request
                agreed = self._agreed_round()
                if agreed is not None and self.round >= agreed:
                    kind = self._finish_barrier()
                    with self._cv:
                        self._request = None
                        self._parked = True
                    self._barrier_done.set()
                    if kind == _STOP:
                        return
                    continue
                t0 = time.perf_counter()
                p = topology.matching(self.graph, self.size, self.seed, self.round)[self.index]
                if p == self.index:
                    self.stats["idle_rounds"] += 1
                else:
                    self._exchange(self.groups[(min(p, self.index), max(p, self.index))])
                self.round += 1
                self.stats["rounds"] += 1
                if request is None and self.period_s > 0:  # pace; a request skips the wait
                    left = self.period_s - (time.perf_counter() - t0)
                    if left > 0:
                        with self._cv:
                            self._cv.wait_for(lambda: self._request is not None, timeout=left)
        except BaseException as e:
            self.error = e
            self._barrier_done.set()


# --------------------------------------------------------------------------- strategy


class AdpsgdStrategy(Strategy):
    """ADPSGD: local SGD steps + a gossip thread averaging with one partner at a time.

    Args:
        graph: gossip graph (``ring``, ``random-ring``, ``exponential``).
        seed: schedule seed, the same on every worker.
        period_s: the thread starts a round at most every ``period_s`` seconds (0: free-running).
        timeout_s: gloo timeout of the pair exchanges; also the longest a worker may be
            away from gossip (parked after :meth:`consensus`) while the others run.
        sync_init: broadcast rank 0's parameters in :meth:`wrap` so all replicas start equal.
    """

    name = "adpsgd"

    def __init__(
        self, graph: str = "ring", seed: int = 0, period_s: float = 0.1, timeout_s: float = 60.0, sync_init: bool = True
    ):
        if graph not in topology.GRAPHS:
            raise ValueError(f"unknown gossip graph {graph!r}; choose one of {', '.join(topology.GRAPHS)}")
        if period_s < 0 or timeout_s <= 0:
            raise ValueError(f"need period_s >= 0 and timeout_s > 0, got {period_s}, {timeout_s}")
        if not dist.is_initialized():
            raise ValueError(
                f"the {self.name} strategy needs torch.distributed initialised (dasr.parallel.launch.init_worker)"
            )
        self.graph, self.seed, self.period_s, self.timeout_s = graph, seed, period_s, timeout_s
        self.sync_init = sync_init
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.lock = threading.Lock()
        self.flat: torch.Tensor  # the parameters as one buffer, set by wrap()
        self.gossip: Gossiper | None = None
        self._closed = False
        self._steps = 0
        self._lock_wait_s = 0.0
        self._consensus_s = 0.0

    # ---- the pieces a subclass changes
    def _planes(self) -> list[list[int]]:
        return [list(range(self.world))]

    def _gossip_slice(self) -> slice:
        return slice(0, self.flat.numel())

    def _read(self, out: torch.Tensor) -> None:
        with self.lock:
            out.copy_(self.flat[self._gossip_slice()])

    def _merge(self, delta: torch.Tensor) -> None:
        d = delta.to(self.flat.device, non_blocking=False)
        with self.lock:
            self.flat[self._gossip_slice()].add_(d)

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if self.sync_init:
            dist.broadcast(self.flat, src=0)
        return model

    # ---- Strategy
    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.flat = flatten_parameters(model)
        self._params = list(model.parameters())
        wrapped = self._wrap_model(model)
        planes = self._planes()
        if len(planes[0]) > 1:
            plane, index, groups = make_pair_groups(planes, self.graph, self.seed, self.timeout_s, self.rank)
            sl = self._gossip_slice()
            self.gossip = Gossiper(
                groups=groups,
                size=len(planes[plane]),
                index=index,
                graph=self.graph,
                seed=self.seed,
                numel=sl.stop - sl.start,
                read=self._read,
                merge=self._merge,
                period_s=self.period_s,
                pin_memory=self.flat.is_cuda,
            )
        return wrapped

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        g = self.gossip
        if g is not None:
            g.raise_error()
            if g.parked:
                g.start()
                g.resume()
        t = time.perf_counter()
        with self.lock:
            self._lock_wait_s += time.perf_counter() - t
            optimizer.step()
        self._steps += 1

    def _check_views(self) -> None:
        lo = self.flat.data_ptr()
        hi = lo + self.flat.numel() * self.flat.element_size()
        if any(not lo <= p.data_ptr() < hi for p in self._params):
            raise RuntimeError(
                "model parameters no longer live in the strategy's flat buffer "
                "(was the model moved or an RNN re-flattened after wrap()?)"
            )

    def _drain(self) -> None:
        """Park the gossip thread at a round all ranks agree on (collective over the plane)."""
        if self.gossip is not None:
            self.gossip.barrier(_PAUSE)

    def consensus(self, model: nn.Module | None = None) -> None:
        """Average all replicas exactly (collective: every worker must call it)."""
        if self._closed:
            raise RuntimeError(f"{self.name} strategy is closed")
        t = time.perf_counter()
        self._check_views()
        self._drain()
        with torch.no_grad():
            dist.all_reduce(self.flat)
            self.flat.div_(self.world)
        self._consensus_s += time.perf_counter() - t

    def state_dict(self) -> dict:
        """Gossip position; take it after :meth:`consensus` so all ranks hold the same round."""
        g = self.gossip
        return {"round": g.round if g else 0, "graph": self.graph, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Restore the gossip round (collective: all ranks call it, before their first step)."""
        g = self.gossip
        if g is None:
            return
        if g._started:
            raise RuntimeError("load_state_dict must come before the first step()")
        if state.get("graph", self.graph) != self.graph or state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"checkpoint gossip schedule {state.get('graph')}/{state.get('seed')} "
                f"differs from this run's {self.graph}/{self.seed}"
            )
        r = torch.tensor([int(state.get("round", 0))], dtype=torch.int64)
        dist.all_reduce(r, op=dist.ReduceOp.MAX)  # CPU tensor: gloo part of the default group
        g.round = int(r.item())

    def stats(self) -> dict:
        """Counters; ``comm_s`` is the gossip thread's exchange time, ``exposed_comm_s`` the step's wait for its lock."""
        out = {
            "steps": self._steps,
            "lock_wait_s": self._lock_wait_s,
            "consensus_s": self._consensus_s,
            "comm_s": self.gossip.stats["comm_s"] if self.gossip is not None else 0.0,
            "exposed_comm_s": self._lock_wait_s,
        }
        if self.gossip is not None:
            s = self.gossip.stats
            out.update({f"gossip_{k}": v for k, v in s.items()})
            out["gossip_round"] = self.gossip.round
            done = s["rounds"] - s["idle_rounds"]
            out["gossip_round_s"] = s["comm_s"] / done if done else 0.0
        return out

    def close(self) -> None:
        """Agree on a last round with all workers, join the thread, re-raise its error. Idempotent."""
        if self._closed:
            return
        self._closed = True
        g = self.gossip
        if g is not None:
            if g._thread.is_alive() or not g._started:
                g.barrier(_STOP)
            g.raise_error()
        self._after_stop()

    def _after_stop(self) -> None:
        """Hook run once the gossip thread has stopped (collective with the same peers as step)."""
