"""Side-by-side timing: run the things being compared in turn, several rounds, report median and spread.

Interleaving makes a ratio fair on a busy machine: a slow spell hits both sides of a round, and
the per-round ratio cancels it::

    times = interleave({"trainer": trainer_round, "bare": bare_round}, repeats=7)
    overhead = paired_ratio(times["trainer"], times["bare"])   # Stats of trainer/bare per round
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Stats:
    """Median and spread (quartiles, extremes) of a few measurements."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    def scaled(self, factor: float) -> Stats:
        """The same statistics of every value multiplied by ``factor`` (> 0)."""
        return Stats(
            self.median * factor, self.q1 * factor, self.q3 * factor, self.low * factor, self.high * factor, self.n
        )

    def inverse(self, numerator: float = 1.0) -> Stats:
        """Statistics of ``numerator / value`` (e.g. rates from durations); quartiles swap sides."""
        return Stats(
            numerator / self.median,
            numerator / self.q3,
            numerator / self.q1,
            numerator / self.high,
            numerator / self.low,
            self.n,
        )

    def text(self, fmt: str = ".3g") -> str:
        """``median (IQR q1–q3, n=N)`` for a Markdown table."""
        return f"{self.median:{fmt}} (IQR {self.q1:{fmt}}–{self.q3:{fmt}}, n={self.n})"

    def as_dict(self) -> dict:
        """The fields as a plain dict (for the JSON output)."""
        return asdict(self)


def stats(values: list[float]) -> Stats:
    """Median, quartiles and extremes of ``values`` (at least one)."""
    if not values:
        raise ValueError("no measurements")
    v = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return Stats(float(median), float(q1), float(q3), float(v.min()), float(v.max()), len(v))


def stats_text(d: dict, fmt: str = ".3g") -> str:
    """:meth:`Stats.text` of statistics stored as a dict (as in the JSON results)."""
    return Stats(**d).text(fmt)


def paired_ratio(numerators: list[float], denominators: list[float]) -> Stats:
    """Statistics of the per-round ratios ``numerators[i] / denominators[i]`` of interleaved runs."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators for {len(denominators)} denominators")
    return stats([a / b for a, b in zip(numerators, denominators)])


def interleave(
    tasks: dict[str, Callable[[], object]],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
    alternate: bool = True,
) -> dict[str, list[float]]:
    """Time each task once per round for ``repeats`` rounds; odd rounds run the tasks in reverse order.

    Reversing every other round (A B, B A, A B, ...) keeps a task from always running first,
    right after the same other task (cache and allocator state, CPU frequency).

    Args:
        tasks: name -> function to time; all run once in every round, one after the other.
        repeats: number of rounds.
        clock: seconds as a float (injectable for tests).
        alternate: reverse odd rounds; False keeps the given order (when a task feeds the next).

    Returns:
        name -> the ``repeats`` durations in seconds, in round order.
    """
    durations: dict[str, list[float]] = {name: [] for name in tasks}
    for r in range(repeats):
        for name in reversed(tasks) if alternate and r % 2 else tasks:
            task = tasks[name]
            start = clock()
            task()
            durations[name].append(clock() - start)
    return durations
