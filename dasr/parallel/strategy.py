"""The small interface between the trainer and how workers communicate.

The trainer calls only these methods::

    model = strategy.wrap(model, optimizer)      # once, before training
    loss.backward(); clip; strategy.step(optimizer)   # instead of optimizer.step()
    strategy.consensus(model)                    # before every evaluation and save
    strategy.close()                             # at the end (idempotent, agreed with the others)
    strategy.abort(reason)                       # instead of close() after a failure on this rank
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn


class Strategy(ABC):
    """How the workers of a run combine their work. One instance per worker process."""

    name: str = "base"
    #: constructor keyword -> the `dasr train` option (TrainConfig field) it comes from
    CONFIG_OPTIONS: ClassVar[dict[str, str]] = {}
    #: workers take steps at their own pace (adpsgd, ps): they share each epoch's batches by
    #: claiming them (global progress) instead of taking equal shares in lockstep
    independent_steps: bool = False
    #: workers may die, hang and be replaced while the others go on (no collective over all ranks)
    elastic: bool = False

    def leads(self, rank: int) -> bool:
        """Whether this worker writes the run's shared files (the model, evaluations): rank 0, or an elastic
        run's lowest live slot."""
        return rank == 0

    @abstractmethod
    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Prepare ``model`` (and its optimizer) for training; returns the module to call forward on."""

    @abstractmethod
    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply this step's gradients; replaces ``optimizer.step()``."""

    def consensus(self, model: nn.Module) -> None:
        """Make ``model`` the average of all workers' models (a no-op where replicas are identical)."""

    def agree(self, flag: bool) -> bool:
        """Whether this worker acts on ``flag`` now (e.g. "evaluation due").

        Workers that take every step together (sync, a hybrid group) must decide alike: they
        return the flag OR-ed over that group. Independent workers (adpsgd, ps) decide on their
        own, so a fast one never waits for a slow one to decide; the collective that follows
        (:meth:`consensus`) is where they meet.
        """
        return flag

    def state_dict(self) -> dict:
        """State needed to resume exactly (e.g. the gossip round)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def stats(self) -> dict:
        """Per-worker counters for metrics.jsonl, cumulative since :meth:`wrap` (e.g. staleness).

        Strategies that communicate report ``comm_s`` (seconds communication took, hidden
        behind compute or not) and ``exposed_comm_s`` (the part the training thread waited for).
        """
        return {}

    def close(self) -> None:
        """Join threads and release process groups; safe to call twice."""

    def abort(self, reason: str) -> None:
        """End after a failure on this worker alone, without agreeing with the others (default: :meth:`close`).

        The caller says which end it means: :meth:`close` never aborts, whatever exception is
        being handled around it (a normal close inside an ``except`` block is still a close).
        """
        self.close()


class PublicClassStrategy(Strategy):
    """The Strategy interface over one of the public classes (ADPSGD, Hybrid, ParameterServer).

    ``wrap`` builds ``self.impl``; training goes through the plain ``optimizer.step()`` (the
    class works through optimizer step hooks) and everything else is the class's own method.
    """

    def __init__(self) -> None:
        self.impl: Any = None

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def consensus(self, model: nn.Module | None = None) -> None:
        self._impl().average()

    def state_dict(self) -> dict:
        return self._impl().state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._impl().load_state_dict(state)

    def stats(self) -> dict:
        return self._impl().stats() if self.impl is not None else {}

    def close(self) -> None:
        if self.impl is not None:
            self.impl.close()

    def abort(self, reason: str) -> None:
        """The class's own ``abort(reason)`` where it has one (ADPSGD, Hybrid), else :meth:`close`."""
        if self.impl is None:
            return
        if hasattr(self.impl, "abort"):
            self.impl.abort(reason)
        else:
            self.impl.close()

    def _impl(self) -> Any:
        if self.impl is None:
            raise RuntimeError(f"{self.name} strategy used before wrap()")
        return self.impl


class SingleStrategy(Strategy):
    """One process, plain optimizer steps."""

    name = "single"

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        return model

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()


def accumulate(strategy: Strategy, model: nn.Module):
    """Context for the backward passes of all but the last micro-batch of an accumulated step.

    Strategies that communicate during backward (DDP-based ``sync`` and ``hybrid``) skip the
    gradient all-reduce inside it; the others do nothing::

        for i, batch in enumerate(micro_batches):
            with accumulate(strategy, model) if i < len(micro_batches) - 1 else nullcontext():
                loss(model, batch).backward()
        strategy.step(optimizer)
    """
    fn = getattr(strategy, "accumulate", None)
    return fn() if fn is not None else contextlib.nullcontext()
