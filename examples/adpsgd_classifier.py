"""ADPSGD on a model that is not a speech model: an MLP (with batch norm) classifying synthetic blobs.

Each worker trains on its own shard with its own optimizer and LR schedule; the gossip
thread averages the replicas with one partner at a time; ``average()`` makes them equal at
the end. Run it with torchrun, or let it start its own workers::

    torchrun --standalone --nproc-per-node 2 examples/adpsgd_classifier.py
    python examples/adpsgd_classifier.py --nproc 2

Every rank prints the test accuracy of the averaged model (the same on all ranks).
"""

from __future__ import annotations

import argparse
import os
import socket

import torch
import torch.distributed as dist
from torch import nn

from dasr.parallel import ADPSGD

CLASSES, FEATURES = 4, 16


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points around 4 fixed centres (the same centres for every seed), with their labels."""
    centres = 0.6 * torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return centres[y] + torch.randn(n, FEATURES, generator=g), y


def train(steps: int, period_s: float) -> None:
    """One worker: join the job, train with ADPSGD, average, report."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)  # replicas may start apart: ADPSGD broadcasts rank 0's model
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    gossip = ADPSGD(model, optimizer, graph="exponential", period_s=period_s)
    x, y = blobs(4096, seed=1 + rank)  # this worker's shard
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the plain step: ADPSGD's hooks take the lock and keep the gossip going
        schedule.step()
    gossip.average()  # collective: every replica (and its batch-norm statistics) = the average

    model.eval()
    x_test, y_test = blobs(2048, seed=999)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    rounds = gossip.stats().get("gossip_rounds", 0)
    print(f"rank {rank}: test accuracy {accuracy:.4f} after {steps} steps and {rounds} gossip rounds", flush=True)
    gossip.close()
    dist.destroy_process_group()


def _spawned(local_rank: int, world: int, port: int, steps: int, period_s: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank), WORLD_SIZE=str(world))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on loopback (Linux)
    train(steps, period_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--period-s", type=float, default=0.02, help="seconds between gossip rounds")
    parser.add_argument("--nproc", type=int, default=2, help="workers to start when not run by torchrun")
    args = parser.parse_args()
    if "RANK" in os.environ:  # started by torchrun
        train(args.steps, args.period_s)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_spawned, (args.nproc, port, args.steps, args.period_s), nprocs=args.nproc)


if __name__ == "__main__":
    main()
