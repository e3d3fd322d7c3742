"""Many distributed scenarios in one launch: each worker process runs them in turn, all ranks together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_scenarios(scenarios: list[tuple[str, Callable[[int], Any]]], watchdog_s: float, timeout_s: float) -> dict:
    """In one worker of a :func:`dasr.parallel.launch.launch`: ``{name: scenario(rank)}`` for every scenario,
    with a barrier after each; a worker stuck past ``watchdog_s`` dumps its stacks and exits (a hang fails)."""
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(watchdog_s, exit=True)
    info = init_worker(timeout_s=timeout_s)
    out = {}
    for name, scenario in scenarios:
        out[name] = scenario(info.rank)
        dist.barrier()
    dist.destroy_process_group()
    return out
