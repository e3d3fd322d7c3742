"""One worker process: its logging, restart detection, process group and strategy, then the Trainer.

`dasr train` starts these processes itself (:mod:`dasr.train.run`); a plain
``torchrun -m dasr.train`` starts them too (:mod:`dasr.train.__main__`), and then each node's
local rank 0 prepares the experiment dir while the others wait.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, replace

import torch

from dasr.config import TrainConfig
from dasr.parallel import strategy_class
from dasr.parallel.launch import Worker, finish_worker, init_worker
from dasr.parallel.strategy import SingleStrategy, Strategy
from dasr.train.collectives import barrier
from dasr.train.device import select_device
from dasr.train.experiment import prepare_experiment
from dasr.train.trainer import Trainer


def strategy_from_config(config: TrainConfig) -> Strategy:
    """The Strategy the config names, with the options its class takes from the config (``CONFIG_OPTIONS``)."""
    cls = strategy_class(config.strategy)
    if config.elastic:
        from dasr.parallel.elastic import ElasticAdpsgdStrategy as cls
    return cls(**{option: getattr(config, field) for option, field in cls.CONFIG_OPTIONS.items()})


def restarted() -> bool:
    """Whether the launcher restarted this worker after a failure (it then resumes from the checkpoint)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def run_worker(config: TrainConfig, prepare: bool = False) -> dict:
    """Entry point of one worker process (also the whole run with one worker); returns the final counters.

    ``prepare``: started by a plain ``torchrun`` rather than `dasr train`, so the experiment dir
    is prepared here.
    """
    if not logging.getLogger().handlers:  # a spawned worker process
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s rank %(process)d %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and config.strategy == "single":
        if prepare:
            prepare_experiment(config)
        return asdict(Trainer(config, SingleStrategy(), Worker(device=select_device(config.device))).run())
    if config.elastic:  # no torch process group: membership is the coordinator's
        torch.set_num_threads(1)
        slot = int(os.environ["DASR_ELASTIC_SLOT"])
        worker = Worker(rank=slot, world_size=config.world_size, device=select_device(config.device))
        return asdict(Trainer(config, strategy_from_config(config), worker).run())
    if restarted():
        config = replace(config, resume=True)
    worker = init_worker()
    try:
        if prepare:
            if worker.local_rank == 0:
                prepare_experiment(config)
            barrier(worker)
        if config.device == "cpu":
            worker = replace(worker, device=torch.device("cpu"))
        return asdict(Trainer(config, strategy_from_config(config), worker).run())
    finally:
        finish_worker()
