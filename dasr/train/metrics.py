"""What a worker records while it trains: JSON lines in EXP/metrics.jsonl (TensorBoard too on rank 0).

A train record summarises the steps since the previous one (a :class:`StepWindow`); an eval
record holds the dev loss and WER.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dasr.errors import DasrError
from dasr.extras import require

#: strategy counters the train record carries per step instead of cumulatively
PER_STEP = ("comm_s", "exposed_comm_s")


def tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard SummaryWriter into ``log_dir``, or None (one log line) without the tensorboard extra."""
    try:
        require("tensorboard", "tensorboard", "TensorBoard logging")
    except DasrError as e:
        logging.getLogger(__name__).info("%s; metrics.jsonl has every number", e)
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


class MetricsLog:
    """Appends JSON lines to EXP/metrics.jsonl (one write per line, so ranks can share the file)."""

    def __init__(self, path: Path, rank: int, tensorboard_dir: Path | None) -> None:
        self.path, self.rank = path, rank
        self.start = time.time()
        self.tb: Any = None
        if tensorboard_dir is not None:
            self.tb = tensorboard_writer(tensorboard_dir)

    def write(self, record: dict) -> None:
        """Append ``record`` with this rank and the seconds since the log opened."""
        record = {"rank": self.rank, "wall_s": round(time.time() - self.start, 3), **record}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
        if self.tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("rank", "step"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        """Flush and close TensorBoard's writer (the JSON lines need no closing)."""
        if self.tb is not None:
            self.tb.close()


def resident_mib() -> float | None:
    """This process's resident memory (VmRSS from /proc/self/status) in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return round(kib / 1024, 2)


def comm_totals(stats: dict) -> tuple[float, float]:
    """A strategy's cumulative (communication, exposed communication) seconds from its ``stats()``."""
    return stats.get("comm_s", 0.0), stats.get("exposed_comm_s", 0.0)


@dataclass
class StepWindow:
    """The steps since the last train record: what :meth:`record` turns into rates and shares."""

    comm_before: tuple[float, float]  # the strategy's comm_totals when the window opened
    start: float = field(default_factory=time.time)
    losses: list[float] = field(default_factory=list)
    frames: int = 0
    utts: int = 0
    steps: int = 0
    data_s: float = 0.0  # waiting for the loader
    busy_s: float = 0.0  # the training thread's seconds inside steps

    def add(self, loss: float | None, frames: int, utts: int) -> None:
        """Count one step (``loss`` None: a skipped, non-finite one)."""
        if loss is not None:
            self.losses.append(loss)
        self.frames += frames
        self.utts += utts
        self.steps += 1

    def record(self, stats: dict) -> dict:
        """The train record's measured fields, given the strategy's ``stats()`` now."""
        elapsed = max(time.time() - self.start, 1e-9)
        steps = max(self.steps, 1)
        comm_s, exposed_s = ((now - before) / steps for now, before in zip(comm_totals(stats), self.comm_before))
        return {
            "loss": sum(self.losses) / len(self.losses) if self.losses else None,
            "samples_per_s": self.utts / elapsed,
            "x_real_time": self.frames * 0.01 / elapsed,
            "data_share": self.data_s / elapsed,
            "step_s": elapsed / steps,
            "compute_s": self.busy_s / steps - exposed_s,
            "comm_s": comm_s,
            "exposed_comm_s": exposed_s,
            "utts_per_step": self.utts / steps,
            "rss_mib": resident_mib(),
            **{k: v for k, v in stats.items() if k not in PER_STEP},
        }
