"""The elastic run's store on etcd: the same answers as a TCPStore, a member's loss, an elected coordinator.

Real etcd members (Debian's etcd-server, unpacked by scripts/fetch-etcd.sh) on 127.0.0.1 and
free ports; real coordinator processes.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from dasr.errors import DasrError
from dasr.parallel.elastic_launch import launch_elastic
from dasr.parallel.etcd_store import EtcdStore, parse_address
from dasr.parallel.leadership import LEADER_KEY, EtcdLeadership
from dasr.parallel.membership import Member, View, connect, read_view, start_coordinator, stop_coordinator
from lab.bench.etcd import EtcdCluster, etcd_binary

pytestmark = pytest.mark.skipif(etcd_binary() is None, reason="no etcd: scripts/fetch-etcd.sh puts one in .venv")


def until(condition, what: str, timeout_s: float = 60.0):
    """Wait for ``condition()`` to be true (a hang is a failure, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd") / "data", members=1) as c:
        yield c


@pytest.fixture
def store(cluster, request):
    return EtcdStore.from_address(cluster.address(request.node.name), timeout_s=2)


def test_addresses_parse_and_bad_ones_are_named():
    assert parse_address("etcd://10.0.0.1:2379,h2:2380/run-7") == ([("10.0.0.1", 2379), ("h2", 2380)], "run-7")
    assert parse_address("etcd://h:1") == ([("h", 1)], "dasr")
    with pytest.raises(ValueError, match="'h2' in"):
        parse_address("etcd://h1:2379,h2/x")


def test_the_same_answers_as_a_tcpstore(store):
    """One sequence of operations, on etcd and on torch's TCPStore side by side: every answer equal."""
    tcp = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=2))

    def script(s: dist.Store) -> list:
        out = [s.add("n", 5), s.add("n", -2), s.add("n", 0), s.check(["n", "m"])]
        s.set("m", b"\x00\xffbytes")
        s.multi_set(["a", "b"], ["1", b"2"])
        out += [s.get("m"), s.multi_get(["m", "n", "a", "b"]), s.check(["n", "m"])]
        out += [s.compare_set("d", "", "commit"), s.compare_set("d", "", "abort"), s.get("d")]
        out += [s.compare_set("e", "x", "y"), s.check(["e"]), s.compare_set("d", "commit", "done")]
        s.queue_push("q", "5")
        s.queue_push("q", "7")
        out += [s.queue_len("q"), s.queue_pop("q", False), s.queue_pop("q"), s.queue_len("q")]
        with pytest.raises(dist.QueueEmptyError):
            s.queue_pop("q", False)
        out += [sorted(s.list_keys()), s.num_keys(), s.delete_key("m"), s.delete_key("m"), s.check(["m"])]
        with pytest.raises(dist.DistStoreError, match="timeout"):
            s.wait(["never-set"], timedelta(seconds=0.2))
        return out

    assert script(store) == script(tcp)


def test_concurrent_adds_and_pops_lose_nothing(store):
    """Four threads add 1 fifty times each, and pop a shared queue: every add counted, every item popped once."""
    for i in range(100):
        store.queue_push("work", str(i))
    popped: list[int] = []

    def worker() -> None:
        client = EtcdStore(store.endpoints, store.namespace, timeout_s=10)
        for _ in range(50):
            client.add("count", 1)
        while True:
            try:
                popped.append(int(client.queue_pop("work", block=False)))
            except dist.QueueEmptyError:
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert store.add("count", 0) == 200
    assert sorted(popped) == list(range(100))


def test_more_keys_than_one_transaction_takes(store):
    keys = [f"many/{i}" for i in range(300)]  # etcd takes 128 operations per transaction
    store.multi_set(keys, [str(i) for i in range(300)])
    assert store.multi_get(keys) == [str(i).encode() for i in range(300)]


def test_gloo_rendezvouses_on_it_and_reduces_exactly(store):
    out: dict[int, float] = {}

    def rank(r: int) -> None:
        pg = dist.ProcessGroupGloo(dist.PrefixStore("pair/", store), r, 2, timedelta(seconds=20))
        x = torch.tensor([1.5 + r])
        pg.allreduce([x]).wait()
        out[r] = float(x)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == {0: 4.0, 1: 4.0}


def test_a_lost_member_leaves_the_store_answering(tmp_path):
    """Three members; the one every client asks first is killed: requests go to the others, nothing lost."""
    with EtcdCluster(tmp_path / "etcd", members=3) as c:
        store = EtcdStore.from_address(c.address("run"), timeout_s=20)
        assert store.add("n", 3) == 3
        c.procs[0].kill()
        c.procs[0].wait()
        assert store.add("n", 4) == 7
        assert EtcdStore.from_address(c.address("run"), timeout_s=20).add("n", 0) == 7


def test_one_leader_and_a_stale_one_cannot_publish(store):
    """Two replicas campaign: one leads. The leader stops renewing (paused) past its lease: the other
    takes over, and the old one's publish is refused (fenced), not written."""
    first, second = EtcdLeadership(store, ttl_s=2), EtcdLeadership(store, ttl_s=2)
    assert first.held() and not second.held()
    assert store.get(LEADER_KEY).decode() == first.name
    first._leading = False  # as after a campaign whose answer was lost: the key names it all the same
    assert first.held() and not second.held()
    assert first.publish({"k": "from-first"})
    until(second.held, "the second replica to take over once the first one's lease runs out", timeout_s=20)
    assert not first.publish({"k": "stale"}) and store.get("k") == b"from-first"
    assert second.publish({"k": "from-second"}) and store.get("k") == b"from-second"


def test_a_replica_takes_over_the_views_where_the_lost_one_left_them(cluster, request):
    """Two coordinator replicas on one etcd namespace; two members join (view 1), one dies (view 2, without
    it). The deciding replica is killed, and the other member leaves: the other replica publishes view 3,
    exactly the next version, with nobody in it (not the dead member, whose join record still stands). A
    run that is over is then refused by a new launcher on the same namespace."""
    address = cluster.address(request.node.name)
    procs = []
    try:
        procs.append(start_coordinator(2, lease_s=2, store=address)[0])
        store = connect(address, timeout_s=10)
        until(lambda: store.check([LEADER_KEY]), "the first replica to lead")
        procs.append(start_coordinator(2, lease_s=2, store=address)[0])
        members = [Member(address, s, heartbeat_s=0.1) for s in range(2)]
        for m in members:
            m.join()
        first = until(lambda: (v := read_view(store)).version and v, "the first view")
        assert first == View(1, tuple((m.slot, m.incarnation) for m in members))
        members[1]._stop.set()  # no more heartbeats: dead, as the coordinator sees it
        second = until(lambda: (v := read_view(store)).version > 1 and v, "the dead member's lease to run out")
        assert second == View(2, ((0, members[0].incarnation),))
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        members[0].leave()
        third = until(lambda: (v := read_view(store)).version > 2 and v, "the other replica's view", timeout_s=30)
        assert third == View(3, ())
        with pytest.raises(DasrError, match="holds a run that is over"):
            launch_elastic([sys.executable, "-c", "pass"], nproc=2, coordinator=address)
    finally:
        for proc in procs:
            stop_coordinator(proc, address)


def test_a_missing_client_library_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "etcd3gw", None)
    monkeypatch.setitem(sys.modules, "etcd3gw.client", None)
    with pytest.raises(DasrError, match=r"needs etcd3gw, which is not installed: pip install 'dasr\[etcd\]'"):
        EtcdStore([("127.0.0.1", 1)])
