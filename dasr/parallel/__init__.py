"""How workers combine their work: the public ADPSGD / Hybrid / ParameterServer wrappers,
the trainer's strategies over them, gossip topology, launching.

Any model, after ``torch.distributed.init_process_group``::

    from dasr.parallel import ADPSGD
    gossip = ADPSGD(model, optimizer, graph="exponential", period_s=0.05)
    for batch in loader:
        loss_fn(model, batch).backward(); optimizer.step(); optimizer.zero_grad()
    gossip.average()      # the exact average of all replicas (collective)
    gossip.close()

The trainer's interface (:class:`Strategy`)::

    strategy = make_strategy("adpsgd", graph="exponential", period_s=0.1)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dasr.parallel.strategy import SingleStrategy, Strategy, accumulate

if TYPE_CHECKING:
    from dasr.parallel.adpsgd import ADPSGD
    from dasr.parallel.gossip import GossipError
    from dasr.parallel.hybrid import Hybrid
    from dasr.parallel.ps import ParameterServer

#: strategy name -> "module:class" of its Strategy, imported on first use: the one place a strategy is named
STRATEGY_CLASSES = {
    "single": "dasr.parallel.strategy:SingleStrategy",
    "sync": "dasr.parallel.sync:SyncStrategy",
    "adpsgd": "dasr.parallel.adpsgd:AdpsgdStrategy",
    "hybrid": "dasr.parallel.hybrid:HybridStrategy",
    "ps": "dasr.parallel.ps:ParameterServerStrategy",
    "localsgd": "dasr.parallel.localsgd:LocalSgdStrategy",
}
STRATEGIES = tuple(STRATEGY_CLASSES)

_PUBLIC = {
    "ADPSGD": "dasr.parallel.adpsgd",
    "Hybrid": "dasr.parallel.hybrid",
    "ParameterServer": "dasr.parallel.ps",
    "GossipError": "dasr.parallel.gossip",
}


def __getattr__(name: str) -> Any:
    """The public classes, imported on first use (``import dasr.parallel`` stays light)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dasr.parallel' has no attribute {name!r}")


def strategy_class(name: str) -> type[Strategy]:
    """The Strategy class registered as ``name``."""
    if name not in STRATEGY_CLASSES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    module, _, cls = STRATEGY_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy ``name`` with its keyword ``options``.

    single: no options. sync: ``bucket_cap_mb``, ``verify``. adpsgd: ``graph``, ``seed``,
    ``period_s``, ``timeout_s``, ``sync_init``. hybrid: ``group_size`` plus adpsgd's and
    ``bucket_cap_mb``. ps: ``timeout_s`` (runs without a process group as one worker).
    localsgd: ``period`` (steps between averagings), ``warmup_steps``.
    ``sync``/``adpsgd``/``hybrid``/``localsgd`` need an initialised process group
    (:func:`dasr.parallel.launch.init_worker`). Each class names the `dasr train` options it takes
    in ``CONFIG_OPTIONS``.
    """
    return strategy_class(name)(**options)


__all__ = [
    "ADPSGD",
    "Hybrid",
    "ParameterServer",
    "GossipError",
    "Strategy",
    "SingleStrategy",
    "accumulate",
    "make_strategy",
    "strategy_class",
    "STRATEGY_CLASSES",
    "STRATEGIES",
]
