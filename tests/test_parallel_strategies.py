"""sync / adpsgd / hybrid on real worker processes (gloo over 127.0.0.1).

Every worker arms a faulthandler watchdog, so a deadlock becomes a worker failure that
the launcher reports (and cleans up), never a hanging test.
"""

import time

import pytest
import torch
from torch import nn

from dasr.parallel.launch import launch


class TinyLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        return self.out(self.lstm(x)[0]).mean(1)


def _data(seed, n):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 8, generator=g)
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(123))
    return x, x.mean(1) @ w


def _setup(seed=0):
    import faulthandler

    faulthandler.dump_traceback_later(90, exit=True)
    from dasr.parallel.launch import init_worker

    info = init_worker(timeout_s=30)
    torch.manual_seed(seed)
    return info


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ----------------------------------------------------------------------------- sync


def _sync_worker():
    import copy

    from dasr.parallel import make_strategy

    info = _setup()
    model = TinyLSTM()
    ref = copy.deepcopy(model)  # single process, double batch
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    strategy = make_strategy("sync", verify=True)
    ddp = strategy.wrap(model, opt)
    for step in range(5):
        x, y = _data(step, 16)
        ref_opt.zero_grad()
        nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.step()
        mine = slice(info.rank * 8, info.rank * 8 + 8)
        opt.zero_grad()
        if step % 2:  # accumulate two micro-batches without communication in the first
            with strategy.accumulate():
                (0.5 * nn.functional.mse_loss(ddp(x[mine][:4]), y[mine][:4])).backward()
            (0.5 * nn.functional.mse_loss(ddp(x[mine][4:]), y[mine][4:])).backward()
        else:
            nn.functional.mse_loss(ddp(x[mine]), y[mine]).backward()
        strategy.step(opt)
    strategy.consensus(model)  # verify=True: raises if replicas differ
    strategy.close()
    return (_flat(model) - _flat(ref)).abs().max().item()


def test_sync_two_workers_equal_single_process_double_batch():
    out = launch(_sync_worker, (), nproc=2)
    assert max(out.values()) < 1e-5, out


# ----------------------------------------------------------------------------- adpsgd


def _mean_and_spread(flat, world):
    import torch.distributed as dist

    s = flat.double().clone()
    dist.all_reduce(s)
    mean = s / world
    dev = (flat.double() - mean).abs().max().clone()
    dist.all_reduce(dev, op=dist.ReduceOp.MAX)
    return mean, dev.item()


def _adpsgd_scenario(info):
    """The public API end to end: plain optimizer.step(), average(), state_dict, close twice."""
    from dasr.parallel import ADPSGD

    torch.manual_seed(100 + info.rank)  # different replicas
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    gossip = ADPSGD(model, opt, graph="ring", period_s=0.02, timeout_s=30, sync_init=False)
    flat = gossip.flat.buffers[0]
    res = {}
    _, spread0 = _mean_and_spread(flat, info.world_size)
    opt.step()  # gossip alone (no gradients: SGD skips parameters without .grad)
    time.sleep(0.3)
    gossip._drain()  # all threads parked at one agreed round
    _, spread1 = _mean_and_spread(flat, info.world_size)
    res["rounds"] = gossip.gossip.round
    res["spread"] = (spread0, spread1)
    # training with a LR scheduler on the plain optimizer: loss on a fixed batch falls
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    xe, ye = _data(999, 64)
    gossip.average()
    with torch.no_grad():
        res["loss0"] = nn.functional.mse_loss(model(xe), ye).item()
    for step in range(40):
        x, y = _data(1000 * info.rank + step, 16)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
    gossip.average()
    with torch.no_grad():
        res["loss1"] = nn.functional.mse_loss(model(xe), ye).item()
    res["lr"] = opt.param_groups[0]["lr"]
    res["state"] = gossip.state_dict()
    res["stats"] = gossip.stats()
    gossip.close()
    gossip.close()  # idempotent
    return res


def test_adpsgd_public_api_trains_through_the_plain_optimizer(four_workers):
    out = {r: v["adpsgd"] for r, v in four_workers.items()}
    for _r, res in out.items():
        assert res["rounds"] > 3, res
        assert res["spread"][1] < 0.7 * res["spread"][0], res  # gossip pulls replicas together
        assert res["loss1"] < 0.8 * res["loss0"], res
        assert res["lr"] == 0.2 * 0.5**4, res  # the scheduler drove the same optimizer
        assert res["stats"]["steps"] == 41, res  # every optimizer.step() went through the hooks
    assert len({res["state"]["round"] for res in out.values()}) == 1  # parked at one round
    assert len({res["loss1"] for res in out.values()}) == 1  # average() left identical replicas


def _straggler_scenario(info, wall_s):
    import torch.distributed as dist

    from dasr.parallel import make_strategy
    from dasr.parallel.straggler import Straggler

    torch.manual_seed(0)
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = make_strategy("adpsgd", graph="ring", period_s=0.05, timeout_s=30)
    strategy.wrap(model, opt)
    slow = Straggler.parse("3:5", info.rank)
    x, y = _data(info.rank, 16)
    dist.barrier()  # a common start, once (tests only)
    deadline = time.monotonic() + wall_s
    steps = 0
    while time.monotonic() < deadline:
        with slow.step():
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            strategy.step(opt)
        steps += 1
    strategy.close()
    return {"steps": steps, "stats": strategy.stats()}


def test_adpsgd_straggler_no_deadlock(four_workers):
    out = {r: v["straggler"] for r, v in four_workers.items()}
    print(
        {
            r: (res["steps"], res["stats"]["gossip_rounds"], round(res["stats"]["gossip_round_s"], 4))
            for r, res in out.items()
        }
    )
    slow = out[3]["steps"]
    for r in (0, 1, 2):
        assert out[r]["steps"] >= 2 * slow, out
    rounds = [res["stats"]["gossip_rounds"] for res in out.values()]
    assert min(rounds) >= 10, out  # the slow worker's thread kept averaging
    # close() agreed on one last round: every thread ran exactly the rounds before it, each
    # round with its partner (ring, N = 4: nobody idles), a model or only a header
    assert len(set(rounds)) == 1, out
    for res in out.values():
        s = res["stats"]
        assert s["gossip_round"] == s["gossip_rounds"] == s["gossip_model_exchanges"] + s["gossip_header_exchanges"], s
        assert s["gossip_idle_rounds"] == 0 and s["gossip_barriers"] == 1, s


# ----------------------------------------------------------------------------- hybrid


def _hybrid_scenario(info):
    from dasr.parallel import make_strategy
    from dasr.parallel.sync import verify_identical

    torch.manual_seed(0)
    model = TinyLSTM()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    strategy = make_strategy("hybrid", group_size=2, graph="ring", period_s=0.01, timeout_s=30)
    ddp = strategy.wrap(model, opt)
    worst = 0.0
    for step in range(30):
        x, y = _data(1000 * info.rank + step, 8)
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x), y).backward()
        strategy.step(opt)
        worst = max(worst, verify_identical(model, strategy.impl.intra, atol=float("inf")))
        time.sleep(0.01)
    _, spread = _mean_and_spread(strategy.impl.flat.buffers[0], info.world_size)
    strategy.consensus(model)
    stats = strategy.stats()
    strategy.close()
    return {"worst": worst, "spread": spread, "stats": stats}


def _four_worker_suite():
    """One launch of 4 workers for all 4-worker scenarios (process start-up dominates)."""
    import torch.distributed as dist

    info = _setup()
    out = {
        "adpsgd": _adpsgd_scenario(info),
        "straggler": _straggler_scenario(info, 2.5),
        "hybrid": _hybrid_scenario(info),
    }
    dist.destroy_process_group()
    return out


@pytest.fixture(scope="module")
def four_workers():
    return launch(_four_worker_suite, (), nproc=4)


def test_hybrid_members_identical_every_step(four_workers):
    out = {r: v["hybrid"] for r, v in four_workers.items()}
    for _r, res in out.items():
        assert res["worst"] == 0.0, out  # group members identical after every step
        assert res["stats"]["gossip_rounds"] > 0, out
        assert res["stats"]["pending_applies"] > 0, out
        assert res["spread"] > 0, out  # the two groups did differ


def test_make_strategy_rejects_unknown():
    from dasr.parallel import make_strategy

    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        make_strategy("nope")
    assert make_strategy("single").name == "single"
