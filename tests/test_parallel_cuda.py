"""The strategies with models on CUDA (skipped without a GPU)."""

import pytest
import torch
from torch import nn

from dasr.parallel.launch import launch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class BLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0]).mean(1)


def _cuda_worker(name, options):
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel import make_strategy
    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(120, exit=True)
    info = init_worker(timeout_s=60)
    torch.manual_seed(0)
    model = BLSTM().to(info.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    strategy = make_strategy(name, **options)
    wrapped = strategy.wrap(model, opt)
    g = torch.Generator().manual_seed(info.rank)
    losses = []
    for _step in range(30):
        x = torch.randn(8, 10, 8, generator=g).to(info.device)
        y = x.mean(1)[:, :4]
        opt.zero_grad()
        loss = nn.functional.mse_loss(wrapped(x), y)
        loss.backward()
        strategy.step(opt)
        losses.append(loss.item())
    strategy.consensus(model)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    hi, lo = flat.clone(), -flat
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MAX)
    stats = strategy.stats()
    strategy.close()
    backend = str(dist.get_backend())
    dist.destroy_process_group()
    return {
        "device": str(next(model.parameters()).device),
        "spread": (hi + lo).abs().max().item(),
        "loss0": losses[0],
        "loss1": sum(losses[-5:]) / 5,
        "backend": backend,
        "stats": stats,
    }


@pytest.mark.parametrize(
    "name,options,nproc",
    [
        ("sync", {"verify": True}, 1),
        ("sync", {"verify": True}, 2),
        ("adpsgd", {"period_s": 0.02}, 2),
        ("hybrid", {"group_size": 1, "period_s": 0.02}, 2),
        ("hybrid", {"group_size": 2}, 2),
        ("localsgd", {"period": 4}, 2),
    ],
)
def test_strategies_on_cuda(name, options, nproc):
    out = launch(_cuda_worker, (name, options), nproc=nproc)
    print(name, options, out)
    for _r, res in out.items():
        assert res["device"].startswith("cuda"), res
        assert res["spread"] < 1e-6, out
        assert res["loss1"] < res["loss0"], out


def _cuda_mean_worker():
    """float64 on CUDA, free-running gossip: the side-stream merges lose no update and half-apply none."""
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel import ADPSGD
    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(120, exit=True)
    info = init_worker(timeout_s=60)
    torch.manual_seed(info.rank)
    model = nn.Sequential(nn.Linear(8, 256), nn.Tanh(), nn.Linear(256, 4)).double().to(info.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gossip = ADPSGD(model, opt, graph="exponential", period_s=0.0, timeout_s=60, sync_init=False)
    flat = gossip.flat.buffers[0]

    def mean(t):
        t = t.detach().cpu().clone()
        dist.all_reduce(t)
        return t / dist.get_world_size()

    mean0 = mean(flat)
    local = torch.zeros(flat.numel(), dtype=torch.float64)
    g = torch.Generator().manual_seed(info.rank)
    for _step in range(200):
        x = torch.randn(64, 8, generator=g, dtype=torch.float64).to(info.device)
        opt.zero_grad()
        (model(x) - x[:, :4]).pow(2).mean().backward()
        opt.step()
        local -= 0.05 * torch.cat([p.grad.reshape(-1) for p in model.parameters()]).cpu()
    gossip._drain()
    res = {
        "err": (mean(flat) - (mean0 + mean(local))).abs().max().item(),
        "exchanges": gossip.gossip.stats["model_exchanges"],
        "side_stream": gossip.copies is not None,
    }
    gossip.close()
    dist.destroy_process_group()
    return res


def test_side_stream_merges_keep_the_mean_exact():
    out = launch(_cuda_mean_worker, (), nproc=2)
    print(out)
    for _r, res in out.items():
        assert res["side_stream"], res
        assert res["exchanges"] > 10, res
        assert res["err"] < 1e-10, res
