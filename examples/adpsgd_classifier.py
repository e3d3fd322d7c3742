"""ADPSGD on a model that is not a speech model: an MLP (with batch norm) classifying synthetic blobs.

Each worker trains on its own shard with its own optimizer and LR schedule; the gossip
thread averages the replicas with one partner at a time; ``average()`` makes them equal at
the end. Run it with torchrun, or let it start its own workers::

    torchrun --standalone --nproc-per-node 2 examples/adpsgd_classifier.py
    python examples/adpsgd_classifier.py --nproc 2

Every rank prints the test accuracy of the averaged model (the same on all ranks).

Elastic (workers may die, hang or be replaced; the others go on): the coordinator and the
workers are started by dasr's elastic launcher, the workers claim the batches of each epoch::

    python examples/adpsgd_classifier.py --nproc 4 --elastic --epochs 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dasr.parallel import ADPSGD
from dasr.parallel.elastic import SLOT_ENV, STORE_ENV, ElasticADPSGD
from dasr.parallel.elastic_launch import launch_elastic

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
    model = make_model()
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


BATCH, BATCHES = 64, 64  # an epoch of the elastic run: 64 batches of 64 points


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, CLASSES))


def train_elastic(epochs: int, period_s: float, step_s: float, result_dir: str) -> None:
    """One elastic worker: join (or rejoin) the run, train on claimed batches, average over the live set."""
    torch.set_num_threads(1)
    slot = int(os.environ[SLOT_ENV])
    torch.manual_seed(100 + slot)  # replicas start apart: the first view's lowest slot hands its model out
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gossip = ElasticADPSGD(model, optimizer, graph="exponential", period_s=period_s, pair_timeout_s=3.0)
    claims = gossip.claims()
    out = Path(result_dir) if result_dir else None
    if out is not None:
        (out / f"started-{slot}-{os.getpid()}").write_text(str(gossip.join_s))
    x, y = blobs(BATCH * BATCHES, seed=1)  # one data set; every batch of an epoch is trained once
    steps = 0
    for epoch in range(epochs):
        if claims.exhausted(epoch, 0, BATCHES):  # a replacement starts at the epoch the others are in
            continue
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        while (i := claims.claim(epoch, 0, BATCHES)) < BATCHES:
            batch = order[i * BATCH : (i + 1) * BATCH]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            time.sleep(step_s)  # stands for a larger model's compute
    gossip.average()  # over the workers alive now
    model.eval()
    x_test, y_test = blobs(2048, seed=999)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    stats = gossip.stats()
    print(f"slot {slot}: test accuracy {accuracy:.4f} after {steps} steps, {stats['gossip_rounds']} rounds", flush=True)
    if out is not None:
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        result = {"slot": slot, "pid": os.getpid(), "accuracy": accuracy, "steps": steps, "stats": stats}
        result["params"] = params.tolist()
        (out / f"result-{slot}-{os.getpid()}.json").write_text(json.dumps(result))
    gossip.close()


def _spawned(local_rank: int, world: int, port: int, steps: int, period_s: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank), WORLD_SIZE=str(world))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on loopback (Linux)
    train(steps, period_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--period-s", type=float, default=0.02, help="seconds between gossip rounds")
    parser.add_argument("--nproc", type=int, default=2, help="workers to start when not run by torchrun")
    parser.add_argument("--elastic", action="store_true", help="elastic adpsgd: workers may die and be replaced")
    parser.add_argument("--epochs", type=int, default=8, help="elastic: epochs of claimed batches")
    parser.add_argument("--step-s", type=float, default=0.0, help="elastic: extra seconds per step")
    parser.add_argument("--result-dir", default="", help="elastic: write each worker's result here")
    parser.add_argument("--max-restarts", type=int, default=0, help="elastic: replace dead workers this often")
    args = parser.parse_args()
    if STORE_ENV in os.environ:  # an elastic worker
        train_elastic(args.epochs, args.period_s, args.step_s, args.result_dir)
        return
    if args.elastic:
        codes = launch_elastic([sys.executable, *sys.argv], args.nproc, args.max_restarts)
        sys.exit(max(codes.values()) != 0)
    if "RANK" in os.environ:  # started by torchrun
        train(args.steps, args.period_s)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_spawned, (args.nproc, port, args.steps, args.period_s), nprocs=args.nproc)


if __name__ == "__main__":
    main()
