"""`dasr train` and `dasr average`: prepare the experiment, start the workers, collect the result."""

from __future__ import annotations

import logging
from pathlib import Path

from dasr.config import TrainConfig
from dasr.errors import DasrError
from dasr.train import checkpoint
from dasr.train.experiment import prepare_experiment
from dasr.train.plots import plot_metrics
from dasr.train.worker import run_worker

log = logging.getLogger(__name__)


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says, in this process (one worker) or in ``nproc`` launched workers."""
    prepare_experiment(config)
    if config.world_size == 1 and config.strategy == "single":
        progress = run_worker(config)
    else:
        from dasr.parallel.launch import launch

        results = launch(
            run_worker,
            (config,),
            nproc=config.nproc,
            nnodes=config.nnodes,
            node_rank=config.node_rank,
            rdzv_endpoint=config.rdzv_endpoint or None,
            max_restarts=config.max_restarts,
            log_dir=Path(config.exp) / "logs",
            run_id=f"dasr-{Path(config.exp).name}",
        )  # the same on every node of the job
        progress = results[min(results)] if results else {}
    if config.node_rank == 0:
        try:
            log.info("plots: %s", ", ".join(str(p) for p in plot_metrics(Path(config.exp))))
        except DasrError as e:  # without the plots extra: metrics.jsonl holds every number
            log.info("no plots: %s", e)
    return progress


def average_last(exp: str, last: int) -> tuple[Path, list[Path]]:
    """Average the model of the last ``last`` complete checkpoints into EXP/averaged.pt."""
    exp_dir = Path(exp)
    dirs = checkpoint.list_complete(exp_dir / "checkpoints")[-last:]
    if not dirs:
        raise DasrError(f"no complete checkpoints in {exp_dir / 'checkpoints'}")
    files = [d / "rank0.pt" for d in dirs]
    averaged = checkpoint.average_checkpoints(files)
    best = checkpoint.load_file(exp_dir / "best.pt") if (exp_dir / "best.pt").exists() else None
    if best is None:
        raise DasrError(f"{exp_dir} has no best.pt to take the model shape from")
    out = exp_dir / "averaged.pt"
    checkpoint.atomic_save({"model": averaged, "model_config": best["model_config"], "units": best["units"]}, out)
    return out, files
