"""The asynchronous parameter server on real worker processes (gloo over 127.0.0.1).

One 3-worker launch runs all multi-process scenarios; a faulthandler watchdog turns a
deadlock into a worker failure that the launcher reports, never a hanging test.
"""

import copy
import time

import pytest
import torch
from torch import nn

from dasr.parallel import make_strategy
from dasr.parallel.launch import launch


class TinyLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        return self.out(self.lstm(x)[0]).mean(1)


def _data(seed, n=16):
    x = torch.randn(n, 6, 8, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(123))
    return x, x.mean(1) @ w


def _backward(model, seed, n=16):
    x, y = _data(seed, n)
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _diff(a, b):
    return (_flat(a) - _flat(b)).abs().max().item()


def _sgd(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3)


# ----------------------------------------------------------------------------- one process


def test_one_worker_equals_sgd_nesterov_and_resumes_exactly():
    torch.manual_seed(0)
    model = TinyLSTM()
    ref = copy.deepcopy(model)
    opt, ref_opt = _sgd(model), _sgd(ref)
    strategy = make_strategy("ps", timeout_s=60)
    strategy.wrap(model, opt)
    for step in range(5):
        for m in (model, ref):
            _backward(m, step)
        opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = 0.1 / (step + 1)  # follows the schedule
        strategy.step(opt)
        ref_opt.step()
        assert _diff(model, ref) < 1e-6
    assert strategy.stats()["staleness_max"] == 0 and strategy.stats()["pushes"] == 5
    # resume: a fresh strategy on a copy of the model continues exactly
    model2 = copy.deepcopy(model)
    opt2 = _sgd(model2, lr=opt.param_groups[0]["lr"])
    resumed = make_strategy("ps")
    resumed.wrap(model2, opt2)
    resumed.load_state_dict(strategy.state_dict())
    for step in range(5, 8):
        for m in (model, model2):
            _backward(m, step)
        strategy.step(opt)
        resumed.step(opt2)
    assert _diff(model, model2) == 0.0
    assert resumed.state_dict()["version"] == 8
    strategy.close()
    strategy.close()


def test_ps_rejects_non_sgd_optimizer():
    model = TinyLSTM()
    with pytest.raises(ValueError, match="applies SGD"):
        make_strategy("ps").wrap(model, torch.optim.AdamW(model.parameters()))
    with pytest.raises(ValueError, match="timeout_s"):
        make_strategy("ps", timeout_s=0)


# ----------------------------------------------------------------------------- workers


def _gathered_spread(flat, world):
    import torch.distributed as dist

    flats = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(flats, flat)
    return max((f - flats[0]).abs().max().item() for f in flats)


def _exact_scenario(info):
    """One worker at a time: rank 0 (in-process path), then rank 1 (network path)."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = TinyLSTM()
    ref = copy.deepcopy(model)
    opt, ref_opt = _sgd(model), _sgd(ref)
    strategy = make_strategy("ps", timeout_s=30)
    strategy.wrap(model, opt)
    worst = 0.0
    for step in range(3):  # every rank follows rank 0's steps in its reference
        _backward(ref, step)
        ref_opt.step()
        if info.rank == 0:
            _backward(model, step)
            strategy.step(opt)
            worst = max(worst, _diff(model, ref))
    dist.barrier()  # tests only: phases in order
    if info.rank == 1:  # first gradient on its initial (stale) replica
        for step in range(3, 6):
            _backward(model, step)
            for p, q in zip(model.parameters(), ref.parameters()):
                q.grad = p.grad.clone()
            strategy.step(opt)
            ref_opt.step()
            worst = max(worst, _diff(model, ref))
    dist.barrier()
    strategy.consensus(model)
    res = {"worst": worst, "spread": _gathered_spread(strategy.flat, info.world_size), "stats": strategy.stats()}
    if info.rank == 0:
        res["vs_master"] = (strategy.flat - strategy.server.master).abs().max().item()
    if info.rank == 1:
        res["final_vs_ref"] = _diff(model, ref)
    strategy.close()
    strategy.close()  # idempotent
    return res


def _train_scenario(info, steps=25):
    import torch.distributed as dist

    torch.manual_seed(0)
    model = TinyLSTM()
    opt = _sgd(model, lr=0.05)
    strategy = make_strategy("ps", timeout_s=30)
    strategy.wrap(model, opt)
    xe, ye = _data(999, 64)
    with torch.no_grad():
        loss0 = nn.functional.mse_loss(model(xe), ye).item()
    _backward(model, 0, 128)  # warm-up outside the measured race
    dist.barrier()  # a common start, once (tests only)
    for step in range(steps):
        _backward(model, 1000 * info.rank + step, 128)
        strategy.step(opt)
    strategy.consensus(model)
    with torch.no_grad():
        loss1 = nn.functional.mse_loss(model(xe), ye).item()
    res = {
        "loss0": loss0,
        "loss1": loss1,
        "spread": _gathered_spread(strategy.flat, info.world_size),
        "stats": strategy.stats(),
    }
    if info.rank == 0:
        res["vs_master"] = (strategy.flat - strategy.server.master).abs().max().item()
    strategy.close()
    return res


def _straggler_scenario(info, wall_s):
    import torch.distributed as dist

    from dasr.parallel.straggler import Straggler

    torch.manual_seed(0)
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = make_strategy("ps", timeout_s=30)
    strategy.wrap(model, opt)
    slow = Straggler.parse("2:5", info.rank)
    dist.barrier()  # a common start, once (tests only)
    deadline = time.monotonic() + wall_s
    while time.monotonic() < deadline:
        with slow.step():
            _backward(model, info.rank)
            strategy.step(opt)
    t = time.monotonic()
    strategy.close()
    return {"close_s": time.monotonic() - t, "stats": strategy.stats()}


def _others_pause_first_scenario(info, rounds=3):
    """Rank 0 is the slowest: the others reach consensus() (pause) while it still has steps to do."""
    torch.manual_seed(0)
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = make_strategy("ps", timeout_s=5)
    strategy.wrap(model, opt)
    for r in range(rounds):
        for step in range(3):
            if info.rank == 0:
                time.sleep(0.3)  # the others push, then pause, meanwhile
            _backward(model, 10 * r + step)
            strategy.step(opt)
        strategy.consensus(model)
    spread = _gathered_spread(strategy.flat, info.world_size)
    strategy.close()
    return {"spread": spread, "stats": strategy.stats()}


def _silent_scenario(info):
    """Nobody pushes while the server serves: a clear error after timeout_s, no hang."""
    from dasr.parallel.ps import ParameterServerError

    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = make_strategy("ps", timeout_s=1)
    strategy.wrap(model, opt)
    if info.rank == 0:
        _backward(model, 0)
        strategy.step(opt)  # the server serves from here on
    time.sleep(2.0)
    t = time.monotonic()
    try:
        strategy.close()
        error = None
    except ParameterServerError as e:
        error = str(e)
    return {"error": error, "close_s": time.monotonic() - t}


def _three_worker_suite():
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(90, exit=True)
    info = init_worker(timeout_s=30)
    out = {}
    for name, run in (
        ("exact", _exact_scenario),
        ("train", _train_scenario),
        ("straggler", lambda i: _straggler_scenario(i, 2.0)),
        ("pause_first", _others_pause_first_scenario),
        ("silent", _silent_scenario),
    ):
        t = time.monotonic()
        out[name] = run(info)
        out[name]["wall_s"] = time.monotonic() - t
    dist.destroy_process_group()
    return out


@pytest.fixture(scope="module")
def three_workers():
    return launch(_three_worker_suite, (), nproc=3)


def test_one_worker_at_a_time_equals_sgd_nesterov_on_both_paths(three_workers):
    out = {r: v["exact"] for r, v in three_workers.items()}
    assert out[0]["worst"] < 1e-6, out  # rank 0: in-process path
    assert out[1]["worst"] < 1e-6, out  # rank 1: network path, momentum carried on
    assert out[1]["final_vs_ref"] < 1e-6, out
    assert out[1]["stats"]["staleness_max"] == 3, out  # first push computed at version 0, applied at 3
    assert out[0]["stats"]["pushes"] == 3 and out[1]["stats"]["pushes"] == 3 and out[2]["stats"]["pushes"] == 0
    for res in out.values():
        assert res["spread"] == 0.0 and res["stats"]["version"] == 6, out
    assert out[0]["vs_master"] == 0.0


def test_three_workers_train_with_bounded_staleness(three_workers):
    out = {r: v["train"] for r, v in three_workers.items()}
    print(
        {
            r: (round(res["stats"]["staleness_mean"], 2), res["stats"]["staleness_max"], res["wall_s"])
            for r, res in out.items()
        }
    )
    n = len(out)
    for res in out.values():
        assert res["loss1"] < 0.8 * res["loss0"], out
        assert res["spread"] == 0.0, out  # consensus: identical replicas ...
        assert res["stats"]["pushes"] == 25 and res["stats"]["version"] == 25 * n, out
    assert out[0]["vs_master"] == 0.0  # ... equal to the server's master
    # equally fast workers: N - 1 on average (rank 0's in-process pushes see less); the maximum
    # depends on how the OS schedules 3 processes on a shared 2-core machine (19 was seen with
    # another test file running beside), bounded by the other workers' pushes in all
    mean = sum(res["stats"]["staleness_mean"] for res in out.values()) / n
    assert 0 < mean <= n, out
    assert 0 < max(res["stats"]["staleness_max"] for res in out.values()) <= 25 * (n - 1), out
    assert out[0]["stats"]["server_updates"] == 25 * n


def test_slow_worker_does_not_block_the_others(three_workers):
    out = {r: v["straggler"] for r, v in three_workers.items()}
    print(
        {r: (res["stats"]["pushes"], res["stats"]["staleness_max"], round(res["close_s"], 3)) for r, res in out.items()}
    )
    slow = out[2]["stats"]["pushes"]
    for r in (0, 1):
        assert out[r]["stats"]["pushes"] >= 2 * slow, out
    assert max(res["close_s"] for res in out.values()) < 5, out


def test_silent_workers_give_a_clear_error_not_a_hang(three_workers):
    out = {r: v["silent"] for r, v in three_workers.items()}
    print(out)
    assert "parameter server thread on rank 0 failed" in out[0]["error"], out
    assert all("lost the parameter server" in out[r]["error"] for r in (1, 2)), out
    assert max(res["close_s"] for res in out.values()) < 2, out


def test_workers_pausing_before_a_slow_rank_0_do_not_deadlock(three_workers):
    """Regression: the server thread re-entered gloo for a pause it had already handled (timed out at version 2)."""
    out = {r: v["pause_first"] for r, v in three_workers.items()}
    for res in out.values():
        assert res["spread"] == 0.0 and res["stats"]["version"] == 3 * 3 * len(out), out
        assert res["wall_s"] < 4.5, out  # well under the scenario's 5 s timeout: no wait for a lost pause
