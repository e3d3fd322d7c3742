"""A ``torch.distributed.Store`` kept in an etcd cluster, so an elastic run's store outlives any one host.

An elastic run's membership, batch claims and pair rendezvous live on one store. Served by a
coordinator process (a ``TCPStore``), that store dies with its host. Kept in etcd instead, it
lives as long as a majority of the etcd members do::

    store = EtcdStore.from_address("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/run-7")
    store.add("dasr-elastic/claims/0/0", 1)

The address names every member (a client starts at a random one; a request that a member does
not answer in ``request_timeout_s`` goes to the next) and a namespace (the path, default ``dasr``): one run per namespace.

Why not torch's own ``torch.distributed.elastic.rendezvous.etcd_store.EtcdStore``: it speaks
etcd's v2 API through python-etcd (unmaintained since 2017; etcd 3.4 serves v2 only when asked,
3.6 not at all) and has no ``compare_set``, queues, ``multi_get`` or ``list_keys``, which the
elastic run uses. This one speaks the v3 API through its JSON gateway (``etcd3gw``) and builds
each operation on one etcd transaction: ``add`` and ``compare_set`` compare the key's revision
and retry, so concurrent writers never lose an update.

Queues (``queue_push``/``queue_pop``) are keys ``<ns>/q/<key>/<index>``; a pop deletes the lowest
index in a transaction that fails if another popper took it first. Plain keys are ``<ns>/k/<key>``.

Keep a Python reference to an ``EtcdStore`` for as long as a ``PrefixStore`` or a process group
made on it lives: C++ holds only its trampoline, which finds these methods through the Python
object. Once that is collected, gloo's calls fail with "Not implemented" (a
``PrefixStore(prefix, EtcdStore(...))`` made in one expression loses it at once).

One thing a TCPStore does not have: a request whose answer is lost (its member died after
applying it) is sent again to the next member, so an ``add`` can be applied twice across a
failover. The elastic run's counters tolerate that: a claim counter skips one batch index.
"""

from __future__ import annotations

import base64
import random
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from dasr.extras import require

SCHEME = "etcd://"
_POLL_S = (0.005, 0.1)
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: a longer multi_get or multi_set goes in several transactions  # how often a blocking get/wait/pop looks again: from the first to the slowest


def is_etcd_address(address: str) -> bool:
    """Whether ``address`` names an etcd cluster (``etcd://host:port,...[/namespace]``)."""
    return address.startswith(SCHEME)


def parse_address(address: str) -> tuple[list[tuple[str, int]], str]:
    """``etcd://h1:2379,h2:2379/ns`` -> ``([("h1", 2379), ("h2", 2379)], "ns")``; the namespace defaults to ``dasr``."""
    if not is_etcd_address(address):
        raise ValueError(f"an etcd address starts with {SCHEME!r}, got {address!r}")
    members, _, namespace = address.removeprefix(SCHEME).partition("/")
    endpoints = []
    for member in members.split(","):
        host, _, port = member.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"an etcd member is host:port, got {member!r} in {address!r}")
        endpoints.append((host, int(port)))
    return endpoints, namespace.strip("/") or "dasr"


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _adding(amount: int):
    """The change that adds ``amount`` to a decimal counter (a missing one counts as 0)."""
    return lambda current: str(int(current or b"0") + amount).encode()


def _prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's range_end for a prefix)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class EtcdStore(dist.Store):
    """The store's operations over an etcd cluster's v3 API (see the module's docstring).

    Args:
        endpoints: the cluster's members as ``(host, port)`` of their client URLs.
        namespace: every key lives under ``<namespace>/``.
        timeout_s: how long a blocking ``get``/``wait`` waits, and how long a request goes on
            trying members before it raises ``DistNetworkError``.
        request_timeout_s: one HTTP request's limit before the next member is tried.
    """

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        namespace: str = "dasr",
        timeout_s: float = 60.0,
        request_timeout_s: float = 1.0,
    ):
        super().__init__()  # the pybind trampoline needs it: C++ (gloo's rendezvous) calls the methods below
        client = require("etcd3gw.client", "etcd", "an elastic run's store on etcd")

        if not endpoints:
            raise ValueError("an etcd store needs at least one member")
        self.endpoints = endpoints
        self.namespace = namespace
        self._clients = [client.Etcd3Client(h, p, timeout=request_timeout_s, api_path="/v3/") for h, p in endpoints]
        self._current = random.randrange(len(endpoints))  # clients spread over the members, as etcd's own do
        self.timeout_s = timeout_s
        self.set_timeout(timedelta(seconds=timeout_s))

    @classmethod
    def from_address(cls, address: str, timeout_s: float = 60.0) -> EtcdStore:
        """A client of the cluster ``address`` names (``etcd://h1:p1,h2:p2/namespace``)."""
        endpoints, namespace = parse_address(address)
        return cls(endpoints, namespace, timeout_s=timeout_s)

    # -- requests --------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` of a member that answers, trying each in turn until the timeout."""
        import requests
        from etcd3gw import exceptions

        deadline = time.monotonic() + self.timeout_s
        while True:
            client = self._clients[self._current]
            try:
                return client.post(client.get_url(path), json=body)
            except (
                exceptions.ConnectionFailedError,
                exceptions.ConnectionTimeoutError,
                exceptions.InternalServerError,
                requests.RequestException,  # e.g. an answer cut off mid-way
            ) as e:
                # a dead or cut-off member, or one that lost its quorum or leader: the next one may answer
                self._current = (self._current + 1) % len(self._clients)
                if time.monotonic() > deadline:
                    raise dist.DistNetworkError(f"no etcd member of {self.endpoints} answered: {e}") from e
                time.sleep(0.05)
            except (exceptions.Etcd3Exception, ValueError) as e:  # refused (e.g. too many operations), or not JSON
                raise dist.DistStoreError(f"etcd refused {path}: {e}") from e

    def _txn(self, compare: list[dict], success: list[dict]) -> dict[str, Any]:
        return self._post("kv/txn", {"compare": compare, "success": success})

    def _range(self, key: str, **options: Any) -> list[dict[str, Any]]:
        return self._post("kv/range", {"key": _b64(key), **options}).get("kvs", [])

    def _count(self, prefix: str) -> int:
        """How many keys start with ``prefix``."""
        answer = self._post(
            "kv/range", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "count_only": True}
        )
        return int(answer.get("count", 0))

    def _k(self, key: str) -> str:
        return f"{self.namespace}/k/{key}"

    def _q(self, key: str) -> str:
        return f"{self.namespace}/q/{key}/"

    def _wait_until(self, ready, what: str, timeout: timedelta | None = None):
        """Poll ``ready()`` until it returns something other than None; ``DistStoreError`` after the timeout."""
        limit = timeout.total_seconds() if timeout else self.timeout_s
        deadline = time.monotonic() + limit
        pause = _POLL_S[0]
        while (found := ready()) is None:
            if time.monotonic() > deadline:
                raise dist.DistStoreError(f"wait timeout after {limit * 1000:.0f}ms, keys: {what}")
            time.sleep(pause)
            pause = min(2 * pause, _POLL_S[1])
        return found

    # -- the Store interface ---------------------------------------------------------------------

    def set(self, key: str, value: str | bytes) -> None:
        self._post("kv/put", {"key": _b64(self._k(key)), "value": _b64(value)})

    def multi_set(self, keys: list[str], values: list[str | bytes]) -> None:
        puts = [{"request_put": {"key": _b64(self._k(k)), "value": _b64(v)}} for k, v in zip(keys, values, strict=True)]
        for start in range(0, len(puts), MAX_TXN_OPS):
            self._txn([], puts[start : start + MAX_TXN_OPS])

    def _values(self, keys: list[str]) -> list[bytes | None]:
        """The keys' values, read in transactions of at most :data:`MAX_TXN_OPS` (each at one revision);
        None for a missing key."""
        out: list[bytes | None] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            ranges = [{"request_range": {"key": _b64(self._k(k))}} for k in keys[start : start + MAX_TXN_OPS]]
            for response in self._txn([], ranges).get("responses", []):
                kvs = response["response_range"].get("kvs", [])
                out.append(_unb64(kvs[0].get("value", "")) if kvs else None)
        return out

    def get(self, key: str) -> bytes:
        return self._wait_until(lambda: self._values([key])[0], key)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        def all_there():
            values = self._values(keys)
            return None if any(v is None for v in values) else values

        return self._wait_until(all_there, ", ".join(keys))

    def check(self, keys: list[str]) -> bool:
        return all(v is not None for v in self._values(keys))

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        self._wait_until(lambda: True if self.check(keys) else None, ", ".join(keys), timeout)

    def _swap(self, raw_key: str, change) -> bytes:
        """Apply ``change(current value or None) -> new value or None`` to the etcd key ``raw_key``
        atomically; returns what the key holds after.

        A transaction compares the key's revision with the one read, so a writer in between
        makes it read and try again. ``None`` from ``change``: leave the key as it is.
        """
        etcd_key = _b64(raw_key)
        while True:
            kvs = self._range(raw_key)
            current = _unb64(kvs[0].get("value", "")) if kvs else None
            new = change(current)
            if new is None:
                return current if current is not None else b""
            if kvs:
                compare = {"key": etcd_key, "target": "MOD", "result": "EQUAL", "mod_revision": kvs[0]["mod_revision"]}
            else:
                compare = {"key": etcd_key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}
            if self._txn([compare], [{"request_put": {"key": etcd_key, "value": _b64(new)}}]).get("succeeded"):
                return new

    def add(self, key: str, amount: int) -> int:
        if amount == 0:  # a read: the elastic run's counters are read this way many times a second
            value = self._values([key])[0]
            if value is not None:
                return int(value)
        return int(self._swap(self._k(key), _adding(amount)))

    def compare_set(self, key: str, expected: str | bytes, desired: str | bytes) -> bytes:
        """TCPStore's rule: set ``desired`` if the key holds ``expected`` (or is missing and ``expected`` is
        empty); return what the key holds after (``expected`` itself for a missing key and a non-empty one)."""
        expected_b = expected.encode() if isinstance(expected, str) else expected
        desired_b = desired.encode() if isinstance(desired, str) else desired
        missing_means = b"" if not expected_b else None

        def change(current: bytes | None) -> bytes | None:
            return desired_b if (current if current is not None else missing_means) == expected_b else None

        result = self._swap(self._k(key), change)
        return expected_b if result == b"" and not self.check([key]) else result

    def delete_key(self, key: str) -> bool:
        return int(self._post("kv/deleterange", {"key": _b64(self._k(key))}).get("deleted", 0)) > 0

    def num_keys(self) -> int:
        prefix = f"{self.namespace}/k/"
        return self._count(prefix)

    def list_keys(self) -> list[str]:
        prefix = f"{self.namespace}/k/"
        kvs = self._range(prefix, range_end=_b64(_prefix_end(prefix)), keys_only=True)
        return [_unb64(kv["key"]).decode().removeprefix(prefix) for kv in kvs]

    def queue_push(self, key: str, value: str | bytes) -> None:
        index = int(self._swap(f"{self._q(key)}tail", _adding(1)))  # beside the items, not a listed key
        self._post("kv/put", {"key": _b64(f"{self._q(key)}item/{index:020d}"), "value": _b64(value)})

    def queue_len(self, key: str) -> int:
        prefix = f"{self._q(key)}item/"
        return self._count(prefix)

    def _pop_once(self, key: str) -> bytes | None:
        """The queue's first item, deleted; None if the queue is empty."""
        prefix = f"{self._q(key)}item/"
        while True:
            kvs = self._range(
                prefix, range_end=_b64(_prefix_end(prefix)), limit=1, sort_order="ASCEND", sort_target="KEY"
            )
            if not kvs:
                return None
            item = kvs[0]
            compare = {"key": item["key"], "target": "MOD", "result": "EQUAL", "mod_revision": item["mod_revision"]}
            if self._txn([compare], [{"request_delete_range": {"key": item["key"]}}]).get("succeeded"):
                return _unb64(item.get("value", ""))

    def queue_pop(self, key: str, block: bool = True) -> bytes:
        if not block:
            item = self._pop_once(key)
            if item is None:
                raise dist.QueueEmptyError(f"queue {key} is empty")
            return item
        return self._wait_until(lambda: self._pop_once(key), key)

    # -- leases: what an elected coordinator holds (not part of torch's Store) ----------------------

    def grant_lease(self, ttl_s: float) -> int:
        """A new etcd lease of ``ttl_s`` seconds (etcd rounds it up to its minimum, about 2 s); its id."""
        return int(self._post("lease/grant", {"TTL": max(1, round(ttl_s))})["ID"])

    def keep_lease(self, lease: int) -> bool:
        """Renew ``lease`` for another TTL; False if it had already expired (its keys are gone)."""
        return int(self._post("lease/keepalive", {"ID": lease}).get("result", {}).get("TTL", -1)) > 0

    def create_on_lease(self, key: str, value: str, lease: int) -> str:
        """Create ``key`` = ``value``, to vanish with ``lease``, unless the key exists; returns what it holds after."""
        etcd_key = _b64(self._k(key))
        compare = {"key": etcd_key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}
        put = {"request_put": {"key": etcd_key, "value": _b64(value), "lease": lease}}
        answer = self._post(
            "kv/txn", {"compare": [compare], "success": [put], "failure": [{"request_range": {"key": etcd_key}}]}
        )
        if answer.get("succeeded"):
            return value
        kvs = answer["responses"][0]["response_range"].get("kvs", [])
        return _unb64(kvs[0].get("value", "")).decode() if kvs else ""

    def set_if(self, guard: str, holds: str, items: dict[str, str]) -> bool:
        """Set every key of ``items`` in one transaction, only while ``guard`` holds ``holds``; whether it did."""
        compare = {"key": _b64(self._k(guard)), "target": "VALUE", "result": "EQUAL", "value": _b64(holds)}
        puts = [{"request_put": {"key": _b64(self._k(k)), "value": _b64(v)}} for k, v in items.items()]
        return bool(self._txn([compare], puts).get("succeeded"))
