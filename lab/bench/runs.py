"""Training runs for the strategy benchmarks: `dasr train` in a subprocess, summarised from its metrics.jsonl.

Each run is the real thing a user starts (launcher, N worker processes over loopback), so
what is measured includes startup-free steady-state steps only where said::

    run = TrainRun("adpsgd x4", "adpsgd", 4, ["--max-steps", "40"])
    summary = train(run, data_dir, exp_dir, skip_steps=10)
    summary["samples_per_s"], summary["evals"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dasr.errors import DasrError
from dasr.train.plots import read_metrics

#: per-step fields of a train record that a run summary averages over its workers
STEP_FIELDS = ("step_s", "compute_s", "comm_s", "exposed_comm_s")


@dataclass
class TrainRun:
    """One `dasr train` invocation: a label, the strategy, workers, and the other options."""

    label: str
    strategy: str
    nproc: int
    options: list[str] = field(default_factory=list)

    def command(self, data_dir: str | os.PathLike, exp_dir: str | os.PathLike) -> list[str]:
        """The command line (``python -m dasr train ...``)."""
        return [
            sys.executable,
            "-m",
            "dasr",
            "train",
            "--data",
            str(data_dir),
            "--exp",
            str(exp_dir),
            "--strategy",
            self.strategy,
            "--nproc",
            str(self.nproc),
            *self.options,
        ]


def kept_run(run_dir: Path, measure: Callable[[Path], dict]) -> dict:
    """``run_dir/result.json`` if an earlier call finished this run; else ``measure(run_dir)`` in a
    fresh ``run_dir`` (an unfinished run starts again), kept there. What makes a benchmark resumable."""
    result = run_dir / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    summary = measure(run_dir)
    result.write_text(json.dumps(summary, indent=1))
    return summary


def require_data(data_dir: str | None, bench: str) -> str:
    """``data_dir``, or a clear error: benchmarks that train to an accuracy need a real corpus.

    Raises:
        DasrError: ``data_dir`` is None.
    """
    if data_dir is None:
        raise DasrError(f"dasr bench {bench} needs --data: a corpus with features, e.g. exp/demo/data from `make demo`")
    return data_dir


def train(
    run: TrainRun, data_dir: str | os.PathLike, exp_dir: str | os.PathLike, skip_steps: int, timeout_s: float = 1800.0
) -> dict:
    """Run ``run`` into the fresh ``exp_dir`` and summarise it (:func:`summarise`).

    Raises:
        DasrError: the run failed or exceeded ``timeout_s`` (its stderr tail is in the message).
    """
    exp_dir = Path(exp_dir)
    if exp_dir.exists() and any(exp_dir.iterdir()):
        raise DasrError(f"{exp_dir} is not empty: a benchmark run needs a fresh experiment dir")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            run.command(data_dir, exp_dir), capture_output=True, text=True, timeout=timeout_s, env=env
        )
    except subprocess.TimeoutExpired:
        raise DasrError(f"benchmark run {run.label!r} did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise DasrError(f"benchmark run {run.label!r} failed (exit {done.returncode}): {done.stderr[-1500:]}")
    summary = summarise(read_metrics(exp_dir), skip_steps)
    summary.update(
        label=run.label,
        strategy=run.strategy,
        nproc=run.nproc,
        options=run.options,
        process_wall_s=time.perf_counter() - start,
    )
    return summary


def summarise(records: list[dict], skip_steps: int) -> dict:
    """Throughput, per-step times and evaluations of one run's metrics records.

    Train records after step ``skip_steps`` count (earlier ones are warm-up); a worker that made
    fewer than twice that many steps (a straggler claiming fewer of the shared batches of
    adpsgd or ps) skips its first half instead. Per worker,
    per-step times are averaged over its records weighted by their steps; the run's value is
    the median over workers. ``samples_per_s`` adds up the workers' rates.

    Returns:
        ``samples_per_s``, ``step_s``, ``compute_s``, ``comm_s``, ``exposed_comm_s``, ``overlap``
        (1 - exposed/comm, or None without communication), ``per_rank`` and ``evals`` (rank 0's
        ``epoch``, ``step``, ``train_s``, ``dev_wer``, ``dev_loss``).
    """
    per_rank = {}
    for rank in sorted({r["rank"] for r in records if r.get("kind") == "train"}):
        mine = sorted((r for r in records if r.get("kind") == "train" and r["rank"] == rank), key=lambda r: r["step"])
        steps = np.diff([0] + [r["step"] for r in mine])
        skip = min(skip_steps, mine[-1]["step"] // 2)
        keep = [(r, n) for r, n in zip(mine, steps) if r["step"] - n >= skip and n > 0]
        if not keep:
            raise DasrError(f"rank {rank} logged no train record after step {skip_steps}: run longer or log more often")
        weights = np.array([n for _, n in keep], dtype=np.float64)
        seconds = sum(r["step_s"] * n for r, n in keep)
        utterances = sum(r["utts_per_step"] * n for r, n in keep)
        per_rank[rank] = {f: float(np.average([r[f] for r, _ in keep], weights=weights)) for f in STEP_FIELDS}
        per_rank[rank].update(
            samples_per_s=utterances / seconds, steps=int(weights.sum()), utts_per_step=utterances / weights.sum()
        )
    if not per_rank:
        raise DasrError("the run wrote no train records")
    out = {f: float(np.median([v[f] for v in per_rank.values()])) for f in STEP_FIELDS}
    out["samples_per_s"] = float(sum(v["samples_per_s"] for v in per_rank.values()))
    out["utts_per_step"] = float(np.mean([v["utts_per_step"] for v in per_rank.values()]))
    out["overlap"] = max(0.0, 1 - out["exposed_comm_s"] / out["comm_s"]) if out["comm_s"] > 0 else None
    out["per_rank"] = per_rank
    out["evals"] = [
        {k: r.get(k) for k in ("epoch", "step", "train_s", "dev_wer", "dev_loss")}
        for r in records
        if r.get("kind") == "eval" and r["rank"] == 0
    ]
    return out


def time_to_target(evals: list[dict], target: float, key: str = "dev_wer", start: float | None = 1.0) -> float | None:
    """Training seconds at which ``key`` (dev WER) first reaches ``target``, interpolated between evaluations.

    Linear interpolation between the last evaluation above the target and the first at or
    below it; before the first evaluation from ``start`` at 0 s (WER 1.0; None: no point
    before the first evaluation, which then counts when it is already at the target).
    None if the run never reached it.
    """
    previous_s, previous = 0.0, start
    for e in evals:
        if e[key] <= target:
            if previous is None or previous <= e[key]:
                return e["train_s"]
            share = (previous - target) / (previous - e[key])
            return previous_s + share * (e["train_s"] - previous_s)
        previous_s, previous = e["train_s"], e[key]
    return None
