"""A long adpsgd run watched from outside: progress (no deadlock), resident memory, threads, leftovers.

    result = soak(data, exp, nproc=8, steps=1000, rss_from=100)

The run is `dasr train --strategy adpsgd` of the tiny preset with one metrics record per
step per rank (each carries the worker's ``rss_mib``). A run that logs nothing for
``stall_s`` seconds counts as a deadlock and is killed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.bench.faults import train_command
from lab.bench.procs import Run, descendants, listening_addresses, session_leftovers, threads, workers


class MetricsTail:
    """The train records appended to ``EXP/metrics.jsonl`` since the last call."""

    def __init__(self, exp: Path) -> None:
        self.path, self.offset, self.partial = exp / "metrics.jsonl", 0, b""

    def new(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = self.partial + f.read()
        self.offset += len(data) - len(self.partial)
        *lines, self.partial = data.split(b"\n")
        return [r for r in map(json.loads, lines) if r.get("kind") == "train"]


def rss_growth(records: list[dict], rss_from: int) -> dict[int, float]:
    """Per rank: relative growth of ``rss_mib`` from its first record at step >= ``rss_from`` to its last."""
    first, last = {}, {}
    for r in records:
        if r["step"] >= rss_from and r.get("rss_mib"):
            first.setdefault(r["rank"], r["rss_mib"])
            last[r["rank"]] = r["rss_mib"]
    return {rank: (last[rank] - first[rank]) / first[rank] for rank in first}


def soak(
    data: str | os.PathLike,
    exp: str | os.PathLike,
    nproc: int = 8,
    steps: int = 1000,
    rss_from: int = 100,
    batch_frames: int = 200,
    stall_s: float = 180.0,
    limit_s: float = 3600.0,
) -> dict:
    """Train ``nproc`` adpsgd workers for ``steps`` steps and watch them.

    ``batch_frames``: small enough that the corpus gives every worker a batch (the 8 test
    utterances make 8 batches at 200 frames).

    Returns:
        ``steps_per_rank`` (all ranks' steps over their number: adpsgd workers claim batches, so
        a run of ``steps`` ends at that mean, not at ``steps`` on every rank), ``deadlocks`` (1 when the run stalled or ran past
        ``limit_s``), exit code, the largest RSS growth over the ranks from step ``rss_from``
        to the end, the most threads a worker gained over its count at step ``rss_from``,
        the processes of the run still alive after it exited, and the addresses its
        sockets listened on.
    """
    exp = Path(exp)
    command = train_command(
        data, exp, "adpsgd", nproc, steps, "--checkpoint-every", max(steps // 4, 1), batch_frames=batch_frames
    )
    run = Run.start(command, exp.parent / f"{exp.name}.log")
    start = time.monotonic()
    tail = MetricsTail(exp)
    watched = _watch(run, tail, rss_from, stall_s, limit_s)
    if watched.stalled:
        run.kill()
    code = run.process.wait()
    time.sleep(0.5)  # let the kernel reap what the launcher left
    leftovers = session_leftovers(run.pid)
    records = watched.records + tail.new()
    growth = rss_growth(records, rss_from)
    last_steps: dict[int, int] = {}
    for r in records:
        last_steps[r["rank"]] = max(last_steps.get(r["rank"], 0), r["step"])
    return {
        "nproc": nproc,
        "steps": steps,
        "rss_from_step": rss_from,
        "exit_code": code,
        "deadlocks": int(watched.stalled),
        "steps_per_rank": sum(last_steps.values()) / nproc,
        "rss_growth": max(growth.values(), default=None),
        "rss_growth_per_rank": growth,
        "rss_mib_end": {r["rank"]: r["rss_mib"] for r in records},
        "thread_growth": max((b - a for a, b in watched.thread_counts.values()), default=None),
        "processes_left": len(leftovers),
        "listened_on": sorted(watched.addresses),
        "wall_s": round(time.monotonic() - start, 1),
        "log_tail": "" if code == 0 else run.tail(),
    }


@dataclass
class Watched:
    """What watching a run saw: train records, thread counts, listening addresses, and whether it stalled.

    ``thread_counts``: per worker pid, [threads when first counted (at step ``rss_from``), the most since].
    """

    records: list[dict] = field(default_factory=list)
    thread_counts: dict[int, list[int]] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    stalled: bool = False


def _watch(run: Run, tail: MetricsTail, rss_from: int, stall_s: float, limit_s: float) -> Watched:
    """Poll ``run`` every second until it exits, logs nothing for ``stall_s`` or runs past ``limit_s``."""
    seen = Watched()
    start = progress_at = time.monotonic()
    while run.process.poll() is None:
        new = tail.new()
        seen.records += new
        now = time.monotonic()
        if new:
            progress_at = now
        elif now - progress_at > stall_s or now - start > limit_s:
            seen.stalled = True
            break
        seen.addresses |= listening_addresses([run.pid, *descendants(run.pid)])
        if seen.records and max(r["step"] for r in seen.records) >= rss_from:
            _count_threads(run.pid, seen.thread_counts)
        time.sleep(1.0)
    return seen


def _count_threads(launcher_pid: int, thread_counts: dict[int, list[int]]) -> None:
    """Record each worker's thread count: the first seen, and the most since."""
    for pid in workers(launcher_pid):
        n = threads(pid)
        if n is not None:
            counts = thread_counts.setdefault(pid, [n, n])
            counts[1] = max(counts[1], n)
