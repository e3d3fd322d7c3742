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
    if config.elastic:
        progress = _train_elastic(config)
    elif config.world_size == 1 and config.strategy == "single":
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


def _train_elastic(config: TrainConfig) -> dict:
    """Elastic workers (`python -m dasr.train` on the saved config), each replaced alone when it dies.

    EXP/elastic-claims.json says what the batch claims came to (trained once, twice, re-offered).
    """
    import json
    import sys

    from dasr.parallel.elastic_launch import launch_elastic
    from dasr.parallel.membership import claims_summary, connect

    def write_claims(address: str) -> None:
        try:
            summary = claims_summary(connect(address, timeout_s=10))
        except RuntimeError as e:  # a coordinator started apart may be gone, or out of this node's reach
            log.warning("no batch claims summary: the coordinator at %s does not answer (%s)", address, e)
            return
        (Path(config.exp) / "elastic-claims.json").write_text(json.dumps(summary, indent=1) + "\n")
        log.info("batch claims: %s", summary)

    command = [sys.executable, "-m", "dasr.train", "--config", str(Path(config.exp) / "config.yaml")]
    codes = launch_elastic(
        command,
        config.nproc,
        config.max_restarts,
        config.lease_s,
        on_end=write_claims,
        coordinator=config.coordinator,
        first_slot=config.node_rank * config.nproc,
        slots=config.nnodes * config.nproc,
    )
    if all(code != 0 for code in codes.values()):
        raise DasrError(f"every elastic worker failed (exit codes {codes}); see the log above")
    failed = sorted(slot for slot, code in codes.items() if code != 0)
    if failed:
        log.warning("elastic slots %s ended without a replacement (restarts used up); the others finished", failed)
    return {"step": _steps_recorded(Path(config.exp) / "metrics.jsonl"), "exit_codes": codes}


def _steps_recorded(metrics: Path) -> int:
    """The steps all workers of an elastic run took, from their train records in ``metrics``
    (a replacement counts its steps from 1 again)."""
    import json

    total, previous = 0, dict[int, int]()
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "train":
            rank, step = record["rank"], record["step"]
            total += step - previous.get(rank, 0) if step > previous.get(rank, 0) else step
            previous[rank] = step
    return total


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
