"""``hybrid``: ``sync`` inside groups of ``g`` consecutive ranks, ``adpsgd`` between groups.

The paper's form of its 32-GPU run::

    from dasr.parallel import Hybrid
    hybrid = Hybrid(model, optimizer, group_size=2, graph="exponential", period_s=0.05)
    for batch in loader:
        loss_fn(hybrid.module, batch).backward(); optimizer.step(); optimizer.zero_grad()
    hybrid.average(); hybrid.close()

Members ``a*g .. a*g+g-1`` of the process group form group ``a``; inside it, DDP
all-reduces the gradients (:attr:`Hybrid.module` is the DDP model to call forward on), so
its members take identical steps. Between groups, gossip as in :mod:`dasr.parallel.adpsgd`,
with member ``r`` of one group averaging with member ``r`` of the partner group: the ``g``
members form ``g`` independent gossip planes and member ``r`` gossips only shard ``r`` (1/g)
of each flat parameter buffer, so the groups' links are all used and each carries 1/g.

Keeping members identical: a member's thread does not touch the live parameters. It adds
its shard's change ``average - snapshot`` into a pending buffer (and takes its snapshots as
live shard + pending, so an exchange sees the changes not yet applied). After every
``optimizer.step()`` (a step post hook) the members all-reduce (MAX, one number) whether
anything is pending; if so they all-gather the pending shards and all add the same full
vector at the same step boundary. Summing all replicas is unchanged by averaging, and
identical members stay identical bit for bit. Buffers follow ADPSGD's policy (DDP also
broadcasts them inside a group at every forward).
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dasr.parallel.adpsgd import ADPSGD, AdpsgdStrategy, comm_dtype, group_members
from dasr.parallel.sync import agree_in_group, timed_ddp


class Hybrid(ADPSGD):
    """Sync within groups of ``group_size`` consecutive members, ADPSGD between groups.

    Args:
        model, optimizer: as for :class:`ADPSGD`; call forward on :attr:`module` (DDP).
        group_size: learners per group (must divide the process group's size).
        bucket_cap_mb: DDP bucket size inside a group.
        graph, period_s, process_group, seed, timeout_s, sync_init: as for :class:`ADPSGD`, over groups.
    """

    name = "hybrid"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        group_size: int,
        bucket_cap_mb: float = 25.0,
        **options: Any,
    ):
        world = len(group_members(options.get("process_group")))
        if group_size < 1 or world % group_size:
            raise ValueError(f"group_size {group_size} must be >= 1 and divide the number of workers {world}")
        self.g, self.bucket_cap_mb = group_size, bucket_cap_mb
        self._has_pending = False
        self._applies = 0
        self._apply_s = 0.0
        super().__init__(model, optimizer, **options)

    @property
    def module(self) -> nn.Module:
        """The DDP-wrapped model to run forward (and backward) through."""
        return self.ddp

    def _setup(self) -> None:
        self.group_index, self.member = divmod(self.members.index(self.rank), self.g)
        mine = self.members[self.group_index * self.g : (self.group_index + 1) * self.g]
        # only the group's own members take part in creating it (groups are disjoint)
        self.intra = dist.new_group(mine, use_local_synchronization=True)
        self._slices, self.pending, self._gather, self._local = [], [], [], []
        for b in self.flat.buffers:
            n = b.numel()
            shard = math.ceil(n / self.g)
            sl = slice(min(n, self.member * shard), min(n, (self.member + 1) * shard))
            self._slices.append(sl)
            self.pending.append(torch.zeros(sl.stop - sl.start, dtype=comm_dtype(b.dtype)))
            self._gather.append(torch.zeros(shard * self.g, dtype=b.dtype, device=b.device))
            self._local.append(torch.zeros(shard, dtype=b.dtype, device=b.device))
        self.ddp, self.timer = timed_ddp(self.model, self.intra, self.bucket_cap_mb)

    def _planes(self) -> list[list[int]]:
        n_groups = self.world // self.g
        return [[self.members[a * self.g + r] for a in range(n_groups)] for r in range(self.g)]

    def _read_fix(self) -> list[torch.Tensor] | None:
        return [p.clone() for p in self.pending]

    def _merge(self, deltas: list[torch.Tensor]) -> None:
        with self.lock:
            for p, d in zip(self.pending, deltas, strict=True):
                p.add_(d)
            self._has_pending = True

    def _apply_pending(self) -> None:
        """Members add everybody's pending shards at this same step (collective in the group)."""
        t = time.perf_counter()
        flag = torch.tensor([1.0 if self._has_pending else 0.0], device=self.flat.buffers[0].device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.intra)
        if flag.item() == 0:
            return
        with self.lock, torch.no_grad():
            if self.copies is not None:
                self.copies.before_step()
            for b, pending, gather, local in zip(
                self.flat.buffers, self.pending, self._gather, self._local, strict=True
            ):
                shard = local.numel()
                local.zero_()
                local[: pending.numel()].copy_(pending)
                pending.zero_()
                dist.all_gather([gather[i * shard : (i + 1) * shard] for i in range(self.g)], local, group=self.intra)
                b.add_(gather[: b.numel()])
            self._has_pending = False
            if self.copies is not None:
                self.copies.after_step()
        self._applies += 1
        self._apply_s += time.perf_counter() - t

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        super()._post_step(optimizer, args, kwargs)
        if self.gossip is not None:
            self._apply_pending()

    def agree(self, flag: bool) -> bool:
        """``flag`` OR-ed over this rank's group: members decide together, groups on their own."""
        return agree_in_group(flag, self.model, self.intra)

    def no_sync(self) -> AbstractContextManager:
        """Context in which backward passes accumulate gradients locally (no all-reduce)."""
        return self.ddp.no_sync()

    def _drain(self) -> None:
        super()._drain()
        if self.gossip is not None:
            self._apply_pending()

    def _after_stop(self) -> None:
        if self.gossip is not None:
            self._apply_pending()

    def stats(self) -> dict:
        """ADPSGD's between groups, plus the group's all-reduce (its exposed part on the critical path)."""
        out = super().stats()
        out["pending_applies"] = self._applies
        out["comm_s"] += self.timer.comm_s + self._apply_s
        out["exposed_comm_s"] += self.timer.exposed_s + self._apply_s
        return out


class HybridStrategy(AdpsgdStrategy):
    """The trainer's Strategy interface over :class:`Hybrid`."""

    name = "hybrid"
    CONFIG_OPTIONS = {**AdpsgdStrategy.CONFIG_OPTIONS, "group_size": "group_size"}
    independent_steps = False  # members of a group step together (DDP inside the group)
    impl_class = Hybrid

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        super().wrap(model, optimizer)
        return self._hybrid().module

    def agree(self, flag: bool) -> bool:
        return self._hybrid().agree(flag)

    def accumulate(self) -> AbstractContextManager:
        """Context in which backward passes accumulate gradients locally (no all-reduce)."""
        return self._hybrid().no_sync()

    def _hybrid(self) -> Hybrid:
        impl = self._impl()
        assert isinstance(impl, Hybrid)
        return impl
