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
    ],
)
def test_strategies_on_cuda(name, options, nproc):
    out = launch(_cuda_worker, (name, options), nproc=nproc)
    print(name, options, out)
    for _r, res in out.items():
        assert res["device"].startswith("cuda"), res
        assert res["spread"] < 1e-6, out
        assert res["loss1"] < res["loss0"], out
