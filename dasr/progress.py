"""Progress of long loops: a tqdm bar on a terminal, elsewhere (a pipe, a file, CI) a log line every few percent.

    for utt in progress(utts, desc="features train", unit="utt"):
        ...

A piped run thus prints ten lines per loop instead of thousands of bar redraws.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

log = logging.getLogger("dasr.progress")


class PercentLog:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``) as one log line every ``step`` percent."""

    def __init__(self, iterable: Iterable | None, total: int, desc: str, unit: str, initial: int, step: int) -> None:
        self.iterable, self.total, self.desc, self.unit, self.step = iterable, total, desc, unit, step
        self.n = initial
        self.logged = self._percent()  # a resumed loop reports only what it adds
        self.postfix: dict[str, Any] = {}

    def _percent(self) -> int:
        """The last multiple of ``step`` percent reached."""
        return 100 * self.n // max(self.total, 1) // self.step * self.step

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; log a line when that crosses the next ``step`` percent."""
        self.n += n
        percent = self._percent()
        if percent > self.logged:
            self.logged = percent
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            log.info("%s: %d %% (%d/%d %s)%s", self.desc, percent, self.n, self.total, self.unit, extra)

    def set_postfix(self, **values: Any) -> None:
        """Values the next line shows after the count (as tqdm's bar shows them)."""
        self.postfix = values

    def close(self) -> None:
        """Nothing to release (tqdm's bar needs closing; a log does not)."""


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    step: int = 10,
) -> Any:
    """A tqdm bar when stderr is a terminal, else a :class:`PercentLog` every ``step`` percent; silent unless ``enabled``.

    ``total`` defaults to ``len(iterable)``. Use the result like tqdm: iterate over it, or call
    ``update(n)``, ``set_postfix(...)`` and ``close()``.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not enabled or total is None:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False)
    return PercentLog(iterable, total, desc, unit, initial, step)
