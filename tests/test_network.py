"""The network test bed: namespaces joined by tbf-shaped links, real training across them, cleanup; the simulator's links.

The test-bed tests need root and `ip netns`; they skip with the reason where namespaces cannot be made.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from ipaddress import ip_address
from pathlib import Path

import pytest

from dasr.data.tokenizer import CharTokenizer
from dasr.model.blstm import BlstmCtc, num_parameters, preset_config
from lab.bench import netns, node_loss
from lab.bench.etcd import etcd_binary
from lab.bench.network import train_on_testbed
from lab.bench.runs import TrainRun
from lab.sim import network as simnet

SLOW_MBIT = 20
STEPS = 4


@pytest.fixture(scope="module")
def testbed_ok():
    reason = netns.available()
    if reason:
        pytest.skip(f"no network test bed here: {reason}")


def _our_namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(prefix)]


@pytest.mark.slow  # 28 s; `make test-all`, and `dasr bench network` measures the same links
def test_sync_and_adpsgd_traffic_crosses_the_slow_link(testbed_ok, speech_data_dir, tmp_path):
    """Two nodes, node 1 behind a 20 Mbit/s link: the model's bytes go over the veths, at the shaped rate."""
    param_bytes = 4 * num_parameters(BlstmCtc(preset_config("tiny", CharTokenizer().vocab_size)))
    options = ["--model", "tiny", "--max-steps", str(STEPS), "--batch-frames", "1200", "--log-every", "1"]
    options += ["--checkpoint-every", "0", "--gossip-period-s", "0.2"]
    with netns.Testbed(2, [1000, SLOW_MBIT]) as bed:
        prefix = bed.prefix
        assert "rate 20Mbit" in bed.qdisc(1)
        assert all(ip_address(bed.address(i)) in netns.BENCHMARK_RANGE for i in range(2))
        runs = {}
        for strategy in ("sync", "adpsgd"):
            run = TrainRun(strategy, strategy, 1, options)
            runs[strategy] = train_on_testbed(bed, run, str(speech_data_dir), tmp_path / strategy, timeout_s=80)
    assert _our_namespaces(prefix) == []  # everything deleted on leaving the block

    sync, adpsgd = runs["sync"], runs["adpsgd"]
    for summary in (sync, adpsgd):
        sent, received = summary["link_bytes"][1]["tx_bytes"], summary["link_bytes"][0]["rx_bytes"]
        assert abs(sent - received) <= 0.05 * sent  # node 1's bytes arrived at node 0 through the bridge
    # sync: the initial broadcast and an all-reduce of every gradient (2 ranks: each sends the whole vector once)
    assert sync["link_bytes"][1]["tx_bytes"] >= STEPS * param_bytes
    # adpsgd: at least the initial agreement and the final consensus, each the whole vector
    assert adpsgd["link_bytes"][1]["tx_bytes"] >= 2 * param_bytes
    # the all-reduce waited on the 20 Mbit/s link: one vector takes 0.43 s there, ~1 ms over loopback
    assert sync["comm_s"] >= 0.7 * param_bytes / simnet.link(SLOW_MBIT).bandwidth_Bps


def _train_records(exp: Path) -> list[dict]:
    path = exp / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def _wait_for(condition, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


#: `dasr train` options of the elastic test-bed runs: the tiny model, 30 epochs, short leases
ELASTIC_OPTIONS = ["--model", "tiny", "--epochs", "30", "--eval-every-epochs", "10", "--batch-frames", "300"]
ELASTIC_OPTIONS += ["--log-every", "1", "--lease-s", "2", "--max-restarts", "1"]


def _assert_trained_every_epoch_to_the_end(exp: Path, launcher, log: Path, cut_at: int, slots: set[int]) -> None:
    """Node ``exp``'s launcher ended well and its ``slots`` went on training after the cut, to the last epoch."""
    assert launcher.returncode == 0, log.read_text()[-3000:]
    survivors = _train_records(exp)
    assert {r["rank"] for r in survivors[cut_at:]} == slots
    assert max(r["epoch"] for r in survivors) == 29


def _assert_the_leader_evaluated(exp: Path) -> None:
    """The live set's leader (slot 0, on this node) evaluated at every evaluated epoch and saved the model."""
    evals = [r for r in map(json.loads, (exp / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert sorted(r["epoch"] for r in evals) == [9, 19, 29]
    assert (exp / "final.pt").exists()


def _wait_or_fail(proc, log: Path, what: str, timeout_s: float) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_elastic_training_goes_on_when_a_worker_node_is_cut_off(testbed_ok, speech_data_dir, tmp_path):
    """Three nodes: the coordinator alone on node 0, two workers each on nodes 1 and 2 (`dasr train
    --elastic --coordinator`). Node 2's link goes down mid-run: node 1's workers drop it from the view
    and train every epoch to the end; only the coordinator's own node stays a single point of failure."""
    with netns.Testbed(3, 1000) as bed:
        address = node_loss.start_store(bed, "tcp", 4, tmp_path, lease_s=2)
        exps, logs = [tmp_path / "node1", tmp_path / "node2"], [tmp_path / "node1.log", tmp_path / "node2.log"]
        data = str(speech_data_dir)
        launchers = [node_loss.start_workers(bed, r + 1, r, address, data, exps[r], ELASTIC_OPTIONS) for r in range(2)]
        _wait_for(lambda: all(len(_train_records(e)) >= 4 for e in exps), "both nodes to train", 240)
        bed.set_link(2, up=False)
        cut_at = len(_train_records(exps[0]))
        _wait_or_fail(launchers[0], logs[0], "node 1", 300)
        _wait_for(lambda: "run over" in (tmp_path / "node0.log").read_text(), "the coordinator to end with its run", 30)
    _assert_trained_every_epoch_to_the_end(exps[0], launchers[0], logs[0], cut_at, {0, 1})
    _assert_the_leader_evaluated(exps[0])
    last = (tmp_path / "node0.log").read_text().splitlines()[-1]
    assert last.startswith("run over; batch claims: "), last
    claims = ast.literal_eval(last.removeprefix("run over; batch claims: "))
    assert claims["trained_twice_or_more"] == 0 and claims["trained_once"] >= claims["batches_trained"] - 2


@pytest.mark.slow
@pytest.mark.skipif(etcd_binary() is None, reason="no etcd: scripts/fetch-etcd.sh puts one in .venv")
def test_elastic_training_goes_on_when_the_store_host_is_cut_off(testbed_ok, speech_data_dir, tmp_path):
    """Three nodes, each an etcd member; node 0 also runs the coordinator replica that decides, nodes 1
    and 2 two workers each and a replica of their own (`--coordinator etcd://...`). Node 0's link goes
    down mid-run and a worker of node 2 is killed: etcd keeps its quorum, a replica on node 1 or 2
    takes the decisions over (the killed worker leaves the view, its replacement joins), and all
    four slots train every epoch to the end. No node is a single point of failure."""
    with netns.Testbed(3, 1000) as bed:
        store = node_loss.start_store(bed, "etcd", 4, tmp_path, lease_s=2)  # node 0's replica is in office
        exps, logs = [tmp_path / "node1", tmp_path / "node2"], [tmp_path / "node1.log", tmp_path / "node2.log"]
        data = str(speech_data_dir)
        launchers = [node_loss.start_workers(bed, r + 1, r, store, data, exps[r], ELASTIC_OPTIONS) for r in range(2)]
        _wait_for(lambda: all(len(_train_records(e)) >= 4 for e in exps), "both nodes to train", 240)
        bed.set_link(0, up=False)
        cut_at = [len(_train_records(e)) for e in exps]
        version_at_cut = max(r["gossip_version"] for e in exps for r in _train_records(e))
        workers = subprocess.run(
            ["pgrep", "-f", "--", f"--config {exps[1]}/config.yaml"], capture_output=True, text=True
        )
        os.kill(int(workers.stdout.split()[0]), signal.SIGKILL)  # a view without it needs a coordinator in office
        for launcher, log in zip(launchers, logs, strict=True):
            _wait_or_fail(launcher, log, log.stem, 300)
        took_over = sum("in office" in log.read_text() for log in logs)
    for exp, launcher, log, cut, slots in zip(exps, launchers, logs, cut_at, ({0, 1}, {2, 3}), strict=True):
        _assert_trained_every_epoch_to_the_end(exp, launcher, log, cut, slots)
    _assert_the_leader_evaluated(exps[0])
    assert took_over >= 1  # a replica on node 1 or 2 took office after node 0 was gone
    assert max(r["gossip_version"] for e in exps for r in _train_records(e)) >= version_at_cut + 2  # and decided
    for exp in exps:
        claims = json.loads((exp / "elastic-claims.json").read_text())  # the batch in hand at the kill: once or twice
        assert claims["trained_twice_or_more"] <= 1 and claims["trained_once"] >= claims["batches_trained"] - 2


def test_namespaces_are_deleted_on_error_and_on_sigterm(testbed_ok, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with netns.Testbed(2, 50) as bed:
            prefix = bed.prefix
            assert len(_our_namespaces(prefix)) == 3  # switch + 2 nodes
            raise RuntimeError("boom")
    assert _our_namespaces(prefix) == []

    ready = tmp_path / "prefix"
    script = (
        "import sys, time\nfrom lab.bench.netns import Testbed\n"
        f"with Testbed(2, 50) as bed:\n    open({str(ready)!r}, 'w').write(bed.prefix)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        prefix = ready.read_text()
        assert len(_our_namespaces(prefix)) == 3
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert _our_namespaces(prefix) == []


def test_stale_namespaces_of_a_dead_run_are_cleaned(testbed_ok):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.NAME_ROOT}{dead.pid}x1-n0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in netns.clean_stale()
        assert _our_namespaces(stale) == []
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


def test_simulated_links_bound_sync_and_spare_adpsgd():
    """At 50 Mbit/s a 10 MB model's all-reduce dominates sync's step; adpsgd's gossip runs beside compute."""
    work = simnet.reference_workload({"compute_s": 0.4, "step_s": 0.45, "utts_per_step": 10}, 10_000_000, 0.002, 0.5, 2)
    speedup = {1: 1.0, 2: 2.0, 4: 2.0}
    sync = simnet.predict("sync", 4, 50, work, 2, speedup)
    wire = 2 * 3 / 4 * 10e6 * 8 / 50e6  # ring all-reduce over 4 nodes at 50 Mbit/s: 2.4 s
    assert sync.step_s == pytest.approx(0.45 * 2 + wire, rel=0.1)  # 4 workers on 2 cores: compute x2
    fast = simnet.predict("sync", 4, 1000, work, 2, speedup)
    assert fast.samples_per_s > 2 * sync.samples_per_s
    adpsgd = simnet.predict("adpsgd", 4, 50, work, 2, speedup)
    assert adpsgd.samples_per_s > 2.5 * sync.samples_per_s
    # localsgd: one all-reduce of the parameters per 8 steps, so between the two
    localsgd = simnet.predict("localsgd", 4, 50, work, 2, speedup)
    assert sync.samples_per_s * 2 < localsgd.samples_per_s < adpsgd.samples_per_s
    with pytest.raises(ValueError, match="link rate"):
        simnet.link(0)


def test_testbed_rejects_bad_rates():
    with pytest.raises(ValueError, match="one link rate"):
        netns.Testbed(2, [50])
    with pytest.raises(ValueError, match="one link rate"):
        netns.Testbed(2, -1)


def test_simulate_link_mbit_reads_a_network_benchmark(tmp_path, capsys):
    """`dasr simulate --link-mbit` calibrates on network.json's reference run and sets predicted beside measured."""
    import json

    from dasr.cli import main

    setup = {"param_bytes": 10_000_000, "gossip_period_s": 0.5, "hybrid_group_size": 2, "cores": 2}
    run = {"strategy": "sync", "nproc": 4, "rate_mbit": 50, "samples_per_s": 9.0, "utts_per_step": 10}
    run.update(compute_s=0.9, step_s=3.3, exposed_comm_s=2.4)
    results = {
        "setup": setup,
        "reference_single": {"compute_s": 0.4, "step_s": 0.45, "utts_per_step": 10},
        "contention_speedup": {"1": 1.0, "2": 2.0, "4": 2.0},
        "runs": [run],
    }
    path = tmp_path / "network.json"
    path.write_text(json.dumps({"results": results}))
    rows = simnet.compare(simnet.load_bench(path), [("sync", 4, 50), ("adpsgd", 4, 50)])
    assert rows[0]["rel_err"] == pytest.approx(abs(rows[0]["simulated_samples_per_s"] - 9.0) / 9.0)
    assert "rel_err" not in rows[1]  # nothing measured there
    # the link model alone: 0.9 s compute + a 4-node ring all-reduce of 10 MB at 50 Mbit/s (2.4 s) per 10 utterances
    assert rows[0]["measured_compute_simulated_samples_per_s"] == pytest.approx(4 * 10 / (0.9 + 2.4), rel=0.05)
    assert main(["simulate", "--link-mbit", "50", "--nodes", "2,4", "--network", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["4", "50", "sync"] and line.split()[4] == "9.00" for line in lines)
    assert not any(line.split()[:3] == ["2", "50", "hybrid"] for line in lines)  # K = 2 is one hybrid group
    assert main(["simulate", "--link-mbit", "50", "--network", str(tmp_path / "none.json")]) == 1
