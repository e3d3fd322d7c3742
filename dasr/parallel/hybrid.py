"""``hybrid``: ``sync`` inside groups of ``g`` consecutive ranks, ``adpsgd`` between groups.

The paper's form of its 32-GPU run. Ranks ``a*g .. a*g+g-1`` form group ``a``; inside it,
DDP all-reduces the gradients (process group = the group), so its members take identical
steps. Between groups, gossip as in :mod:`dasr.parallel.adpsgd`, with rank ``r`` of group
``a`` averaging with rank ``r`` of the partner group: the ``g`` members form ``g``
independent gossip planes and member ``r`` gossips only shard ``r`` (1/g) of the flat
parameter vector, so the groups' links are all used and each carries 1/g of the model.

Keeping members identical: a member's thread does not touch the live parameters. It
adds its shard's change ``average - snapshot`` into a pending buffer (and takes its
snapshots as live shard + pending, so an exchange sees the changes not yet applied). In
``step()``, after the optimizer step, the members all-reduce (MAX, one number) whether
anything is pending; if so they all-gather the pending shards and all add the same full
vector at the same step boundary. This needs no agreement between threads and costs one
tiny intra-group all-reduce per step (where DDP already communicates every step), plus an
all-gather of one model's size only in steps after a gossip round. Summing all
replicas is still unchanged by averaging, and identical members stay identical bit for bit.
(The alternative, members gossiping full models in lockstep, would need their threads to
agree on which step's parameters to snapshot and when to apply, i.e. step-gated rounds.)
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dasr.parallel.adpsgd import AdpsgdStrategy
from dasr.parallel.sync import CommTimer, agree_in_group, timed_ddp


class HybridStrategy(AdpsgdStrategy):
    """Sync within groups of ``group_size`` consecutive ranks, ADPSGD between groups.

    Args:
        group_size: learners per group (must divide the world size).
        graph, seed, period_s, timeout_s, sync_init: as for :class:`AdpsgdStrategy`, over groups.
        bucket_cap_mb: DDP bucket size inside a group.
    """

    name = "hybrid"

    def __init__(
        self,
        group_size: int,
        graph: str = "ring",
        seed: int = 0,
        period_s: float = 0.1,
        timeout_s: float = 60.0,
        sync_init: bool = True,
        bucket_cap_mb: float = 25.0,
    ):
        super().__init__(graph=graph, seed=seed, period_s=period_s, timeout_s=timeout_s, sync_init=sync_init)
        if group_size < 1 or self.world % group_size:
            raise ValueError(f"group_size {group_size} must be >= 1 and divide the number of workers {self.world}")
        self.g = group_size
        self.n_groups = self.world // group_size
        self.group_index, self.member = divmod(self.rank, group_size)
        self.bucket_cap_mb = bucket_cap_mb
        self.ddp: DDP  # both set by _wrap_model()
        self.timer: CommTimer
        self.intra = None
        self._has_pending = False
        self._applies = 0
        self._apply_s = 0.0

    def _planes(self) -> list[list[int]]:
        return [[a * self.g + r for a in range(self.n_groups)] for r in range(self.g)]

    def _gossip_slice(self) -> slice:
        n, L = self.flat.numel(), self._shard_len
        return slice(min(n, self.member * L), min(n, (self.member + 1) * L))

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if self.sync_init:
            dist.broadcast(self.flat, src=0)
        for a in range(self.n_groups):  # every rank creates every group, in one order
            grp = dist.new_group(list(range(a * self.g, (a + 1) * self.g)))
            if a == self.group_index:
                self.intra = grp
        n = self.flat.numel()
        if n < self.g:
            raise ValueError(f"model of {n} parameters cannot be split among {self.g} group members")
        self._shard_len = math.ceil(n / self.g)
        sl = self._gossip_slice()
        self.pending = torch.zeros(sl.stop - sl.start, dtype=torch.float32)
        self._gather = torch.zeros(self._shard_len * self.g, dtype=self.flat.dtype, device=self.flat.device)
        self._local = torch.zeros(self._shard_len, dtype=self.flat.dtype, device=self.flat.device)
        self.ddp, self.timer = timed_ddp(model, self.intra, self.bucket_cap_mb)
        return self.ddp

    def _read(self, out: torch.Tensor) -> None:
        with self.lock:
            out.copy_(self.flat[self._gossip_slice()])
            out.add_(self.pending)

    def _merge(self, delta: torch.Tensor) -> None:
        with self.lock:
            self.pending.add_(delta)
            self._has_pending = True

    def _apply_pending(self) -> None:
        """Members add everybody's pending shard at this same step (collective in the group)."""
        flag = torch.tensor([1.0 if self._has_pending else 0.0], device=self.flat.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.intra)
        if flag.item() == 0:
            return
        L, n = self._shard_len, self.flat.numel()
        with self.lock, torch.no_grad():
            self._local.zero_()
            self._local[: self.pending.numel()].copy_(self.pending)
            self.pending.zero_()
            self._has_pending = False
            dist.all_gather([self._gather[i * L : (i + 1) * L] for i in range(self.g)], self._local, group=self.intra)
            self.flat.add_(self._gather[:n])
        self._applies += 1

    def agree(self, flag: bool) -> bool:
        """Members of a group decide together; groups on their own."""
        return agree_in_group(flag, self.ddp.module, self.intra)

    def accumulate(self):
        """Context in which backward passes accumulate gradients locally (no all-reduce)."""
        return self.ddp.no_sync()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        super().step(optimizer)
        if self.gossip is not None:
            t = time.perf_counter()
            self._apply_pending()
            self._apply_s += time.perf_counter() - t

    def _drain(self) -> None:
        super()._drain()
        if self.gossip is not None:
            self._apply_pending()

    def _after_stop(self) -> None:
        if self.gossip is not None:
            self._apply_pending()

    def stats(self) -> dict:
        """adpsgd's between groups, plus the group's all-reduce (its exposed part on the critical path)."""
        out = super().stats()
        out["pending_applies"] = self._applies
        out["comm_s"] += self.timer.comm_s + self._apply_s
        out["exposed_comm_s"] += self.timer.exposed_s + self._apply_s
        return out
