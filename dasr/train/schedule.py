"""Learning rate: the large-batch recipe (peak scaled with the batch, LEGW warm-up, the paper's annealing).

The paper grew the batch from 256 to 2560 utterances at equal accuracy by scaling the peak LR
with the batch and warming up to it. Here the batch multiplier is
``m = world_size x batch_frames / reference_batch_frames`` and, by default:

* the peak LR is ``lr x m`` for SGD with Nesterov momentum (Goyal et al. 2017, the paper's
  rule: k steps of SGD at batch B move about as far as one step at kB) and ``lr x sqrt(m)``
  for AdamW (its update is normalised by the gradient's scale, so only the noise term grows
  with the batch: the square-root rule of Hoffer et al. 2017 and Malladi et al. 2022) and for
  LAMB (AdamW with a layer-wise trust ratio; You et al. 2020 scale its LR by the square root);
* the warm-up lasts ``warmup_epochs x m`` epochs (LEGW, You et al. 2019): the same number of
  updates at every batch, each seeing m times the data;
* then the paper's annealing, x 1/sqrt(2) per epoch from ``anneal_start_epoch`` (or cosine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dasr.config import TrainConfig

#: the LR scaling rule ``lr_scaling="auto"`` picks for each optimizer
AUTO_RULE = {"sgd": "linear", "adamw": "sqrt", "lamb": "sqrt"}


def scaling_rule(rule: str, optimizer: str) -> str:
    """``rule``, or for ``"auto"`` the rule of ``optimizer`` (linear for SGD, square root for AdamW and LAMB)."""
    if rule != "auto":
        return rule
    if optimizer not in AUTO_RULE:
        raise ValueError(f"no automatic LR scaling rule for optimizer {optimizer!r}: give linear, sqrt or none")
    return AUTO_RULE[optimizer]


def scaled_peak_lr(base_lr: float, multiplier: float, rule: str) -> float:
    """``base_lr`` is right for the reference batch; the peak LR at ``multiplier`` times it, by ``rule``."""
    if rule == "linear":
        return base_lr * multiplier
    if rule == "sqrt":
        return base_lr * math.sqrt(multiplier)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown LR scaling rule {rule!r}: expected linear, sqrt or none")


@dataclass
class LrSchedule:
    """lr(step, epoch) = peak x warm-up ramp x anneal.

    The warm-up ramps linearly to the peak over ``warmup_steps`` steps when that is positive,
    else over ``warmup_epochs`` epochs (fractional; no warm-up when both are 0).
    ``anneal="paper"`` multiplies by 1/sqrt(2) for every epoch from ``anneal_start_epoch`` on;
    ``anneal="cosine"`` decays to zero from the end of a step warm-up to ``total_steps``. Steps
    are the worker's own optimizer steps; ``epoch`` is the epoch's progress, counting the batch
    being trained.
    """

    peak_lr: float
    warmup_steps: int = 0
    anneal: str = "paper"
    anneal_start_epoch: int = 10
    total_steps: int = 0
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.anneal not in ("paper", "cosine"):
            raise ValueError(f"unknown anneal {self.anneal!r}: expected paper or cosine")

    def warmup_factor(self, step: int, epoch: float) -> float:
        """The ramp: 1 once the warm-up is over."""
        if self.warmup_steps:
            return min(1.0, (step + 1) / self.warmup_steps)
        if self.warmup_epochs:
            return min(1.0, epoch / self.warmup_epochs)
        return 1.0

    def anneal_factor(self, step: int, epoch: float) -> float:
        """The decay after the warm-up: 1 until it starts."""
        if self.anneal == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 2 ** (-0.5 * max(0, int(epoch) - self.anneal_start_epoch + 1))

    def lr(self, step: int, epoch: float) -> float:
        """The learning rate of step ``step`` (0-based), taken at ``epoch`` (fractional)."""
        return self.peak_lr * self.warmup_factor(step, epoch) * self.anneal_factor(step, epoch)


def batch_multiplier(config: TrainConfig, world_size: int) -> float:
    """m: the effective batch (``world_size x batch_frames``) over ``reference_batch_frames`` (0: one worker's)."""
    return world_size * config.batch_frames / (config.reference_batch_frames or config.batch_frames)


def build_schedule(config: TrainConfig, world_size: int, steps_per_epoch: int) -> LrSchedule:
    """The recipe for this run's batch: peak LR scaled by the rule, LEGW warm-up of ``warmup_epochs x m``, anneal."""
    m = batch_multiplier(config, world_size)
    peak = scaled_peak_lr(config.lr, m, scaling_rule(config.lr_scaling, config.optimizer))
    total = config.max_steps or config.epochs * steps_per_epoch
    return LrSchedule(
        peak,
        config.warmup_steps,
        config.anneal,
        config.anneal_start_epoch,
        total,
        warmup_epochs=config.warmup_epochs * m,
    )
