"""Start an elastic run's workers on this machine, replacing each one that dies alone.

Unlike torch's agent, which stops and restarts every local worker when one fails, this
launcher replaces only the worker that died; the others never stop::

    codes = launch_elastic([sys.executable, "train.py"], nproc=4, max_restarts=20)

On one machine it starts the coordinator too (in a process of its own). On several, every
node's launcher joins one coordinator started apart (``coordinator="host:port"``) and runs the
slots ``first_slot`` to ``first_slot + nproc - 1``. With an etcd cluster as the store
(``coordinator="etcd://h1:2379,h2:2379,h3:2379/run-7"``) there is no coordinator apart: every
node's launcher starts a replica of it, and the one elected decides (:mod:`dasr.parallel.leadership`).

Each worker finds ``$DASR_ELASTIC_STORE`` (the run's store: the coordinator's ``host:port``, or ``etcd://...``) and
``$DASR_ELASTIC_SLOT`` in its environment (what :class:`dasr.parallel.elastic.ElasticADPSGD` reads).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from dasr.errors import DasrError
from dasr.parallel.elastic import SLOT_ENV, STORE_ENV
from dasr.parallel.etcd_store import is_etcd_address, parse_address
from dasr.parallel.membership import PREFIX, connect, finished_run, start_coordinator, stop_coordinator


def worker_env(address: str, slot: int, restarts: int, one_machine: bool = True) -> dict[str, str]:
    """The environment of slot ``slot``'s worker (its ``restarts``-th replacement); gloo's pairs use
    the loopback on ``one_machine``, else the interface ``$GLOO_SOCKET_IFNAME`` names (or gloo's pick)."""
    env = {**os.environ, STORE_ENV: address, SLOT_ENV: str(slot), "DASR_ELASTIC_RESTART": str(restarts)}
    if one_machine:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return {**env, "OMP_NUM_THREADS": "1"}


def launch_elastic(
    command: list[str],
    nproc: int,
    max_restarts: int = 0,
    lease_s: float = 5.0,
    on_start: Callable[[int, subprocess.Popen], None] | None = None,
    on_end: Callable[[str], None] | None = None,
    coordinator: str = "",
    first_slot: int = 0,
    slots: int = 0,
) -> dict[int, int]:
    """Run ``command`` as ``nproc`` elastic workers until each slot's worker exits 0; returns {slot: exit code}.

    A worker that dies (non-zero exit, a signal) is replaced in its slot while restarts last
    (``max_restarts`` in all); after that its slot stays empty and the others go on.
    ``on_start(slot, process)`` is called for every worker started (e.g. to inject faults),
    ``on_end(address)`` once all have ended, while the coordinator's store still serves.
    ``coordinator`` (``host:port``) joins one started apart for several machines, whose lease
    it set; this launcher then runs slots ``first_slot`` on. An etcd ``coordinator``
    (``etcd://...``) is the run's store, and this launcher starts a coordinator replica on it for a
    run of ``slots`` slots in all (default ``nproc``), with this ``lease_s``.
    """
    if nproc < 1 or max_restarts < 0 or first_slot < 0 or (first_slot and not coordinator):
        raise ValueError(
            "need nproc >= 1, max_restarts >= 0, first_slot >= 0 (0 without a coordinator), "
            f"got {nproc}, {max_restarts}, {first_slot}"
        )
    on_etcd = is_etcd_address(coordinator)
    if on_etcd:
        slots = slots or nproc
        if finished_run(connect(coordinator, timeout_s=10)):
            raise DasrError(f"{coordinator} holds a run that is over: give this run an etcd namespace of its own")
    elif coordinator:
        slots = int(connect(coordinator).get(f"{PREFIX}/slots"))
    if coordinator and first_slot + nproc > slots:
        raise ValueError(f"slots {first_slot} to {first_slot + nproc - 1} are outside the run's {slots} slots")
    own = None if coordinator and not on_etcd else start_coordinator(slots or nproc, lease_s, store=coordinator)
    address = own[1] if own else coordinator
    one_machine = not coordinator or (
        on_etcd and all(h in ("127.0.0.1", "localhost") for h, _ in parse_address(coordinator)[0])
    )
    procs: dict[int, subprocess.Popen] = {}
    codes: dict[int, int] = {}
    restarts = 0

    def start(slot: int) -> None:
        procs[slot] = subprocess.Popen(command, env=worker_env(address, slot, restarts, one_machine))
        if on_start is not None:
            on_start(slot, procs[slot])

    try:
        for slot in range(first_slot, first_slot + nproc):
            start(slot)
        while procs:
            time.sleep(0.1)
            for slot, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[slot]
                codes[slot] = code
                if code != 0 and restarts < max_restarts:
                    restarts += 1
                    start(slot)
        if on_end is not None:
            on_end(address)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        if own is not None:
            stop_coordinator(*own)
    return codes
