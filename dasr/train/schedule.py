"""Learning rate: peak scaled with the effective batch, linear warm-up, then anneal.

Large-batch rule (Goyal et al. 2017; the paper's 256 -> 2560): the peak rate grows with the
effective batch, linearly or with its square root, reached by a linear warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def scaled_peak_lr(base_lr: float, effective_batch: float, reference_batch: float, rule: str) -> float:
    """``base_lr`` is right for ``reference_batch``; scale it to ``effective_batch`` by ``rule``."""
    ratio = effective_batch / reference_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown LR scaling rule {rule!r}: expected linear, sqrt or none")


@dataclass
class LrSchedule:
    """lr(step, epoch): warm-up over ``warmup_steps``, then ``anneal``.

    ``anneal="paper"`` multiplies by 1/sqrt(2) for every epoch from ``anneal_start_epoch`` on;
    ``anneal="cosine"`` decays to zero over ``total_steps``. Steps are the worker's own
    optimizer steps (its own sample count), never a shared counter.
    """

    peak_lr: float
    warmup_steps: int = 0
    anneal: str = "paper"
    anneal_start_epoch: int = 10
    total_steps: int = 0

    def __post_init__(self) -> None:
        if self.anneal not in ("paper", "cosine"):
            raise ValueError(f"unknown anneal {self.anneal!r}: expected paper or cosine")

    def lr(self, step: int, epoch: float) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.anneal == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return 0.5 * self.peak_lr * (1 + math.cos(math.pi * progress))
        decays = max(0, int(epoch) - self.anneal_start_epoch + 1)
        return self.peak_lr * 2 ** (-0.5 * decays)
