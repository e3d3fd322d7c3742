"""``localsgd`` (PyTorch's PeriodicModelAverager) on 2 real worker processes (gloo over 127.0.0.1)."""

import torch
from torch import nn

from dasr.parallel.launch import launch


def _data(seed, n):
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, x @ torch.arange(10, dtype=torch.float64).reshape(5, 2) / 10


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _spread(model):
    import torch.distributed as dist

    hi, lo = _flat(model).clone(), -_flat(model)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MAX)
    return (hi + lo).abs().max().item()


def _worker():
    import copy
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel import make_strategy
    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(60, exit=True)
    info = init_worker(timeout_s=30)
    torch.manual_seed(info.rank)  # different inits: wrap() must make them equal
    out = {}
    # period 1 with plain SGD == one process on the double batch (averaging parameters == averaging gradients)
    model = nn.Linear(5, 2).double()
    strategy = make_strategy("localsgd", period=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    strategy.wrap(model, opt)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(6):
        x, y = _data(step, 8)
        ref_opt.zero_grad()
        nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.step()
        mine = slice(4 * info.rank, 4 * info.rank + 4)
        opt.zero_grad()
        nn.functional.mse_loss(model(x[mine]), y[mine]).backward()
        strategy.step(opt)
    out["vs_double_batch"] = (_flat(model) - _flat(ref)).abs().max().item()
    strategy.close()
    # period 3: replicas drift apart between averagings and meet at them
    model = nn.Linear(5, 2).double()
    strategy = make_strategy("localsgd", period=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    strategy.wrap(model, opt)
    spreads = []
    for step in range(7):
        x, y = _data(100 * info.rank + step, 4)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        strategy.step(opt)
        spreads.append(_spread(model))
    out["spreads"] = spreads
    out["state"] = strategy.state_dict()
    out["agree"] = strategy.agree(info.rank == 1)
    strategy.consensus(model)
    out["after_consensus"] = _spread(model)
    out["stats"] = strategy.stats()
    strategy.close()
    dist.destroy_process_group()
    return out


def test_localsgd_period_1_equals_double_batch_and_period_3_meets_every_third_step():
    out = launch(_worker, (), nproc=2)
    for _rank, res in out.items():
        assert res["vs_double_batch"] < 1e-12, res
        # averaged after steps 1, 4, 7 (PyTorch counts from the first step), apart in between
        assert [s == 0.0 for s in res["spreads"]] == [True, False, False, True, False, False, True], res
        assert min(res["spreads"][1], res["spreads"][2]) > 1e-4, res
        assert res["state"]["averager_step"] == 7, res
        assert res["agree"] is True, res  # OR over the group: both act when one wants to
        assert res["after_consensus"] == 0.0, res
        assert res["stats"]["steps"] == 7 and res["stats"]["comm_s"] > 0, res
