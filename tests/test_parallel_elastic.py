"""Elastic adpsgd: leases and views on a coordinator outside the workers, claims re-offered, workers
killed, hung and replaced while the others train (real processes over gloo on 127.0.0.1)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dasr.config import TrainConfig
from dasr.data.loader import ElasticClaims
from dasr.errors import DasrError
from dasr.parallel.elastic import ElasticADPSGD
from dasr.parallel.elastic_launch import launch_elastic, worker_env
from dasr.parallel.membership import PREFIX, Coordinator, Member, View, connect, start_coordinator, stop_coordinator
from lab.bench.etcd import EtcdCluster, etcd_binary

EXAMPLE = Path(__file__).parent.parent / "examples" / "adpsgd_classifier.py"
BATCHES = 64  # the example's batches per epoch


def until(condition, what: str, timeout_s: float = 120.0, every_s: float = 0.05):
    """Wait for ``condition()`` to be true (a hang is a failure, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)
    return value


def test_view_round_trips():
    view = View(7, ((0, "3f2a"), (3, "77e0")), frozenset({3}))
    assert view.encode() == "7 0:3f2a,3:77e0*"
    assert View.decode(view.encode()) == view and view.slots == [0, 3]
    assert View.decode("0 ") == View(0, ())


def test_leases_views_and_reoffered_claims():
    """Three members; one stops beating (a kill): the next view drops it and its batch is re-offered,
    exactly once; one leaves on purpose (its claim is done); a replacement joins under a new version."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30))
    address = f"127.0.0.1:{store.port}"
    coordinator = Coordinator(store, slots=3, lease_s=0.5)
    members = [Member(address, s, heartbeat_s=0.05) for s in range(3)]
    for m in members:
        m.join()
    first = until(coordinator.poll, "the first view")
    assert first.version == 1 and first.members == tuple((m.slot, m.incarnation) for m in members)
    claims = [ElasticClaims(connect(address), PREFIX, m.slot, lambda m=m: m.incarnation) for m in members]
    assert [c.claim(0, 0, 4) for c in claims] == [0, 1, 2]
    assert claims[0].claim(0, 0, 4) == 3  # finishes batch 0

    members[2]._stop.set()  # slot 2 dies holding batch 2: no heartbeat, no leave
    second = until(coordinator.poll, "slot 2's lease to expire", every_s=0.1)
    assert second.version == 2 and second.slots == [0, 1]
    assert int(store.add(f"{PREFIX}/reoffered/0", 0)) == 1
    assert claims[1].claim(0, 0, 4) == 2  # the re-offered batch comes first
    assert claims[1].claim(0, 0, 4) == 4  # then the epoch is over
    assert claims[0].claim(0, 0, 4) == 5
    assert claims[0].done_counts(0, 4) == [1, 1, 1, 1]  # every batch trained once
    assert claims[0].exhausted(0, 0, 4)

    members[1].leave()  # on purpose: dropped at once, nothing re-offered
    assert until(coordinator.poll, "slot 1's leave").slots == [0]
    assert int(store.add(f"{PREFIX}/reoffered/0", 0)) == 1
    replacement = Member(address, 2, heartbeat_s=0.05)
    replacement.join()
    fourth = until(coordinator.poll, "the replacement")
    assert fourth.version == 4 and fourth.members == ((0, members[0].incarnation), (2, replacement.incarnation))
    assert not fourth.ready
    replacement.mark_ready(connect(address))  # loaded: the next view counts it in averages
    assert until(coordinator.poll, "the replacement to be ready").ready == {2}
    assert not coordinator.run_over()
    for m in (members[0], replacement):
        m.leave()
    until(lambda: coordinator.poll() and not coordinator.live, "everyone's leave")
    assert coordinator.run_over()  # a coordinator started apart stops here, before a second run can use it


@contextmanager
def coordinator_in_this_process(slots: int, lease_s: float, settle_s: float = 60.0, etcd: str = ""):
    """A coordinator polled by a thread of the test (serving a TCPStore, or on the ``etcd`` address
    given); yields its store, address and the replicas to close."""
    store = connect(etcd) if etcd else dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30))
    address = etcd or f"127.0.0.1:{store.port}"
    coordinator = Coordinator(store, slots=slots, lease_s=lease_s, settle_s=settle_s)
    stop = threading.Event()
    polling = threading.Thread(target=lambda: [coordinator.poll() or time.sleep(0.05) for _ in iter(stop.is_set, True)])
    polling.start()
    replicas: dict[int, ElasticADPSGD] = {}
    try:
        yield store, address, replicas
    finally:
        stop.set()
        polling.join()
        for replica in replicas.values():
            replica.close()


@pytest.fixture(params=["tcpstore", "etcd"])
def store_kind(request, tmp_path):
    """ "tcpstore": the coordinator serves the store; "etcd": the store is a one-member etcd cluster
    (the gossip's pair groups, the switch and the hand-over all go through it)."""
    if request.param == "tcpstore":
        yield ""
        return
    if etcd_binary() is None:
        pytest.skip("no etcd: scripts/fetch-etcd.sh puts one in .venv")
    with EtcdCluster(tmp_path / "etcd") as cluster:
        yield cluster.address("run")


def test_a_member_dead_inside_the_average_costs_a_lease_not_the_gloo_timeout(store_kind):
    """Three replicas (0, 1, 2 everywhere); slot 2 announces itself for the live average and dies
    before connecting. The survivors give the attempt up when its lease runs out (1 s), not after
    gloo's timeout (4 pair timeouts, 12 s here), and commit exactly (0 + 1) / 2 over the next view."""
    with coordinator_in_this_process(slots=3, lease_s=1.0, etcd=store_kind) as (store, address, replicas):

        def join(slot: int) -> None:
            model = torch.nn.Linear(4, 2)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            replicas[slot] = ElasticADPSGD(model, optimizer, address=address, slot=slot, pair_timeout_s=3.0)

        joining = [threading.Thread(target=join, args=(s,)) for s in range(3)]
        for t in joining:
            t.start()
        for t in joining:
            t.join(timeout=60)
        assert sorted(replicas) == [0, 1, 2], "the three replicas did not join"
        for slot, replica in replicas.items():
            replica.elastic.park()
            with torch.no_grad():
                for p in replica.model.parameters():
                    p.fill_(float(slot))
        dead = replicas[2]
        dead.member._stop.set()  # no more heartbeats: a SIGKILL, as the coordinator sees it
        dead.elastic.stop(wait_s=5)
        version = read_version(store)
        store.set(f"{PREFIX}/avg/0/0/v{version}/in/2", "1")  # it got as far as announcing itself
        took: dict[int, float] = {}

        def average(slot: int) -> None:
            started = time.monotonic()
            replicas[slot].average(timeout_s=60)
            took[slot] = time.monotonic() - started

        averaging = [threading.Thread(target=average, args=(s,)) for s in (0, 1)]
        for t in averaging:
            t.start()
        for t in averaging:
            t.join(timeout=60)
        assert sorted(took) == [0, 1], "the survivors' average did not finish"
        assert max(took.values()) < 6.0, took  # lease 1 s + its detection (and a loaded machine); gloo's: 12 s
        for slot in (0, 1):
            assert all(torch.equal(p, torch.full_like(p, 0.5)) for p in replicas[slot].model.parameters())


def test_a_pair_silenced_by_a_timeout_gossips_again_after_a_new_view():
    """Slot 1's gossip stops longer than a pair timeout while its lease holds: slot 0's exchange
    fails and slot 0 skips it. Two leases later slot 0 asks for a new view of the same members;
    its switch clears the suspicion, and the pair exchanges again (before: silent to the run's end)."""
    with coordinator_in_this_process(slots=2, lease_s=1.0) as (store, address, replicas):

        def join(slot: int) -> None:
            model = torch.nn.Linear(4, 2)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            replicas[slot] = ElasticADPSGD(
                model, optimizer, address=address, slot=slot, period_s=0.02, pair_timeout_s=1
            )

        joining = [threading.Thread(target=join, args=(s,)) for s in range(2)]
        for t in joining:
            t.start()
        for t in joining:
            t.join(timeout=60)
        first, second = replicas[0].elastic, replicas[1].elastic
        until(lambda: first.stats["model_exchanges"] > 2, "the pair to gossip")
        version = read_version(store)
        second.park()  # its exchanges stop; its heartbeats go on
        until(lambda: first.stats["failed_exchanges"] >= 1, "slot 0's exchange to time out")
        second.resume()
        silenced_at = first.stats["model_exchanges"]
        view = until(
            lambda: (v := View.decode(store.get(f"{PREFIX}/view").decode())).version > version and v, "a new view"
        )
        assert view.slots == [0, 1] and first.stats["resyncs_asked"] == 1
        until(lambda: first.stats["model_exchanges"] > silenced_at + 2, "the pair to gossip again")


def test_a_replacement_takes_its_donors_optimizer_state(store_kind):
    """Slot 0 trains 5 AdamW steps alone; slot 1 joins and receives its parameters and, exactly, its
    moments and step counts (zero moments would make its first updates full-size sign steps)."""
    torch.manual_seed(0)
    with coordinator_in_this_process(slots=2, lease_s=2.0, settle_s=0.5, etcd=store_kind) as (_, address, replicas):
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        replicas[0] = ElasticADPSGD(model, optimizer, address=address, slot=0, period_s=0.02)
        for _ in range(5):
            model(torch.randn(8, 4)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        joiner = torch.nn.Linear(4, 2)  # other initial weights, no optimizer state yet
        joiner_optimizer = torch.optim.AdamW(joiner.parameters(), lr=0.01)
        replicas[1] = ElasticADPSGD(joiner, joiner_optimizer, address=address, slot=1, period_s=0.02)
        donor, received = optimizer.state_dict()["state"], joiner_optimizer.state_dict()["state"]
        assert sorted(received) == sorted(donor) == [0, 1]
        for i in donor:
            assert float(received[i]["step"]) == 5.0
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(received[i][moment], donor[i][moment]) and donor[i][moment].abs().sum() > 0
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), joiner.parameters(), strict=True))


def read_version(store) -> int:
    return View.decode(store.get(f"{PREFIX}/view").decode()).version


def test_a_node_launcher_refuses_slots_outside_the_coordinators_run():
    proc, address = start_coordinator(slots=4)
    try:
        with pytest.raises(ValueError, match="slots 2 to 4 are outside the run's 4 slots"):
            launch_elastic([sys.executable, "-c", "pass"], nproc=3, coordinator=address, first_slot=2)
        with pytest.raises(ValueError, match="0 without a coordinator"):
            launch_elastic([sys.executable, "-c", "pass"], nproc=2, first_slot=2)
    finally:
        stop_coordinator(proc, address)


class Run:
    """The coordinator and example workers of one test; everything is killed and reaped at the end."""

    def __init__(self, tmp_path: Path, slots: int, lease_s: float = 2.0):
        self.out = tmp_path
        self.coordinator, self.address = start_coordinator(slots, lease_s=lease_s)
        self.store = connect(self.address)
        self.procs: list[subprocess.Popen] = []

    def start(self, slot: int, epochs: int = 6, step_s: float = 0.1) -> subprocess.Popen:
        command = [sys.executable, str(EXAMPLE), "--epochs", str(epochs), "--period-s", "0.02"]
        command += ["--step-s", str(step_s), "--result-dir", str(self.out)]
        proc = subprocess.Popen(command, env=worker_env(self.address, slot, 0), stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def started(self, proc: subprocess.Popen) -> bool:
        return any(self.out.glob(f"started-*-{proc.pid}"))

    def view(self) -> View:
        return View.decode(self.store.get(f"{PREFIX}/view").decode())

    def finish(self, proc: subprocess.Popen) -> dict:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        return json.loads(next(self.out.glob(f"result-*-{proc.pid}.json")).read_text())

    def done_counts(self, epochs: int) -> list[int]:
        return [int(self.store.add(f"{PREFIX}/done/{e}/{i}", 0)) for e in range(epochs) for i in range(BATCHES)]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        stop_coordinator(self.coordinator, self.address)


@pytest.fixture
def run(tmp_path):
    runs: list[Run] = []
    yield lambda slots, **kw: runs.append(Run(tmp_path, slots, **kw)) or runs[-1]
    for r in runs:
        r.close()


@pytest.mark.slow
def test_kill_rank0_replace_it_and_finish_equal(run):
    """SIGKILL slot 0 (the first view's model source) mid-run: the others keep training, a replacement
    pulls the model from a live peer and rejoins, all end with one averaged model, each batch trained once
    but for the one in flight at the kill."""
    epochs = 10  # the survivors must still be training when the replacement is ready
    r = run(3)
    procs = [r.start(s, epochs) for s in range(3)]
    until(lambda: all(r.started(p) for p in procs), "all workers to start", timeout_s=180)
    until(lambda: r.done_counts(1)[: BATCHES // 2].count(1) > 8, "some training")
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    dropped = until(lambda: (v := r.view()).slots == [1, 2] and v, "slot 0 to be dropped")
    replacement = r.start(0, epochs)
    rejoined = until(lambda: 0 in (v := r.view()).slots and v, "the replacement to join", timeout_s=180)
    assert rejoined.version > dropped.version
    results = [r.finish(p) for p in (procs[1], procs[2], replacement)]
    assert results[0]["params"] == results[1]["params"] == results[2]["params"]  # one averaged model
    assert all(res["accuracy"] > 0.8 for res in results)  # 4 classes: chance is 0.25
    new = results[2]["stats"]
    assert new["gossip_donations_received"] == 1 and new["steps"] < max(res["steps"] for res in results[:2])
    counts = r.done_counts(epochs)
    odd = [c for c in counts if c != 1]  # the batch in flight at the kill: lost (0) or trained twice (2)
    assert len(odd) <= 1 and sum(counts) >= len(counts) - 1, odd
    assert (
        int(r.store.add(f"{PREFIX}/reoffered/0", 0))
        + sum(int(r.store.add(f"{PREFIX}/reoffered/{e}", 0)) for e in range(1, epochs))
        <= 1
    )


@pytest.mark.slow
def test_hung_worker_is_dropped_and_comes_back(run):
    """SIGSTOP one worker past its lease: the others go on and finish; resumed, it rejoins fresh and finishes."""
    epochs = 5
    r = run(3, lease_s=2.0)
    procs = [r.start(s, epochs) for s in range(3)]
    until(lambda: all(r.started(p) for p in procs), "all workers to start", timeout_s=180)
    until(lambda: r.done_counts(1)[: BATCHES // 2].count(1) > 8, "some training")
    os.kill(procs[1].pid, signal.SIGSTOP)
    try:
        until(lambda: r.view().slots == [0, 2], "the hung worker to be dropped")
        results = [r.finish(procs[0]), r.finish(procs[2])]  # while slot 1 is still stopped
    finally:
        os.kill(procs[1].pid, signal.SIGCONT)
    assert results[0]["params"] == results[1]["params"]
    assert all(res["accuracy"] > 0.8 for res in results)
    hung = r.finish(procs[1])
    assert hung["stats"]["gossip_rejoins"] >= 1
    counts = r.done_counts(epochs)
    assert len([c for c in counts if c != 1]) <= 1  # the batch it held when stopped


def _workers_of(launcher: subprocess.Popen) -> dict[int, int]:
    """{slot: pid} of the elastic workers the `dasr train` process started (read from /proc)."""
    out = {}
    for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        slot = [e.split(b"=", 1)[1] for e in env if e.startswith(b"DASR_ELASTIC_SLOT=")]
        if slot:
            out[int(slot[0])] = int(pid)
    return out


def _records(exp: Path, kind: str) -> list[dict]:
    path = exp / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.slow
def test_dasr_train_elastic_survives_a_killed_rank0(speech_data_dir, tmp_path):
    """`dasr train --strategy adpsgd --elastic`: rank 0 killed mid-run is replaced alone, the others never
    stop, every evaluation is made once (by the live set's leader) and the final model is saved."""
    exp = tmp_path / "exp"
    command = [sys.executable, "-m", "dasr", "train", "--data", speech_data_dir, "--exp", exp, "--model", "tiny"]
    # enough epochs that the replacement (a fresh Python and torch: seconds, more on a loaded machine)
    # still finds the others training
    command += ["--epochs", 36, "--eval-every-epochs", 12, "--batch-frames", 300, "--log-every", 1]
    command += ["--strategy", "adpsgd", "--elastic", "--nproc", 3, "--max-restarts", 1, "--lease-s", 2]
    launcher = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: len([r for r in _records(exp, "train") if r["rank"] == 0]) >= 2, "rank 0 to train", 240)
        killed = _workers_of(launcher)[0]
        os.kill(killed, signal.SIGKILL)
        until(lambda: _workers_of(launcher).get(0, killed) != killed, "slot 0's replacement", 60)
        _, err = launcher.communicate(timeout=400)
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode == 0, err[-3000:]
    evals = _records(exp, "eval")
    assert sorted(r["epoch"] for r in evals) == [11, 23, 35], evals  # each once, none skipped
    assert (exp / "final.pt").exists() and (exp / "last.pt").exists()
    ranks = [r["rank"] for r in _records(exp, "train")]
    restarted = [i for i in range(1, len(ranks)) if ranks[i] == 0 and _records(exp, "train")[i]["step"] == 1]
    assert restarted, "no train record of slot 0's replacement"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"strategy": "sync"}, "--strategy adpsgd"),
        ({"nnodes": 2}, "--nnodes > 1 needs --coordinator"),
        ({"nnodes": 2, "node_rank": 2, "coordinator": "h:1"}, "--node-rank"),
        ({"coordinator": "no-port"}, "HOST:PORT"),
        ({"coordinator": "host:"}, "HOST:PORT"),
        ({"coordinator": ":29600"}, "HOST:PORT"),
        ({"coordinator": "h:1", "elastic": False}, "--coordinator is for --elastic"),
        ({"checkpoint_every": 5}, "--checkpoint-every"),
        ({"resume": True}, "--resume"),
        ({"lease_s": 0}, "--lease-s must be positive"),
        ({"pair_timeout_s": -1}, "--pair-timeout-s must be positive"),
    ],
)
def test_elastic_refuses_what_it_does_not_do(options, named):
    config = TrainConfig(data="d", exp="e", **{"elastic": True, "strategy": "adpsgd", **options})
    with pytest.raises(DasrError, match=named):
        config.validate()
