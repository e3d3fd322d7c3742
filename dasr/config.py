"""Run configuration: one dataclass, filled from a YAML preset in conf/ and the command line.

The resolved configuration is saved as ``EXP/config.yaml`` with every run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dasr.errors import DasrError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class TrainConfig:
    """Everything a training run needs; field names match the `dasr train` options."""

    data: str = ""
    exp: str = ""
    preset: str = "demo"
    units: str = "char"  # char | bpe
    bpe_vocab: int = 256
    epochs: int = 10
    max_steps: int = 0  # stop after this many steps of this worker (0: no limit)
    batch_frames: int = 10000  # per worker, padded frames
    optimizer: str = "sgd"  # sgd (Nesterov momentum, the paper's) | adamw
    lr: float = 0.1  # peak LR at the reference batch
    reference_batch_frames: int = 0  # batch the lr is given for (0: batch_frames of one worker)
    lr_scaling: str = "linear"  # linear | sqrt | none: scale the peak with the effective batch
    warmup_steps: int = 100
    anneal: str = "paper"  # paper (x 1/sqrt2 per epoch) | cosine
    anneal_start_epoch: int = 6
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    max_bad_steps: int = 5  # stop after this many non-finite losses in a row
    spec_augment: bool = False
    speed_perturb: bool = False
    eval_every_epochs: int = 1  # dev evaluation (and epoch checkpoint) every this many epochs
    eval_every_s: float = 0.0  # >0: evaluate every this many seconds of training instead (time mode)
    train_seconds: float = 0.0  # time mode: stop at the first evaluation after this much training
    checkpoint_every: int = 0  # steps; 0: only at evaluated epoch ends
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    resume: bool = False
    strategy: str = "single"
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""
    max_restarts: int = 0
    group_size: int = 2
    graph: str = "ring"
    gossip_period_s: float = 0.1
    straggler: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.data or not self.exp:
            raise DasrError("--data and --exp are required")
        if self.units not in ("char", "bpe"):
            raise DasrError(f"--units must be char or bpe, not {self.units!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise DasrError(f"--optimizer must be sgd or adamw, not {self.optimizer!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise DasrError("give --epochs or --max-steps a positive value")
        if (self.eval_every_s > 0) != (self.train_seconds > 0):
            raise DasrError("--eval-every-s and --train-seconds go together (time mode): give both or neither")
        if self.batch_frames <= 0:
            raise DasrError(f"--batch-frames must be positive, not {self.batch_frames}")

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def load_preset(name: str) -> dict:
    """Settings of ``conf/<name>.yaml`` (an empty dict when there is no such file)."""
    path = CONF_DIR / f"{name}.yaml"
    if not path.exists():
        return {}
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise DasrError(f"{path}: unknown settings {sorted(unknown)}")
    return values


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def read_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.exists():
        raise DasrError(f"{path} does not exist: is {path.parent} an experiment dir made by `dasr train`?")
    return TrainConfig(**yaml.safe_load(path.read_text()))
