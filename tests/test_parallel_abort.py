"""Regression: a rank that fails alone aborts the gossip without an agreement (issue 13, 3a).

Before the fix the failing rank hung in ``close()`` waiting for a stop agreement the others
never joined, and the others met a misleading "ranks disagree" or a timeout. Now the failing
rank returns at once and every other rank stops with "rank 2 failed: ...".
"""

import time

import torch
from torch import nn

from dasr.parallel.launch import launch

FAILING = 2


def _abort_worker():
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel import make_strategy
    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(60, exit=True)
    info = init_worker(timeout_s=30)
    torch.manual_seed(0)
    model = nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = make_strategy("adpsgd", graph="exponential", period_s=0.02, timeout_s=20)
    strategy.wrap(model, opt)
    x = torch.randn(8, 16)
    out = {}
    t0 = time.monotonic()
    try:
        for step in range(10_000):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            strategy.step(opt)
            if info.rank == FAILING and step == 20:
                raise ValueError("too many non-finite losses")
            if info.rank != FAILING and time.monotonic() - t0 > 3.0:
                strategy.consensus(model)
                out["error"] = None
                break
            time.sleep(0.005)
    except Exception as e:
        out["error"] = str(e)
        t = time.monotonic()
        try:
            strategy.abort(f"{type(e).__name__}: {e}")  # the trainer's path after a failure
        except Exception as close_error:
            out["close_error"] = str(close_error)
        out["close_s"] = time.monotonic() - t
    out["failed_after_s"] = time.monotonic() - t0
    dist.destroy_process_group()
    return out


def test_a_failing_rank_aborts_and_the_others_name_it():
    t = time.monotonic()
    out = launch(_abort_worker, (), nproc=4)
    print(out, time.monotonic() - t)
    assert "non-finite" in out[FAILING]["error"], out
    assert out[FAILING]["close_s"] < 5, out  # no agreement to wait for
    for r in range(4):
        if r != FAILING:
            assert out[r]["error"] is not None and f"rank {FAILING} failed" in out[r]["error"], out
            assert "too many non-finite losses" in out[r]["error"], out  # the reason travels
            assert out[r]["failed_after_s"] < 15, out  # not the 20 s gloo timeout
