"""Run configuration: one dataclass whose fields are also the `dasr train` options.

Each field of :class:`TrainConfig` carries its option's help (and choices) as dataclass field
metadata; :func:`add_options` turns the fields into argparse flags, so a flag is written once.
A run's values come from, in rising priority: the field defaults, a recipe (``--config``: a YAML
file, or the name of one shipped in ``dasr/recipes/``), the flags given. A recipe sets what it
says and nothing else; ``--model`` names only the model shape. The resolved configuration is
saved as ``EXP/config.yaml`` with every run, and is itself a recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dasr.errors import DasrError
from dasr.model.blstm import PRESETS
from dasr.parallel import STRATEGIES
from dasr.parallel.topology import GRAPHS

#: the recipes shipped as package data, ``dasr/recipes/<name>.yaml``
RECIPES = resources.files("dasr").joinpath("recipes")
#: keys of older saved configs and what they are called now
_RENAMED = {"preset": "model"}


def option(default: Any, help: str, choices: typing.Iterable[str] = (), metavar: str | None = None) -> Any:
    """A :class:`TrainConfig` field that is also the option ``--NAME`` with this ``help`` and ``choices``."""
    metadata = {"help": help, "choices": tuple(choices), "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a training run needs; each field is the `dasr train` option of the same name."""

    data: str = option("", "data dir with features (required)")
    exp: str = option("", "experiment dir to write (required)")
    model: str = option("demo", "model shape (BLSTM layers x cells per direction, see README)", PRESETS)
    units: str = option("char", "output units", ("char", "bpe"))
    bpe_vocab: int = option(256, "BPE vocabulary size (--units bpe)")
    epochs: int = option(10, "epochs to train (unless --max-steps is given)")
    max_steps: int = option(0, "stop after this many steps of this worker (0: no limit)")
    batch_frames: int = option(10000, "padded frames per batch per worker")
    optimizer: str = option(
        "sgd",
        "sgd: Nesterov momentum, the paper's; lamb: layer-wise adaptive AdamW (torch-optimizer, the lamb extra)",
        ("sgd", "adamw", "lamb"),
    )
    lr: float = option(0.1, "peak learning rate for the reference batch")
    reference_batch_frames: int = option(0, "batch --lr is meant for (0: --batch-frames of one worker)")
    lr_scaling: str = option(
        "auto",
        "scale the peak LR with the batch multiplier m = nproc x nnodes x --batch-frames / --reference-batch-frames "
        "(auto: linear for sgd, sqrt for adamw and lamb)",
        ("auto", "linear", "sqrt", "none"),
    )
    warmup_steps: int = option(0, "steps of linear learning-rate warm-up (0: --warmup-epochs)")
    warmup_epochs: float = option(0.1, "warm-up epochs at the reference batch, times m (LEGW: equal warm-up updates)")
    anneal: str = option("paper", "paper: x 1/sqrt2 per epoch from --anneal-start-epoch", ("paper", "cosine"))
    anneal_start_epoch: int = option(6, "first epoch of the paper's annealing")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "weight decay")
    grad_clip: float = option(5.0, "clip the gradient norm to this (0: no clipping)")
    max_bad_steps: int = option(5, "stop after this many non-finite losses in a row")
    spec_augment: bool = option(False, "SpecAugment time and frequency masks")
    speed_perturb: bool = option(False, "speed perturbation by 0.9 / 1.0 / 1.1")
    eval_every_epochs: int = option(1, "dev evaluation and epoch checkpoint every this many epochs")
    eval_every_s: float = option(
        0.0,
        "time mode: evaluate every this many seconds of training instead (workers' epochs stay their own: "
        "a fast adpsgd worker never waits for a slow one at an epoch end)",
    )
    train_seconds: float = option(0.0, "time mode: stop at the first evaluation after this much training")
    stop_at_plateau: bool = option(
        False,
        "stop at the evaluation where the last 3 dev WERs, and the last 3 dev losses, lie within 2 %% relative "
        "of each other (a plateau); "
        "--epochs or --train-seconds stays the limit",
    )
    checkpoint_every: int = option(0, "steps between checkpoints (0: evaluated epoch ends only)")
    keep_checkpoints: int = option(3, "complete checkpoints to keep")
    log_every: int = option(10, "steps between metrics records")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto: CUDA when present, else CPU", ("auto", "cpu", "cuda"))
    precision: str = option(
        "auto",
        "bf16: bfloat16 autocast (weights, optimizer and CTC stay float32); auto: bf16 on CUDA for models of 10 M "
        "parameters or more, else float32 (measured slower on small models and on the CPU); fp32: never",
        ("auto", "bf16", "fp32"),
    )
    resume: bool = option(False, "continue from the latest checkpoint")
    strategy: str = option("single", "how workers combine their work", STRATEGIES)
    nproc: int = option(1, "workers on this machine")
    nnodes: int = option(1, "machines")
    node_rank: int = option(0, "this machine's index")
    rdzv_endpoint: str = option("", "HOST:PORT of the c10d rendezvous (default 127.0.0.1 and a free port)")
    max_restarts: int = option(0, "restart failed workers this many times")
    elastic: bool = option(
        False,
        "adpsgd: a worker that dies or hangs leaves the others training and is replaced alone (--max-restarts "
        "in all); membership and batch claims live in a coordinator process, not in a worker",
    )
    lease_s: float = option(
        5.0, "--elastic: seconds without a heartbeat before a worker is dropped (with --coordinator: its own)"
    )
    pair_timeout_s: float = option(
        5.0, "--elastic: seconds a gossip exchange waits for its partner (a dead partner costs its survivor this once)"
    )
    coordinator: str = option(
        "",
        "--elastic on several machines: HOST:PORT of the coordinator started apart with "
        "`python -m dasr.parallel.membership SLOTS --host HOST --port PORT` (its --lease-s applies), or "
        "etcd://HOST:PORT,HOST:PORT,.../NAMESPACE: the run's store on an etcd cluster, and a coordinator "
        "replica on every node (no single point of failure but etcd's quorum)",
    )
    group_size: int = option(2, "hybrid: ranks per sync group")
    graph: str = option("exponential", "adpsgd partner graph", GRAPHS)
    gossip_period_s: float = option(0.1, "adpsgd: seconds between averaging rounds")
    localsgd_period: int = option(8, "localsgd: optimizer steps between two exact averagings")
    straggler: list[str] = option([], "slow RANK's compute by FACTOR (repeatable)", metavar="RANK:FACTOR")

    def validate(self) -> None:
        """Raise :class:`DasrError` naming the first option whose value cannot run."""
        if not self.data or not self.exp:
            raise DasrError("--data and --exp are required")
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise DasrError(f"{flag(f.name)} must be one of {', '.join(choices)}, not {getattr(self, f.name)!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise DasrError("give --epochs or --max-steps a positive value")
        if (self.eval_every_s > 0) != (self.train_seconds > 0):
            raise DasrError("--eval-every-s and --train-seconds go together (time mode): give both or neither")
        if self.eval_every_s > 0 and self.checkpoint_every > 0:
            # Workers of independent strategies would meet a checkpoint mark (counted in batches)
            # and an evaluation mark (counted in seconds of their own clock) in different orders,
            # and enter different collectives.
            raise DasrError(
                "--checkpoint-every cannot be combined with --eval-every-s: in time mode every evaluation "
                "writes a checkpoint; lower --eval-every-s for more frequent checkpoints"
            )
        if self.optimizer == "lamb" and importlib.util.find_spec("torch_optimizer") is None:
            raise DasrError("--optimizer lamb needs torch-optimizer: pip install 'dasr[lamb]'")
        if self.batch_frames <= 0:
            raise DasrError(f"--batch-frames must be positive, not {self.batch_frames}")
        if self.elastic:
            self._validate_elastic()
        elif self.coordinator:
            raise DasrError("--coordinator is for --elastic runs")

    def _validate_elastic(self) -> None:
        """--elastic runs adpsgd, evaluating at epoch ends; several machines share one coordinator."""
        for name in ("lease_s", "pair_timeout_s"):
            if getattr(self, name) <= 0:
                raise DasrError(f"{flag(name)} must be positive seconds, got {getattr(self, name)}")
        if self.strategy != "adpsgd":
            raise DasrError(f"--elastic needs --strategy adpsgd, not {self.strategy!r}")
        if self.nnodes > 1 and not self.coordinator:
            raise DasrError(
                "--elastic with --nnodes > 1 needs --coordinator: etcd://HOST:PORT,... of an etcd cluster, or "
                "HOST:PORT of `python -m dasr.parallel.membership SLOTS --host HOST --port PORT` on a host every node reaches"
            )
        if not 0 <= self.node_rank < self.nnodes:
            raise DasrError(
                f"--node-rank must be in [0, {self.nnodes}) for --nnodes {self.nnodes}, not {self.node_rank}"
            )
        from dasr.parallel.etcd_store import is_etcd_address, parse_address

        if is_etcd_address(self.coordinator):
            try:
                parse_address(self.coordinator)
            except ValueError as e:
                raise DasrError(f"--coordinator: {e}") from None
        elif self.coordinator:
            host, _, port = self.coordinator.rpartition(":")
            if not (host and port.isdigit() and 0 < int(port) < 65536):
                raise DasrError(
                    f"--coordinator must be HOST:PORT with a port number, or etcd://HOST:PORT,..., not {self.coordinator!r}"
                )
        if self.eval_every_s > 0:
            raise DasrError("--elastic does not take --eval-every-s yet (evaluations at epoch ends)")
        for name in ("checkpoint_every", "resume"):
            if getattr(self, name):
                raise DasrError(
                    f"--elastic does not take {flag(name)}: a replacement takes the model from a live worker, "
                    "and the live set's model is kept in EXP/last.pt at every evaluation"
                )
        if self.stop_at_plateau:
            raise DasrError(
                "--elastic does not take --stop-at-plateau yet: only the live set's leader evaluates, "
                "so the other workers do not see the dev curve"
            )

    @property
    def world_size(self) -> int:
        """Workers over all machines."""
        return self.nproc * self.nnodes


_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)


def flag(name: str) -> str:
    """The command-line flag of field ``name``: ``max_steps`` -> ``--max-steps``."""
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per :class:`TrainConfig` field to ``parser``.

    Every flag defaults to None ("not given"), so that :func:`resolve` can tell a given flag from
    the recipe's value; booleans get ``--NAME`` / ``--no-NAME``.
    """
    parser.add_argument(
        "--config",
        metavar="RECIPE|FILE",
        help=f"recipe: a YAML file (e.g. a saved EXP/config.yaml) or a packaged one ({', '.join(recipe_names())}); "
        "given flags override it",
    )
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        kind = _TYPES[f.name]
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata['help']} (default {default})" if default not in ("", []) else f.metadata["help"]
        kwargs: dict[str, Any] = {"default": None, "help": help_text, "metavar": f.metadata["metavar"]}
        if kind is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
            del kwargs["metavar"]
        elif kind == list[str]:
            kwargs.update(action="append")
        else:
            kwargs.update(type=kind, choices=f.metadata["choices"] or None)
        parser.add_argument(flag(f.name), **kwargs)


def resolve(recipe: str | None, given: dict[str, Any]) -> TrainConfig:
    """The validated config of ``recipe`` (None: the defaults) overridden by the ``given`` non-None values."""
    values = load_recipe(recipe) if recipe else {}
    values.update({name: value for name, value in given.items() if name in _TYPES and value is not None})
    config = TrainConfig(**values)
    config.validate()
    return config


def recipe_names() -> list[str]:
    """Names of the recipes shipped in the package (``dasr/recipes/*.yaml``)."""
    return sorted(p.name.removesuffix(".yaml") for p in RECIPES.iterdir() if p.name.endswith(".yaml"))


def load_recipe(spec: str) -> dict[str, Any]:
    """The settings of recipe ``spec``: a YAML file's path, or the name of a packaged recipe.

    Raises:
        DasrError: no such file or recipe, or a setting that is not an option or has the wrong type.
    """
    path = Path(spec)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DasrError(f"--config {spec}: no such file")
        return _check(yaml.safe_load(path.read_text()), str(path))
    if spec not in recipe_names():
        raise DasrError(f"--config {spec!r} is neither a YAML file nor a packaged recipe ({', '.join(recipe_names())})")
    return _check(yaml.safe_load(RECIPES.joinpath(f"{spec}.yaml").read_text()), f"recipe {spec}")


def _check(values: Any, source: str) -> dict[str, Any]:
    """``values`` of a YAML recipe as TrainConfig settings: old keys renamed, types checked and converted."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise DasrError(f"{source}: expected a mapping of option: value, not {type(values).__name__}")
    settings = {_RENAMED.get(str(key), str(key)): value for key, value in values.items()}
    unknown = sorted(set(settings) - set(_TYPES))
    if unknown:
        raise DasrError(f"{source}: unknown settings {unknown}")
    return {name: _convert(value, _TYPES[name], f"{source}: {name}") for name, value in settings.items()}


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}


def _convert(value: Any, kind: Any, what: str) -> Any:
    """``value`` as ``kind`` (YAML reads ``3e-3`` as a string and ``1`` where a float is meant)."""
    if kind is bool:
        if not isinstance(value, bool):
            raise DasrError(f"{what} must be true or false, not {value!r}")
        return value
    if kind == list[str]:
        if not isinstance(value, list):
            raise DasrError(f"{what} must be a list, not {value!r}")
        return [str(v) for v in value]
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise TypeError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise DasrError(f"{what} must be {_KIND_NAMES[kind]}, not {value!r}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (a recipe that reproduces the run)."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
