"""Which coordinator decides an elastic run's membership: the only one, or the elected one of several.

The coordinator that serves its own ``TCPStore`` is the only decider there is
(:class:`SoleDecider`). On an etcd store, every node can run a coordinator replica; each one
campaigns for a key on an etcd lease, and the one that holds it decides (:class:`EtcdLeadership`).
When that replica's host is lost, its lease runs out within ``ttl_s`` and another replica takes
the key and the run's decisions, reading where they stood from the store::

    leadership = EtcdLeadership(store, ttl_s=5.0)
    while True:
        if leadership.held():
            ...                       # decide, then publish the result:
            leadership.publish({"dasr-elastic/view": "8 0:3f2a,1:9c1d"})

A replica that was paused or cut off past its lease and comes back still believes it leads
until its next renewal fails; :meth:`EtcdLeadership.publish` is fenced meanwhile: it writes only
while the key still holds this replica's name, in one transaction.
"""

from __future__ import annotations

import time
import uuid

import torch.distributed as dist

from dasr.parallel.etcd_store import EtcdStore

LEADER_KEY = "dasr-elastic/leader"


class SoleDecider:
    """The one coordinator of a run whose store it serves itself: it always decides."""

    def __init__(self, store: dist.Store):
        self.store = store

    def held(self) -> bool:
        """Always: nobody else decides."""
        return True

    def publish(self, items: dict[str, str]) -> bool:
        """Write ``items``; always done."""
        for key, value in items.items():
            self.store.set(key, value)
        return True


class EtcdLeadership:
    """This replica's claim to decide: the key :data:`LEADER_KEY`, created on an etcd lease of ``ttl_s``.

    Args:
        store: the run's etcd store.
        ttl_s: the lease's length: how long the others wait for a lost leader (renewed every third of it).
        name: this replica's name in the key (default: a fresh random one).
    """

    def __init__(self, store: EtcdStore, ttl_s: float, name: str = ""):
        self.store, self.ttl_s = store, ttl_s
        self.name = name or uuid.uuid4().hex[:8]
        self._lease: int | None = None
        self._renew_at = 0.0
        self._leading = False

    def held(self) -> bool:
        """Renew the lease when due and campaign if not leading; whether this replica decides now.

        A store that does not answer counts as not leading (the others may have elected one).
        """
        try:
            now = time.monotonic()
            if self._lease is None or now >= self._renew_at:
                if self._lease is None or not self.store.keep_lease(self._lease):
                    self._lease, self._leading = self.store.grant_lease(self.ttl_s), False
                self._renew_at = now + self.ttl_s / 3
            if not self._leading:
                # the key may already name this replica: a create whose answer was lost, and was sent again
                self._leading = self.store.create_on_lease(LEADER_KEY, self.name, self._lease) == self.name
        except dist.DistError:  # keep the lease: it may still hold the key, and is renewed (or replaced) when due
            self._leading = False
        return self._leading

    def publish(self, items: dict[str, str]) -> bool:
        """Write ``items`` in one transaction while the key still names this replica; False (and no
        longer leading) if another has taken over."""
        self._leading = self._leading and self.store.set_if(LEADER_KEY, self.name, items)
        return self._leading
