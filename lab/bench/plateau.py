"""Training a benchmark run until its dev WER plateaus, resumably: `dasr train` watched from outside.

The run evaluates after every epoch; it is stopped once its dev WERs reach a plateau
(:func:`dasr.train.plateau.plateau_epochs`) and it has trained ``min_epochs``, or at ``max_epochs`` (a run stopped there has not plateaued). Every evaluation writes a checkpoint,
so a stopped or interrupted run continues with ``--resume`` where it left off, e.g. when a
later ``min_epochs`` asks for more epochs::

    evals = train_until(run, data_dir, exp_dir, min_epochs=0, max_epochs=24)
    plateau_epochs([e["dev_wer"] for e in evals])   # epochs until the plateau, or None

`dasr train --stop-at-plateau` stops inside the trainer, as ESPnet's ``patience`` does; this stops
from outside, so that a run can be lengthened later (a larger ``min_epochs``) without retraining.
"""

from __future__ import annotations

import time
from pathlib import Path

from dasr.errors import DasrError
from dasr.train.plateau import plateau_epochs
from dasr.train.plots import read_metrics
from lab.bench.procs import Run
from lab.bench.runs import TrainRun

#: seconds between two looks at the run's metrics
POLL_S = 2.0


def read_evals(exp_dir: str | Path) -> list[dict]:
    """Rank 0's evaluations, one per epoch in epoch order (the latest where a resumed run evaluated an epoch again)."""
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    by_epoch = {
        r["epoch"]: {k: r[k] for k in ("epoch", "step", "train_s", "dev_wer", "dev_loss")}
        for r in read_metrics(Path(exp_dir))
        if r.get("kind") == "eval" and r["rank"] == 0
    }
    return [by_epoch[e] for e in sorted(by_epoch)]


def finished(evals: list[dict], min_epochs: int, max_epochs: int) -> bool:
    """Whether a run with these evaluations may stop: plateaued and ``min_epochs`` trained, or ``max_epochs``."""
    if len(evals) >= max_epochs:
        return True
    return len(evals) >= min_epochs and plateau_epochs([e["dev_wer"] for e in evals]) is not None


def _checkpointed(exp_dir: Path, step: int) -> bool:
    """Rank 0 trained past ``step``: the checkpoint written at that evaluation is complete."""
    return any(r.get("kind") == "train" and r["rank"] == 0 and r["step"] > step for r in read_metrics(exp_dir)[-20:])


def train_until(
    run: TrainRun,
    data_dir: str | Path,
    exp_dir: str | Path,
    min_epochs: int,
    max_epochs: int,
    timeout_s: float = 4 * 3600,
) -> list[dict]:
    """Train ``run`` in ``exp_dir`` (continuing from its last checkpoint) until :func:`finished`; its evaluations.

    The run's options must evaluate every epoch and log train records more often than once an
    epoch. It is stopped (its whole session killed) right after the checkpoint of the deciding
    evaluation; so is it when this function is interrupted.

    Raises:
        DasrError: the run failed, or ran past ``timeout_s`` (its log's tail is in the message).
    """
    exp_dir = Path(exp_dir)
    evals = read_evals(exp_dir)
    if finished(evals, min_epochs, max_epochs):
        return evals
    resume = ["--resume"] if (exp_dir / "metrics.jsonl").exists() else []
    args = run.command(data_dir, exp_dir) + ["--epochs", str(max_epochs), *resume]
    process = Run.start(args, log=exp_dir.parent / "train.log")
    deadline = time.monotonic() + timeout_s
    try:
        while process.process.poll() is None:
            time.sleep(POLL_S)
            evals = read_evals(exp_dir)
            if finished(evals, min_epochs, max_epochs) and _checkpointed(exp_dir, evals[-1]["step"]):
                return evals
            if time.monotonic() > deadline:
                raise DasrError(f"benchmark run {run.label!r} did not finish within {timeout_s:.0f} s")
        if process.process.returncode != 0:
            raise DasrError(f"benchmark run {run.label!r} failed (exit {process.process.returncode}): {process.tail()}")
        return read_evals(exp_dir)
    finally:
        if process.process.poll() is None:
            process.kill()
