"""The cluster simulator: cost formulas, the event kernel, strategies against hand calculations, the CLI."""

import json

import pytest

from lab.sim import calibrate, gpu, model
from lab.sim.cluster import Cluster, Workload, simulate
from lab.sim.engine import Cpu, Engine, Sleep, Wait, aggregate_speed
from lab.sim.model import Link

LINK = Link(latency_s=1e-3, bandwidth_Bps=1e8)
OWN = Cluster(cores=None, link=LINK)  # every learner on its own processor, wall-time transfers


def _work(**kw):
    base = dict(compute_s=0.1, samples_per_step=10, param_bytes=1e6)
    return Workload(**{**base, **kw})


# ------------------------------------------------------------------------------- cost formulas


def test_ring_allreduce_matches_closed_form():
    nbytes, alpha, beta = 172e6, 5e-6, 12.5e9
    for n in (2, 4, 32, 128):
        expected = 2 * (n - 1) / n * nbytes / beta + 2 * (n - 1) * alpha
        assert model.ring_allreduce_s(nbytes, n, Link(alpha, beta)) == pytest.approx(expected)
    assert model.ring_allreduce_s(nbytes, 1, LINK) == 0.0
    assert model.pair_average_s(nbytes, LINK) == pytest.approx(nbytes / 1e8 + 2e-3)


def test_fit_link_recovers_latency_and_bandwidth():
    truth = Link(2e-4, 5e8)
    sizes = [1e4, 1e6, 1e7]
    fitted = model.fit_link(sizes, [model.ring_allreduce_s(s, 2, truth) for s in sizes], ranks=2)
    assert fitted.latency_s == pytest.approx(truth.latency_s)
    assert fitted.bandwidth_Bps == pytest.approx(truth.bandwidth_Bps)


def test_gpu_batch_curve_interpolates_the_table_log_log():
    table = {32: 240.0, 128: 120.0, 512: 60.0}
    assert gpu.us_per_sample(128, table) == pytest.approx(120.0)  # a table point returns its value
    assert gpu.us_per_sample(64, table) == pytest.approx(240.0 / 2**0.5)  # halfway in log-log
    assert gpu.us_per_sample(1024, table) == pytest.approx(42.43, rel=1e-3)  # end segment's slope beyond
    times = [gpu.us_per_sample(b) for b in (16, 32, 80, 128, 256)]
    assert times == sorted(times, reverse=True)  # per-sample time falls with batch
    assert gpu.per_sample_factor(256, 256) == 1.0 and gpu.per_sample_factor(80, 256) > 1.0


# ------------------------------------------------------------------------------- event kernel


def test_processor_sharing_four_tasks_on_two_cores_take_twice_as_long():
    engine = Engine(cores=2)
    finished = []

    def task():
        yield Cpu(1.0)
        finished.append(engine.now)

    for _ in range(4):
        engine.spawn(task())
    engine.run(10.0)
    assert finished == pytest.approx([2.0] * 4)


def _finish_times(engine, tasks):
    finished = []

    def task():
        yield Cpu(1.0)
        finished.append(engine.now)

    for _ in range(tasks):
        engine.spawn(task())
    engine.run(10.0)
    return finished


def test_measured_contention_slows_each_task_to_s_of_k_over_k():
    speedup = {1: 1.0, 2: 1.5, 4: 1.5}
    assert _finish_times(Engine(cores=2, speedup=speedup), 4) == pytest.approx([4 / 1.5] * 4)
    assert _finish_times(Engine(cores=2, speedup=speedup), 2) == pytest.approx([2 / 1.5] * 2)
    assert _finish_times(Engine(cores=2, speedup=speedup), 1) == pytest.approx([1.0])
    # ideal sharing is the default and unchanged
    assert _finish_times(Engine(cores=2), 2) == pytest.approx([1.0, 1.0])
    assert _finish_times(Engine(cores=2, speedup={2: 2.0, 4: 2.0}), 4) == pytest.approx([2.0] * 4)


def test_aggregate_speed_interpolates_between_measured_counts_and_stays_flat_beyond():
    speedup = {2: 1.8, 4: 1.6}
    assert aggregate_speed(1, speedup) == 1.0  # s(1) = 1 when not given
    assert aggregate_speed(3, speedup) == pytest.approx(1.7)
    assert aggregate_speed(8, speedup) == pytest.approx(1.6)
    with pytest.raises(ValueError):
        Engine(cores=None, speedup=speedup)  # factors only for shared cores


def test_sleep_uses_no_core_and_events_release_waiters():
    engine = Engine(cores=1)
    log = {}
    gate = engine.rendezvous("gate", 2)

    def sleeper():
        yield Sleep(1.0)  # sleeping beside a computing task does not slow it
        engine.rendezvous("gate", 2)
        log["sleeper"] = engine.now

    def worker():
        yield Cpu(0.5)
        yield Wait(gate)
        log["worker"] = engine.now

    engine.spawn(sleeper())
    engine.spawn(worker())
    engine.run(5.0)
    assert log == {"sleeper": pytest.approx(1.0), "worker": pytest.approx(1.0)}


# ------------------------------------------------------------------------------- strategies vs hand calculation


def test_straggler_free_sync_equals_hand_calculation():
    w = _work(other_s=0.02)
    res = simulate("sync", 4, w, OWN, steps=50)
    step = 0.1 + 0.02 + model.ring_allreduce_s(1e6, 4, LINK)
    assert res.step_s == pytest.approx(step, rel=0.03)
    assert res.samples_per_s == pytest.approx(4 * 10 / step, rel=0.03)


def test_straggler_free_adpsgd_equals_hand_calculation():
    w = _work(gossip_period_s=0.05)
    res = simulate("adpsgd", 4, w, OWN, steps=50)
    assert res.samples_per_s == pytest.approx(4 * 10 / 0.1, rel=0.03)  # compute never waits for gossip
    # one round per period per learner over the whole run (warm-up + measured window, 1.5 x the steps' time)
    assert res.gossip_rounds == pytest.approx(4 * (10 + 50) * 0.1 * 1.5 / 0.05, rel=0.05)


def test_two_x_straggler_slows_sync_to_its_pace_but_adpsgd_only_by_its_share():
    w = _work(stragglers={1: 2.0})
    sync = simulate("sync", 4, w, OWN, steps=50)
    adpsgd = simulate("adpsgd", 4, _work(stragglers={1: 2.0}, gossip_period_s=0.05), OWN, steps=50)
    ar = model.ring_allreduce_s(1e6, 4, LINK)
    assert sync.samples_per_s == pytest.approx(4 * 10 / (0.2 + ar), rel=0.03)
    assert adpsgd.samples_per_s == pytest.approx((3 / 0.1 + 1 / 0.2) * 10, rel=0.03)
    assert adpsgd.steps[1] == pytest.approx(adpsgd.steps[0] / 2, rel=0.05)


def test_shared_cores_make_four_workers_take_twice_per_step():
    w = _work(gossip_period_s=1e6)  # one gossip round at the start, then compute only
    alone = simulate("adpsgd", 2, w, Cluster(cores=2, link=LINK, comm_on_cpu=True), steps=40)
    crowded = simulate("adpsgd", 4, w, Cluster(cores=2, link=LINK, comm_on_cpu=True), steps=40)
    assert alone.step_s == pytest.approx(0.1, rel=0.03)
    assert crowded.step_s == pytest.approx(0.2, rel=0.03)


def test_measured_contention_slows_four_workers_on_two_cores_to_s_of_4():
    w = _work(gossip_period_s=1e6)
    shared = Cluster(cores=2, link=LINK, comm_on_cpu=True, speedup={2: 1.8, 4: 1.5})
    assert simulate("adpsgd", 2, w, shared, steps=40).step_s == pytest.approx(0.1 * 2 / 1.8, rel=0.03)
    assert simulate("adpsgd", 4, w, shared, steps=40).step_s == pytest.approx(0.1 * 4 / 1.5, rel=0.03)


def test_ps_server_contention_grows_with_workers():
    w = _work(pass_s=0.004)
    times = [simulate("ps", n, w, OWN, steps=40).step_s for n in (2, 4, 8, 16)]
    assert times == sorted(times) and times[-1] > 2 * times[0]
    # 16 workers: the server is saturated, each push costs it 2 transfers + the update; rank 0 applies
    # its own gradient directly, at its own pace
    per_push = 2 * model.send_s(1e6, LINK) + 5 * 0.004
    rank0 = 10 / (0.1 + 5 * 0.004)
    assert simulate("ps", 16, w, OWN, steps=40).samples_per_s == pytest.approx(10 / per_push + rank0, rel=0.1)


def test_hybrid_with_one_group_is_sync():
    w = _work(group_size=2)
    hybrid = simulate("hybrid", 2, w, OWN, steps=30)
    sync = simulate("sync", 2, w, OWN, steps=30)
    flag = model.ring_allreduce_s(4, 2, LINK)
    assert 2 * 10 / hybrid.samples_per_s == pytest.approx(2 * 10 / sync.samples_per_s + flag, rel=0.02)
    assert hybrid.gossip_rounds == 0


# ------------------------------------------------------------------------------- calibration and CLI

SETUP = {
    "preset": "demo",
    "params": 2_500_000,
    "param_bytes": 10_000_000,
    "batch_frames": 4000,
    "utts_per_step": 13.5,
    "gossip_period_s": 0.1,
    "group_size": 2,
    "cores": 2,
    "threads_per_worker": 1,
    "steps": 30,
}


def _run(strategy, n, sps):
    return {
        "strategy": strategy,
        "nproc": n,
        "samples_per_s": sps,
        "epoch_s": 100.0,
        "step_s": 13.5 * n / sps,
        "compute_s": 0.3,
        "comm_s": 0.0,
        "exposed_comm_s": 0.0,
        "overlap": 1.0,
    }


def _fixture(path):
    runs = [
        {**_run("single", 1, 42.0), "step_s": 0.32, "compute_s": 0.3},
        _run("sync", 2, 80.0),
        _run("adpsgd", 2, 75.0),
        _run("sync", 4, 79.0),
        _run("adpsgd", 4, 70.0),
        _run("hybrid", 4, 72.0),
        _run("ps", 4, 74.0),
    ]
    path.write_text(
        json.dumps(
            {"command": "dasr bench strategies", "machine": {}, "date": "x", "results": {"setup": SETUP, "runs": runs}}
        )
    )
    return path


def test_machine_model_takes_only_the_single_run(tmp_path):
    results = calibrate.load_strategies(_fixture(tmp_path / "strategies.json"))
    link = {"latency_s": 2e-4, "bandwidth_Bps": 6e8, "pass_s": 1e-3, "allreduce_s": {}}
    work, cluster = calibrate.machine_model(results, link, 0.0, {1: 1.0, 2: 1.8})
    assert (work.compute_s, work.other_s, work.samples_per_step) == (0.3, pytest.approx(0.02), 13.5)
    assert cluster.cores == 2 and cluster.comm_on_cpu and cluster.speedup == {1: 1.0, 2: 1.8}
    assert calibrate.batch_shape(SETUP) == (14, pytest.approx(4000 / 13.5 / 100))


def test_missing_calibration_is_a_clear_error(tmp_path):
    from dasr.errors import DasrError

    with pytest.raises(DasrError, match="dasr bench strategies"):
        calibrate.load_strategies(tmp_path / "none.json")


def test_cli_writes_report_and_summary(tmp_path, monkeypatch):
    from dasr.cli import main

    link = {"latency_s": 2e-4, "bandwidth_Bps": 6e8, "pass_s": 1e-3, "allreduce_s": {65536: 1e-3}}
    monkeypatch.setattr(calibrate, "measure_link", lambda param_bytes, reps: link)
    monkeypatch.setattr(calibrate, "measure_contention", lambda utterances, seconds, window_s: {1: 1.0, 2: 1.8, 4: 1.6})
    cal = _fixture(tmp_path / "strategies.json")
    assert main(["simulate", "--calibration", str(cal), "--out", str(tmp_path), "--learners", "8,16", "--quick"]) == 0
    for ext in ("md", "json", "png"):
        assert (tmp_path / f"simulate.{ext}").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("sim_vs_measured_max_rel_err", "sim_vs_paper_max_rel_err"):
        assert summary[key]["value"] >= 0 and summary[key]["command"].startswith("dasr")
    md = (tmp_path / "simulate.md").read_text()
    assert "Assumptions" in md and "ICASSP 2020" in md and "V100 datasheet" in md
    assert "k=2: 1.80x, k=4: 1.60x" in md
