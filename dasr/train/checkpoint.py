"""Checkpoints: atomic writes, exact resume, keep-last-K, fall back past a torn file, averaging.

A checkpoint is ``EXP/checkpoints/step-000000120/`` holding one ``rank<R>.pt`` per worker
(adpsgd replicas keep their own optimizer state) and a ``COMPLETE`` marker written last.
Every file goes to a temp name, is fsynced, then renamed, so a kill at any moment leaves
either the old or the new file, never half of one. Files load with ``weights_only=True``
after their zip CRCs are checked, so a corrupt file is an error, never silently wrong weights.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from dasr.errors import DasrError
from dasr.model.weights import load_file

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step-(\d{9})$")


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to ``path`` through a fsynced temp file and a rename.

    Raises:
        DasrError: the file could not be written (disk full, file size limit, permissions);
            ``path`` is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = io.BytesIO()
    torch.save(obj, data)  # serialised first, so that a failed write is a plain OSError
    try:
        with open(tmp, "wb") as f:
            f.write(data.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DasrError(
            f"cannot write {path}: {e.strerror or e} ({data.tell()} bytes); "
            f"{'the previous version is kept' if path.exists() else 'nothing was written'}"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def step_dir(checkpoint_root: Path, step: int) -> Path:
    return checkpoint_root / f"step-{step:09d}"


def save_rank(checkpoint_root: Path, step: int, rank: int, state: dict) -> Path:
    """Write this rank's part of the checkpoint of ``step``."""
    directory = step_dir(checkpoint_root, step)
    atomic_save(state, directory / f"rank{rank}.pt")
    return directory


def mark_complete(checkpoint_root: Path, step: int, world_size: int, keep: int) -> None:
    """Called by rank 0 once every rank has saved: marks the checkpoint usable, prunes old ones."""
    directory = step_dir(checkpoint_root, step)
    missing = [r for r in range(world_size) if not (directory / f"rank{r}.pt").exists()]
    if missing:
        raise DasrError(f"checkpoint {directory} lacks the files of ranks {missing}")
    atomic_save({"step": step, "world_size": world_size}, directory / "COMPLETE")
    complete = list_complete(checkpoint_root)
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for torn in checkpoint_root.iterdir():  # left by a run killed while saving; can never complete
        if _STEP_DIR.match(torn.name) and torn < directory and not (torn / "COMPLETE").exists():
            shutil.rmtree(torn, ignore_errors=True)


def list_complete(checkpoint_root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not checkpoint_root.is_dir():
        return []
    dirs = [d for d in checkpoint_root.iterdir() if _STEP_DIR.match(d.name) and (d / "COMPLETE").exists()]
    return sorted(dirs)


def load_latest(checkpoint_root: Path, rank: int) -> dict | None:
    """This rank's state from the newest complete checkpoint that loads (one process alone).

    Returns None when there is no checkpoint at all. A checkpoint that exists but cannot be
    read is reported and skipped, never silently used. Workers of a run use
    :func:`load_agreed` instead, so that they all resume from the same step.
    """
    return load_agreed(checkpoint_root, rank, lambda value: value)


def load_agreed(checkpoint_root: Path, rank: int, agree_min: Callable[[int], int]) -> dict | None:
    """This rank's state from the newest step whose checkpoint loads on *every* rank.

    ``agree_min(value)`` is a collective that returns the minimum of ``value`` over all ranks
    (an all-reduce MIN); every rank calls this function, and all of them make the same
    sequence of ``agree_min`` calls. A rank whose file of the newest step is torn makes every
    rank fall back together: rank-local fallbacks would resume ranks from different steps.

    Returns None (on every rank alike) when no step loads everywhere.
    """
    steps = [int(d.name.removeprefix("step-")) for d in reversed(list_complete(checkpoint_root))]
    loaded: dict[int, dict | None] = {}

    def load(step: int) -> dict | None:
        if step not in loaded:
            try:
                loaded[step] = load_file(step_dir(checkpoint_root, step) / f"rank{rank}.pt")
            except DasrError as e:
                log.warning("%s; falling back to an older checkpoint", e)
                loaded[step] = None
        return loaded[step]

    bound = steps[0] if steps else -1
    while True:
        mine = next((s for s in steps if s <= bound and load(s) is not None), -1)
        agreed = agree_min(mine)
        if agreed < 0:
            return None
        state = load(agreed) if agreed in steps else None
        if agree_min(int(state is not None)) == 1:
            return state
        log.warning("checkpoint step %d is not usable on every rank; falling back to an older one", agreed)
        bound = agreed - 1


def average_checkpoints(paths: list[Path]) -> dict:
    """Average the model parameters of several checkpoint files (e.g. the last K)."""
    if not paths:
        raise DasrError("no checkpoints to average")
    states = [load_file(p)["model"] for p in paths]
    keys = states[0].keys()
    for p, s in zip(paths, states):
        if s.keys() != keys:
            raise DasrError(f"checkpoint {p} holds a different model than {paths[0]}")
    averaged = {}
    for k in keys:
        if states[0][k].is_floating_point():
            averaged[k] = sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype)
        else:
            averaged[k] = states[-1][k]
    return averaged
