"""How workers combine their work: strategies, gossip topology, launching.

from dasr.parallel import make_strategy
strategy = make_strategy("adpsgd", graph="ring", period_s=0.1)
"""

from __future__ import annotations

from dasr.parallel.strategy import SingleStrategy, Strategy, accumulate

STRATEGIES = ("single", "sync", "adpsgd", "hybrid", "ps")


def make_strategy(name: str, **options) -> Strategy:
    """Build the strategy ``name`` with its keyword ``options``.

    single: no options. sync: ``bucket_cap_mb``, ``verify``. adpsgd: ``graph``, ``seed``,
    ``period_s``, ``timeout_s``, ``sync_init``. hybrid: ``group_size`` plus adpsgd's and
    ``bucket_cap_mb``. ps: ``timeout_s`` (runs without a process group as one worker).
    ``sync``/``adpsgd``/``hybrid`` need an initialised process group
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
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


__all__ = ["Strategy", "SingleStrategy", "accumulate", "make_strategy", "STRATEGIES"]
