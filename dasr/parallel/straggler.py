"""Injected slow-downs for experiments: make one worker ``factor`` times slower.

    straggler = Straggler.parse("1:3", rank)     # rank 1 three times slower, others unchanged
    with straggler.step():                       # around one training step's compute
        loss.backward(); strategy.step(opt)

After each step it sleeps ``(factor - 1) x`` the measured compute time of that step.
"""

from __future__ import annotations

import contextlib
import time


class Straggler:
    """Sleep ``(factor - 1) x`` each step's measured compute time (``factor=1``: no delay)."""

    def __init__(self, factor: float = 1.0):
        if factor < 1.0:
            raise ValueError(f"straggler factor must be >= 1, got {factor}")
        self.factor = float(factor)
        self.slept_s = 0.0

    @staticmethod
    def parse(spec: str | None, rank: int) -> Straggler:
        """``"RANK:FACTOR[,RANK:FACTOR...]"`` → this rank's straggler (factor 1 if not listed)."""
        factor = 1.0
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            try:
                rank_s, factor_s = item.split(":")
                r, f = int(rank_s), float(factor_s)
            except ValueError:
                raise ValueError(f"bad straggler spec {item!r}; expected RANK:FACTOR, e.g. 1:3") from None
            if f < 1.0:
                raise ValueError(f"bad straggler spec {item!r}: FACTOR must be >= 1")
            if r == rank:
                factor = f
        return Straggler(factor)

    def delay(self, compute_s: float) -> None:
        """Sleep for a step that took ``compute_s`` seconds."""
        if self.factor > 1.0 and compute_s > 0:
            d = (self.factor - 1.0) * compute_s
            time.sleep(d)
            self.slept_s += d

    @contextlib.contextmanager
    def step(self):
        """Time the enclosed compute, then sleep to make it ``factor`` times as long."""
        t = time.perf_counter()
        yield
        self.delay(time.perf_counter() - t)
