"""Exact numbers from the public gossip API on 4 real worker processes (gloo over 127.0.0.1).

Each check would catch a wrong implementation: a pair that does not hold exactly
(x_i + x_j)/2 after one round, a lost or half-applied merge (the replicas' mean drifts from
the initial mean plus the mean of the local updates), a hybrid that loses the sum, a model
exchange after a pause request (issue 13, 3e: only the header may travel), a consensus
speed that differs from the schedule's exact prediction (dasr bench consensus), and a
subgroup run that touches ranks outside its group. One launch runs all scenarios; a
faulthandler watchdog turns a deadlock into a worker failure.
"""

import time

import numpy as np
import pytest
import torch
from scenarios import run_scenarios
from torch import nn

from dasr.parallel.launch import launch

WORLD = 4


class Mixed(nn.Module):
    """float64 and float32 parameters, a frozen layer and batch-norm buffers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2).double()
        self.b = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.bn = nn.BatchNorm1d(2)


def _wait_for(cond, what, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


def _gather(t):
    import torch.distributed as dist

    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.stack(out)


def _pair_round(rank):
    """Parameters set to the rank; one gossip round; then a pause (header only) and average()."""
    from dasr.parallel import ADPSGD, topology

    model = Mixed()
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.fill_(rank)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    gossip = ADPSGD(model, opt, graph="ring", period_s=30, timeout_s=30, sync_init=False)
    opt.step()  # no gradients: a no-op step that starts the gossip thread
    _wait_for(lambda: gossip.gossip.stats["model_exchanges"] >= 1, "first exchange")
    gossip._drain()  # pause at an agreed round: the rounds until then carry only the header
    partner = topology.matching("ring", WORLD, 0, 0)[rank]
    res = {
        "partner": partner,
        "after_round": {n: p.detach().unique().tolist() for n, p in model.named_parameters()},
        "dtypes": sorted(str(b.dtype) for b in gossip.flat.buffers),
        "bn_after_round": model.bn.running_mean.unique().tolist(),
        "stats": dict(gossip.gossip.stats),
        "bytes_per_exchange": 8 * (3 * 2 + 2) + 4 * (2 * 2 + 2 + 2 + 2),  # a (f64), b and bn weight/bias (f32)
    }
    gossip.average()
    res["after_average"] = {n: p.detach().unique().tolist() for n, p in model.named_parameters()}
    res["bn_after_average"] = (model.bn.running_mean.unique().tolist(), int(model.bn.num_batches_tracked))
    gossip.close()
    return res


def _mean_invariant(rank):
    """float64 training with merges running: mean of replicas == initial mean + mean of local updates."""
    from dasr.parallel import ADPSGD

    torch.manual_seed(10 + rank)  # different replicas
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gossip = ADPSGD(model, opt, graph="exponential", period_s=0.003, timeout_s=30, sync_init=False)
    flat = gossip.flat.buffers[0]
    mean0 = _gather(flat.clone()).mean(0)
    local = torch.zeros_like(flat)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    g = torch.Generator().manual_seed(rank)

    def loss_fn():
        x = torch.randn(8, 6, generator=g, dtype=torch.float64)
        return (model(x) - x[:, :2]).pow(2).mean()

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    for step in range(60):
        if step % 3 == 0:  # through a closure
            opt.step(closure)
        elif step % 3 == 1:  # through GradScaler
            opt.zero_grad()
            scaler.scale(loss_fn()).backward()
            scaler.step(opt)
            scaler.update()
        else:
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
        local -= 0.05 * torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # this step's update
        time.sleep(0.002)
    gossip._drain()
    mean1 = _gather(flat.clone()).mean(0)
    expected = mean0 + _gather(local).mean(0)
    res = {
        "err": (mean1 - expected).abs().max().item(),
        "moved": (mean1 - mean0).abs().max().item(),
        "exchanges": gossip.gossip.stats["model_exchanges"],
        "steps": gossip.stats()["steps"],
    }
    gossip.close()
    return res


def _hybrid_round(rank):
    """Two groups of two, parameters 1 and 11: one exchange moves both to 6 exactly."""
    from dasr.parallel import Hybrid

    group = rank // 2
    model = nn.Linear(4, 4).double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1 + 10 * group)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hybrid = Hybrid(model, opt, group_size=2, graph="ring", period_s=30, timeout_s=30, sync_init=False)
    opt.step()
    _wait_for(lambda: hybrid.gossip.stats["model_exchanges"] >= 1, "first exchange")
    hybrid._drain()  # parks the thread, then members add the pending shards together
    flat = hybrid.flat.buffers[0]
    res = {"values": flat.unique().tolist(), "sum": _gather(flat.clone()).sum(0).unique().tolist()}
    hybrid.close()
    return res


def _consensus_point(rank):
    """random-matching, N = 4, exactly 3 model rounds: replicas == W2 W1 W0 x0 (the bench's matrices)."""
    import torch.distributed as dist

    from dasr.parallel import ADPSGD

    rounds = 3
    model = nn.Linear(5, 1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(rank), dtype=torch.float64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gossip = ADPSGD(model, opt, graph="random-matching", period_s=3.0, timeout_s=30, sync_init=False)
    flat = gossip.flat.buffers[0]
    x0 = _gather(flat.clone())
    opt.step()
    _wait_for(lambda: gossip.gossip.round >= rounds, "three rounds")
    dist.barrier()  # (test only) all ranks are inside round 3's 3 s pause
    gossip._drain()
    res = {"x0": x0.numpy(), "x": _gather(flat.clone()).numpy(), "exchanges": gossip.gossip.stats["model_exchanges"]}
    gossip.close()
    return res


def _subgroup(rank):
    """ADPSGD on ranks 0-2 only (random-matching, 3 ranks: one idles each round); rank 3 never joins.

    Parameters are set to the rank; exactly one round runs, then a pause (header only).
    """
    import torch.distributed as dist

    from dasr.parallel import ADPSGD

    group = dist.new_group([0, 1, 2])  # every rank creates it (torch's rule), only 0-2 use it
    model = nn.Linear(3, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(rank)
    values = lambda: torch.cat([p.detach().reshape(-1) for p in model.parameters()]).unique().tolist()  # noqa: E731
    if rank == 3:
        return {"after_round": values()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gossip = ADPSGD(model, opt, graph="random-matching", period_s=30, process_group=group, sync_init=False)
    opt.step()
    _wait_for(lambda: gossip.gossip.round >= 1, "first round")
    gossip._drain()
    res = {"after_round": values(), "exchanges": gossip.gossip.stats["model_exchanges"]}
    gossip.average()
    res["after_average"] = values()
    gossip.close()
    return res


def _suite():
    scenarios = [
        ("pair", _pair_round),
        ("mean", _mean_invariant),
        ("hybrid", _hybrid_round),
        ("consensus", _consensus_point),
        ("subgroup", _subgroup),
    ]
    return run_scenarios(scenarios, watchdog_s=150, timeout_s=60)


@pytest.fixture(scope="module")
def suite():
    return launch(_suite, (), nproc=WORLD)


def test_one_round_leaves_each_pair_exactly_at_its_mean(suite):
    for rank, out in suite.items():
        res = out["pair"]
        mean = (rank + res["partner"]) / 2
        trainable = {n: v for n, v in res["after_round"].items() if not n.startswith("frozen")}
        assert trainable and all(v == [mean] for v in trainable.values()), (rank, res)
        assert res["dtypes"] == ["torch.float32", "torch.float64"], res  # one buffer per dtype
        assert res["after_round"]["frozen.weight"] == [rank], res  # frozen: never gossiped
        assert res["bn_after_round"] == [rank], res  # buffers: not gossiped ...
        assert res["bn_after_average"] == ([1.5], rank), res  # ... float ones averaged by average()
        assert all(v == [1.5] for n, v in res["after_average"].items() if not n.startswith("frozen")), res


def test_after_a_pause_request_only_the_header_travels(suite):
    for _rank, out in suite.items():
        s = out["pair"]["stats"]
        assert s["model_exchanges"] == 1, s  # the pause rounds sent no model ...
        assert s["header_exchanges"] >= 1, s  # ... only headers
        assert s["model_bytes"] == out["pair"]["bytes_per_exchange"], s


def test_float64_training_keeps_mean_equal_to_initial_mean_plus_local_updates(suite):
    for _rank, out in suite.items():
        res = out["mean"]
        assert res["steps"] == 60, res  # closure, GradScaler and plain steps all went through the hooks
        assert res["exchanges"] >= 5, res  # merges ran during training
        assert res["moved"] > 1e-3, res  # training moved the mean, so the check has teeth
        assert res["err"] < 1e-12, res


def test_hybrid_moves_the_groups_to_each_other_and_keeps_the_sum(suite):
    for _rank, out in suite.items():
        assert out["hybrid"]["values"] == [6.0], out["hybrid"]  # (1 + 11) / 2 on every member
        assert out["hybrid"]["sum"] == [24.0], out["hybrid"]  # 1 + 1 + 11 + 11


def test_real_gossip_rounds_match_the_consensus_prediction(suite):
    from lab.bench.consensus import round_matrix

    res = suite[0]["consensus"]
    assert all(out["consensus"]["exchanges"] == 3 for out in suite.values()), suite
    phi = np.eye(WORLD)
    for k in range(3):
        phi = round_matrix("random-matching", WORLD, 0, k) @ phi
    np.testing.assert_allclose(res["x"], phi @ res["x0"], rtol=0, atol=1e-12)
    spread = lambda x: np.linalg.norm(x - x.mean(0))  # noqa: E731
    bound = np.linalg.norm(phi - np.full((WORLD, WORLD), 1 / WORLD), 2)
    assert spread(res["x"]) <= bound * spread(res["x0"]) + 1e-12
    assert bound < 0.5  # three rounds at least halve any spread at N = 4


def test_a_subgroup_gossips_without_the_ranks_outside_it(suite):
    from dasr.parallel import topology

    partner = topology.matching("random-matching", 3, 0, 0)  # round 0 of the group's 3 ranks
    idle = [r for r in range(3) if partner[r] == r]
    assert len(idle) == 1
    for rank in range(3):
        res = suite[rank]["subgroup"]
        assert res["after_round"] == [(rank + partner[rank]) / 2], (rank, partner, res)  # idle: its own value
        assert res["exchanges"] == (0 if rank in idle else 1), res
        assert res["after_average"] == [1.0], res  # mean of 0, 1, 2
    assert suite[3]["subgroup"]["after_round"] == [3.0]
