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

from typing import TYPE_CHECKING, Any

from dasr.parallel.strategy import SingleStrategy, Strategy, accumulate

if TYPE_CHECKING:
    from dasr.parallel.adpsgd import ADPSGD
    from dasr.parallel.gossip import GossipError
    from dasr.parallel.hybrid import Hybrid
    from dasr.parallel.ps import ParameterServer

STRATEGIES = ("single", "sync", "adpsgd", "hybrid", "ps", "localsgd")

_PUBLIC = {
    "ADPSGD": "dasr.parallel.adpsgd",
    "Hybrid": "dasr.parallel.hybrid",
    "ParameterServer": "dasr.parallel.ps",
    "GossipError": "dasr.parallel.gossip",
}


def __getattr__(name: str) -> Any:
    """The public classes, imported on first use (``import dasr.parallel`` stays light)."""
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dasr.parallel' has no attribute {name!r}")


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy ``name`` with its keyword ``options``.

    single: no options. sync: ``bucket_cap_mb``, ``verify``. adpsgd: ``graph``, ``seed``,
    ``period_s``, ``timeout_s``, ``sync_init``. hybrid: ``group_size`` plus adpsgd's and
    ``bucket_cap_mb``. ps: ``timeout_s`` (runs without a process group as one worker).
    localsgd: ``period`` (steps between averagings), ``warmup_steps``.
    ``sync``/``adpsgd``/``hybrid``/``localsgd`` need an initialised process group
    (:func:`dasr.parallel.launch.init_worker`).
    """
    if name == "single":
        if options:
            raise ValueError(f"strategy 'single' takes no options, got {sorted(options)}")
        return SingleStrategy()
    if name == "sync":
        from dasr.parallel.sync import SyncStrategy

        return SyncStrategy(**options)
    if name == "adpsgd":
        from dasr.parallel.adpsgd import AdpsgdStrategy

        return AdpsgdStrategy(**options)
    if name == "hybrid":
        from dasr.parallel.hybrid import HybridStrategy

        return HybridStrategy(**options)
    if name == "ps":
        from dasr.parallel.ps import ParameterServerStrategy

        return ParameterServerStrategy(**options)
    if name == "localsgd":
        from dasr.parallel.localsgd import LocalSgdStrategy

        return LocalSgdStrategy(**options)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


__all__ = [
    "ADPSGD",
    "Hybrid",
    "ParameterServer",
    "GossipError",
    "Strategy",
    "SingleStrategy",
    "accumulate",
    "make_strategy",
    "STRATEGIES",
]
