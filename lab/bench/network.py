"""`dasr bench network`: every strategy on K nodes in network namespaces joined by rate-limited links.

Each node is a namespace of :class:`lab.bench.netns.Testbed` (a veth to a bridge, shaped with
tbf in both directions; no delay emulation: netem does not work on this kernel). Every node runs
one worker with one torch thread, started as a user would start it on a real cluster::

    ip netns exec NODE env GLOO_SOCKET_IFNAME=eth0 python -m dasr train --nproc 1 \\
        --nnodes K --node-rank r --rdzv-endpoint 198.18.0.1:29400 ...

The rendezvous store and rank 0's store bind to node 0's address, and gloo uses the node's
veth, so every byte between workers crosses the shaped links (the interface byte counters are
recorded per run). All K workers share this machine's cores.

Every run trains the `demo` model for the same budget of training seconds in time mode
(``--train-seconds``, ``--eval-every-s``). Per setting (K, link rate) the strategies run one
after the other, every other setting in reverse order; the time to a common dev target uses
the lowest dev loss (or WER, see :func:`lab.bench.stragglers.common_target`) every strategy of
that setting reached. A one-worker run of the same options, outside the test bed, calibrates
the simulator (:mod:`lab.sim.network`), which predicts every row from the link rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dasr.errors import DasrError
from dasr.parallel import STRATEGIES as AVAILABLE
from dasr.train.plots import read_metrics
from lab.bench import netns
from lab.bench.netns import Testbed
from lab.bench.runs import TrainRun, summarise, time_to_target, train
from lab.bench.stragglers import common_target
from lab.bench.strategies import num_parameters_of_demo
from lab.report import Report, machine_info, new_figure, plot_evals, publish, sharing, table, verdict
from lab.sim import calibrate
from lab.sim import network as simnet
from lab.sim.model import fit_link
from lab.summary import update_summary

#: (nodes, link rates in Mbit/s, strategies): quick smoke run, full benchmark
SETTINGS = {
    True: ((2,), (50,), ("sync", "adpsgd")),
    False: ((2, 4), (1000, 200, 50), ("sync", "adpsgd", "hybrid", "localsgd", "ps")),
}
#: (training seconds per run, seconds between evaluations)
SIZES = {True: (20, 10), False: (75, 15)}
BATCH_FRAMES = 4000
GOSSIP_PERIOD_S = 0.5
#: localsgd: steps between two exact averagings (the strategy's default)
LOCALSGD_PERIOD = 8
#: hybrid: a group is 2 nodes (one worker each), so hybrid runs at K = 4 only (at K = 2 it would be sync)
GROUP_SIZE = 2
#: train records before this step are warm-up
SKIP_STEPS = 2
RDZV_PORT = 29400
#: a run that takes longer than its training budget plus this is stopped
RUN_OVERHEAD_LIMIT_S = 300
#: the rates of the headline figures
HEADLINE = (4, 50)
TITLE = "Every strategy over rate-limited links (network namespaces)"


def train_options(strategy: str, train_s: float, eval_s: float) -> list[str]:
    """The `dasr train` options every run shares (SGD, as ps needs), plus hybrid's group size."""
    options = ["--config", "demo", "--optimizer", "sgd", "--lr", "0.05", "--batch-frames", str(BATCH_FRAMES)]
    options += ["--train-seconds", str(train_s), "--eval-every-s", str(eval_s), "--log-every", "1"]
    options += ["--checkpoint-every", "0", "--gossip-period-s", str(GOSSIP_PERIOD_S)]
    if strategy == "hybrid":
        options += ["--group-size", str(GROUP_SIZE)]
    if strategy == "localsgd":
        options += ["--localsgd-period", str(LOCALSGD_PERIOD)]
    return options


def train_on_testbed(bed: Testbed, run: TrainRun, data_dir: str, exp_dir: Path, timeout_s: float) -> dict:
    """``run`` with one worker in each node of ``bed``; its :func:`~lab.bench.runs.summarise` plus link bytes.

    Node 0 starts first (it writes the experiment dir and hosts the rendezvous); the others follow
    once its config is written. Every node logs to ``exp_dir.parent/<name>.node<r>.log``.

    Raises:
        DasrError: a node failed or the run exceeded ``timeout_s`` (the failing node's log tail is in the message).
    """
    before = [bed.counters(i) for i in range(bed.nodes)]
    env = {"GLOO_SOCKET_IFNAME": bed.interface, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    endpoint = f"{bed.address(0)}:{RDZV_PORT}"
    logs, procs = [], []
    deadline = time.monotonic() + timeout_s
    try:
        for r in range(bed.nodes):
            cmd = run.command(data_dir, exp_dir) + ["--nnodes", str(bed.nodes), "--node-rank", str(r)]
            logs.append(exp_dir.parent / f"{exp_dir.name}.node{r}.log")
            with open(logs[-1], "w") as log:
                procs.append(bed.popen(r, cmd + ["--rdzv-endpoint", endpoint], env, stdout=log, stderr=log))
            while r == 0 and not (exp_dir / "config.yaml").exists() and procs[0].poll() is None:
                time.sleep(0.1)
        for r, proc in enumerate(procs):
            try:
                code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DasrError(f"run {run.label!r} did not finish within {timeout_s:.0f} s") from None
            if code != 0:
                tail = logs[r].read_text()[-1500:]
                raise DasrError(f"run {run.label!r} failed on node {r} (exit {code}): {tail}")
    finally:
        bed.stop_processes()
    after = [bed.counters(i) for i in range(bed.nodes)]
    summary = summarise(read_metrics(exp_dir), SKIP_STEPS)
    summary["link_bytes"] = [{k: a[k] - b[k] for k in ("rx_bytes", "tx_bytes")} for a, b in zip(after, before)]
    summary.update(label=run.label, strategy=run.strategy, nproc=bed.nodes, options=run.options)
    return summary


#: message sizes of the link probe in bytes (the model's size is added)
PROBE_SIZES = (1 << 20, 4 << 20)
#: what each node of the link probe runs: gloo all-reduces over the two nodes; node 0 prints the medians
_PROBE = """import json, sys
from dasr.parallel.launch import launch
from lab.sim.calibrate import allreduce_worker
sizes, reps, rank, endpoint = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = launch(allreduce_worker, (sizes, reps), nnodes=2, node_rank=rank, rdzv_endpoint=endpoint, run_id="probe")
print(json.dumps(out.get(0)))
"""


def probe_link(bed: Testbed, param_bytes: int, reps: int = 3) -> dict:
    """Gloo all-reduces between nodes 0 and 1 of ``bed`` at a few sizes, and the link fitted to them.

    Returns:
        ``{"allreduce_s": {bytes: median seconds}, "latency_s", "bandwidth_Bps", "goodput_mbit"}`` (the last:
        one TCP stream, no gloo).
    """
    sizes = sorted({*PROBE_SIZES, param_bytes})
    env = {"GLOO_SOCKET_IFNAME": bed.interface, "OMP_NUM_THREADS": "1"}
    endpoint = f"{bed.address(0)}:{RDZV_PORT}"
    args = [json.dumps(sizes), str(reps)]
    procs = [
        bed.popen(r, [sys.executable, "-c", _PROBE, *args, str(r), endpoint], env, stdout=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    try:
        out = [p.communicate(timeout=300)[0] for p in procs]
    except subprocess.TimeoutExpired:
        raise DasrError("the link probe did not finish within 300 s") from None
    finally:
        bed.stop_processes()
    if any(p.returncode for p in procs):
        raise DasrError(f"the link probe failed (exit codes {[p.returncode for p in procs]})")
    times = {int(k): v for k, v in json.loads(out[0].strip().splitlines()[-1]).items()}
    fitted = fit_link(list(times), list(times.values()), ranks=2)
    return {
        "allreduce_s": times,
        "latency_s": fitted.latency_s,
        "bandwidth_Bps": fitted.bandwidth_Bps,
        "goodput_mbit": bed.goodput_mbit(1, 0),
    }


def strategies_for(nodes: int, wanted: tuple[str, ...]) -> list[str]:
    """The wanted strategies that exist (``dasr.parallel.STRATEGIES``) and make sense at ``nodes``."""
    return [s for s in wanted if s in AVAILABLE and not (s == "hybrid" and (nodes % GROUP_SIZE or nodes <= GROUP_SIZE))]


def reference(data_dir: str, work: Path, train_s: float, eval_s: float) -> dict:
    """One worker alone (no test bed, no communication): the simulator's calibration."""
    run = TrainRun("single x1", "single", 1, train_options("single", train_s, eval_s))
    summary = train(run, data_dir, work / "single", SKIP_STEPS)
    print(f"  reference single x1: {summary['samples_per_s']:.2f} samples/s, compute {summary['compute_s']:.3f} s/step")
    return summary


def measure(data_dir: str, work: Path, quick: bool, failed: list[dict], links: dict) -> list[dict]:
    """Every (K, rate, strategy) of the settings; one summary per run.

    Failed runs go to ``failed``; the first test bed of every rate is probed first (:func:`probe_link`, into ``links``).
    """
    param_bytes = 4 * num_parameters_of_demo()
    node_counts, rates, wanted = SETTINGS[quick]
    train_s, eval_s = SIZES[quick]
    runs = []
    setting = 0
    for nodes in node_counts:
        for rate in rates:
            order = strategies_for(nodes, wanted)
            order = order[::-1] if setting % 2 else order
            setting += 1
            with Testbed(nodes, rate) as bed:
                if f"{rate:g}" not in links:
                    links[f"{rate:g}"] = probe = probe_link(bed, param_bytes)
                    print(
                        f"  link at {rate} Mbit/s: gloo all-reduce of the model {probe['allreduce_s'][param_bytes]:.3f} s, "
                        f"fitted {8 * probe['bandwidth_Bps'] / 1e6:.1f} Mbit/s; one TCP stream {probe['goodput_mbit']:.1f} Mbit/s",
                        flush=True,
                    )
                for strategy in order:
                    run = TrainRun(
                        f"{strategy} K={nodes} {rate} Mbit/s", strategy, 1, train_options(strategy, train_s, eval_s)
                    )
                    exp = work / f"k{nodes}-{rate}mbit-{strategy}"
                    start = time.monotonic()
                    try:
                        summary = train_on_testbed(bed, run, data_dir, exp, train_s + RUN_OVERHEAD_LIMIT_S)
                    except DasrError as e:  # one failed setting must not cost the others: reported as failed
                        print(f"  {run.label}: FAILED: {e}", flush=True)
                        failed.append({"label": run.label, "error": str(e)[-1500:]})
                        continue
                    summary.update(rate_mbit=rate, wall_s=time.monotonic() - start, loadavg=os.getloadavg()[0])
                    runs.append(summary)
                    print(f"  {run.label}: {describe(summary, param_bytes)}", flush=True)
    return runs


def describe(run: dict, param_bytes: int) -> str:
    """One run in a line: samples/s, exposed communication, and its compute/communication ratio with its inputs."""
    sent = sum(b["tx_bytes"] for b in run["link_bytes"]) / 1e6
    wire = transfer_s(param_bytes, run["rate_mbit"])
    return (
        f"{run['samples_per_s']:.2f} samples/s, exposed comm {run['exposed_comm_s']:.3f} s/step, {sent:.0f} MB "
        f"over the links; model {param_bytes / 1e6:.1f} MB at {run['rate_mbit']} Mbit/s = {wire:.3f} s per copy, "
        f"step {run['step_s']:.3f} s, compute {run['compute_s']:.3f} s: compute/communication {run['compute_s'] / wire:.2f}"
    )


def add_times_to_target(runs: list[dict]) -> dict:
    """Per setting (K, rate): the common target and each run's time to it (``time_to_target_s``)."""
    targets = {}
    for key in dict.fromkeys((r["nproc"], r["rate_mbit"]) for r in runs):
        mine = [r for r in runs if (r["nproc"], r["rate_mbit"]) == key and r["evals"]]
        if not mine:
            continue
        metric, target = common_target(mine)
        targets[key] = (metric, target)
        for r in mine:
            r["target_metric"], r["target"] = metric, target
            r["time_to_target_s"] = time_to_target(r["evals"], target, metric, 1.0 if metric == "dev_wer" else None)
    return targets


def transfer_s(param_bytes: int, rate_mbit: float) -> float:
    """Seconds to move the model's bytes once over a link of ``rate_mbit``."""
    return param_bytes * 8 / (rate_mbit * 1e6)


def add_predictions(results: dict) -> float | None:
    """The simulator's samples/s for every run (``simulated_samples_per_s``, ``rel_err``); the largest error."""
    runs = results["runs"]
    rows = simnet.compare(results, [(r["strategy"], r["nproc"], r["rate_mbit"]) for r in runs])
    for r, row in zip(runs, rows):
        r.update({k: v for k, v in row.items() if k.startswith(("simulated", "measured_compute", "rel_err"))})
    return max((r["rel_err"] for r in runs), default=None)


def ratio(runs: list[dict], key: tuple[int, int], field: str, numerator: str, denominator: str) -> float | None:
    """``field`` of ``numerator`` ÷ that of ``denominator`` at setting ``key`` (None where either is missing)."""
    at = {r["strategy"]: r.get(field) for r in runs if (r["nproc"], r["rate_mbit"]) == key}
    a, b = at.get(numerator), at.get(denominator)
    return a / b if a and b else None


def setup_of(quick: bool, cores: int, load_before: tuple, load_after: tuple) -> dict:
    """The settings every run of this benchmark shared, as the report states them."""
    node_counts, rates, wanted = SETTINGS[quick]
    train_s, eval_s = SIZES[quick]
    return {
        "preset": "demo",
        "param_bytes": 4 * num_parameters_of_demo(),
        "batch_frames": BATCH_FRAMES,
        "train_seconds": train_s,
        "eval_every_s": eval_s,
        "gossip_period_s": GOSSIP_PERIOD_S,
        "hybrid_group_size": GROUP_SIZE,
        "localsgd_period": LOCALSGD_PERIOD,
        "nodes": list(node_counts),
        "rates_mbit": list(rates),
        "cores": cores,
        "threads_per_worker": 1,
        "workers_per_node": 1,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "missing_strategies": [s for s in wanted if s not in AVAILABLE],
    }


def measure_all(data_dir: str | None, quick: bool, work: Path) -> dict:
    """The reference run, the CPU contention and every run on the test bed (``data_dir`` None: synthesise one)."""
    train_s, eval_s = SIZES[quick]
    if data_dir is None:
        from lab.workload import synthesize

        data_dir = str(work / "corpus")
        synthesize(data_dir, quick)
    single = reference(data_dir, work, train_s, eval_s)
    setup = {"utts_per_step": single["utts_per_step"], "batch_frames": BATCH_FRAMES}
    speedup = calibrate.measure_contention(*calibrate.batch_shape(setup), window_s=2.0 if quick else 3.0)
    failed: list[dict] = []
    links: dict = {}
    runs = measure(data_dir, work, quick, failed, links)
    return {"reference_single": single, "contention_speedup": speedup, "links": links, "runs": runs, "failed": failed}


def run(data_dir: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the network benchmark; write ``network.md/.json/.png`` and, for the full run, the summary's figures."""
    reason = netns.available()
    if reason:
        raise DasrError(f"dasr bench network: {reason}")
    machine = machine_info()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dasr-bench-net-") as tmp:
        measured = measure_all(data_dir, quick, Path(tmp))
    results = {"setup": setup_of(quick, machine["cores"], load_before, os.getloadavg()), **measured}
    headline = analyse(results)
    report = publish("network", TITLE, command, results, render, out_dir, machine=machine)
    if not quick:
        update_summary(out_dir, headline, report)
    return results


def analyse(results: dict) -> dict:
    """Add times to target, predictions and compute/communication ratios to ``results``; return the headline figures."""
    runs, param_bytes = results["runs"], results["setup"]["param_bytes"]
    targets = add_times_to_target(runs)
    results["targets"] = {f"K={k} {rate} Mbit/s": {"metric": m, "target": t} for (k, rate), (m, t) in targets.items()}
    max_err = add_predictions(results)
    for r in runs:
        r["transfer_s"] = transfer_s(param_bytes, r["rate_mbit"])
        r["compute_over_comm"] = r["compute_s"] / r["transfer_s"]
    headline = {
        "network_50mbit_k4_throughput_ratio_adpsgd_vs_sync": ratio(runs, HEADLINE, "samples_per_s", "adpsgd", "sync"),
        "network_50mbit_k4_time_to_target_ratio_sync_over_adpsgd": ratio(
            runs, HEADLINE, "time_to_target_s", "sync", "adpsgd"
        ),
        "sim_vs_network_measured_max_rel_err": max_err,
    }
    results.update(headline)
    return headline


def _fmt(x: float | None, spec: str = ".2f", none: str = "–") -> str:
    return none if x is None else format(x, spec)


def render(results: dict, report: Report):
    """network.md's sections and figure, from the ``results`` alone (see :func:`run`)."""
    report.add("Setup", _setup_text(results["setup"]))
    report.add("Links as measured", _links_text(results))
    report.add("Results", _results_text(results))
    lines = _goal_lines(results) + _slowest_lines(results) + _calibration_lines(results)
    if results["failed"]:
        lines.append("- failed runs: " + "; ".join(f"{f['label']}: {f['error'][-300:]}" for f in results["failed"]))
    report.add("Headline", "\n".join(lines) or "No K = 4 rows (quick run).")
    return _figure(results)


def _loadavg(values: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in values)


def _setup_text(setup: dict) -> str:
    kmax, mb = max(setup["nodes"]), setup["param_bytes"] / 1e6
    missing = setup["missing_strategies"]
    return (
        f"K nodes = K Linux network namespaces, each with one veth to a bridge in a switch namespace, addresses "
        f"198.18.0.0/24 (RFC 2544 benchmarking range, existing only inside the namespaces). Every link is shaped "
        f"with `tc qdisc ... tbf` in both directions (node egress and the switch port's egress), bucket 10 ms of "
        f"traffic, queue 50 ms. **No delay is emulated**: `netem` does not work on this kernel, so a link has a rate "
        f"but no latency beyond the veth's. One worker per node with one torch thread; at K = {kmax} the "
        f"{sharing(kmax, setup['cores'])} (all on this one machine). Each node runs `dasr train "
        f"--nnodes K --node-rank r --rdzv-endpoint 198.18.0.1:{RDZV_PORT}` inside its namespace with "
        f"`GLOO_SOCKET_IFNAME=eth0`; the rendezvous and rank 0's store bind to node 0's address.\n\n"
        f"`demo` model ({mb:.1f} MB of float32 parameters), SGD lr 0.05, {setup['batch_frames']} padded frames per "
        f"worker step; every run trains {setup['train_seconds']} s of training time (time mode), evaluating every "
        f"{setup['eval_every_s']} s; the first {SKIP_STEPS} steps are not counted in samples/s. adpsgd gossips "
        f"every {setup['gossip_period_s']} s; hybrid: a group is {setup['hybrid_group_size']} nodes with one worker "
        f"each (sync over the links inside a group, gossip between groups), so it runs at K = 4 only (at K = 2 it "
        f"would be sync). Load average (1/5/15 min) before: {_loadavg(setup['loadavg_before'])}, after: "
        f"{_loadavg(setup['loadavg_after'])}; the machine is shared with other jobs."
        + (f"\n\nNot measured: {', '.join(missing)} (not among this tree's strategies)." if missing else "")
    )


def _links_text(results: dict) -> str:
    setup = results["setup"]
    rows = [
        [
            f"{rate} Mbit/s",
            " / ".join(f"{t:.3f}" for _, t in sorted((int(b), t) for b, t in p["allreduce_s"].items())),
            f"{8 * p['bandwidth_Bps'] / 1e6:.1f}",
            f"{p['goodput_mbit']:.1f}",
        ]
        for rate, p in results.get("links", {}).items()
    ]
    header = [
        "link",
        "gloo all-reduce of 1 / 4 MB / the model (2 nodes), s",
        "fitted, Mbit/s",
        "one TCP stream, Mbit/s",
    ]
    return (
        table(header, rows)
        + f"\n\nEach rate's link probed between two nodes (gloo all-reduce medians of 3; the model is "
        f"{setup['param_bytes'] / 1e6:.1f} MB); the simulator uses the fitted bandwidth and latency. "
        + setup.get("link_probe_note", "Probed on the first test bed of each rate, before its runs.")
    )


#: the columns of the results table
RESULT_COLUMNS = [
    "K",
    "link",
    "strategy",
    "samples/s",
    "simulated",
    "error",
    "link model alone",
    "error",
    "step, s",
    "compute, s",
    "exposed comm, s/step",
    "compute ÷ model transfer",
    "time to target, s",
    "MB sent over links",
]


def _result_row(r: dict) -> list[str]:
    return [
        r["nproc"],
        f"{r['rate_mbit']} Mbit/s",
        r["strategy"],
        f"{r['samples_per_s']:.2f}",
        f"{r['simulated_samples_per_s']:.2f}",
        f"{r['rel_err']:.0%}",
        f"{r['measured_compute_simulated_samples_per_s']:.2f}",
        f"{r['measured_compute_rel_err']:.0%}",
        f"{r['step_s']:.2f}",
        f"{r['compute_s']:.2f}",
        f"{r['exposed_comm_s']:.2f}",
        f"{r['compute_over_comm']:.2f}",
        _fmt(r.get("time_to_target_s"), ".0f", "not reached"),
        f"{sum(b['tx_bytes'] for b in r['link_bytes']) / 1e6:.0f}",
    ]


def _results_text(results: dict) -> str:
    targets = "; ".join(
        f"{k}: {t['metric'].replace('_', ' ')} {t['target']:.3g}" for k, t in results["targets"].items()
    )
    contention = ", ".join(f"k={k}: {s:.2f}" for k, s in results["contention_speedup"].items())
    return (
        table(RESULT_COLUMNS, [_result_row(r) for r in results["runs"]])
        + f"\n\n*compute ÷ model transfer*: the worker's compute per step over the time one copy of the model "
        f"({results['setup']['param_bytes'] / 1e6:.1f} MB) takes on the link (the compute/communication ratio; below "
        f"1 the link, not the CPU, bounds a step that moves the whole model). *Simulated*: `lab.sim.network` with the "
        f"link rate as input, calibrated on a one-worker run of the same options outside the test bed "
        f"({results['reference_single']['compute_s']:.3f} s compute per step) and the measured CPU contention "
        f"(aggregate speed of k processes: {contention}). *Link model alone*: "
        f"the same simulator fed each run's own measured compute per step (which already holds the CPU sharing "
        f"and the machine's background load at that time) and the link rate: its error is the network model's, "
        f"without the drift of the machine's load since the reference run. Common targets "
        f"(the lowest value every strategy of the setting reached): {targets}."
    )


def _goal_lines(results: dict) -> list[str]:
    """The headline ratios and the simulator's largest error, each against its goal."""
    tp = results["network_50mbit_k4_throughput_ratio_adpsgd_vs_sync"]
    tt = results["network_50mbit_k4_time_to_target_ratio_sync_over_adpsgd"]
    err = results["sim_vs_network_measured_max_rel_err"]
    lines = []
    if tp is not None:
        lines.append(f"- adpsgd ÷ sync samples/s at 50 Mbit/s, K = 4: **{tp:.2f}** (goal ≥ 2: {verdict(tp >= 2)}).")
    if tt is not None:
        lines.append(
            f"- sync ÷ adpsgd time to target at 50 Mbit/s, K = 4: **{tt:.2f}** (goal ≥ 1.5: {verdict(tt >= 1.5)})."
        )
    if err is not None:
        lines.append(
            f"- simulator vs measured samples/s, largest error over all rows: **{err:.0%}** (goal ≤ 15 %: "
            f"{verdict(err <= 0.15)})."
        )
    return lines


def _slowest(results: dict) -> tuple[int, float]:
    """The setting (K, rate) with the most nodes on the slowest link."""
    return max(results["setup"]["nodes"]), min(results["setup"]["rates_mbit"])


def _slowest_lines(results: dict) -> list[str]:
    """Every strategy of the slowest setting by samples/s, and its time to the common target."""
    slowest = _slowest(results)
    at = [r for r in results["runs"] if (r["nproc"], r["rate_mbit"]) == slowest]
    if not at:
        return []
    at.sort(key=lambda r: -r["samples_per_s"])
    first_eval = min(e["train_s"] for r in at for e in r["evals"])
    return [
        f"- every strategy at K = {slowest[0]}, {slowest[1]} Mbit/s, by samples/s: "
        + " > ".join(f"{r['strategy']} {r['samples_per_s']:.1f}" for r in at)
        + "; time to the common target: "
        + ", ".join(f"{r['strategy']} {_fmt(r.get('time_to_target_s'), '.0f', 'not reached')} s" for r in at)
        + f" (a run at the target by its first evaluation, ~{first_eval:.0f} s, shows that time: its true time "
        "is at most that)."
    ]


def _calibration_lines(results: dict) -> list[str]:
    """Where the simulator missed: the reference run's compute against the runs', and the link model alone."""
    runs, err, lines = results["runs"], results["sim_vs_network_measured_max_rel_err"], []
    if err is not None and err > 0.15:
        ref, own = results["reference_single"]["compute_s"], [r["compute_s"] for r in runs]
        lines.append(
            f"- the one-worker reference run the simulator is calibrated on took {ref:.2f} s of compute per step; the "
            f"runs' workers, K of them sharing the cores with each other and with other jobs, took "
            f"{min(own):.2f}–{max(own):.2f} s. The next line checks the network model with each run's own compute."
        )
    if runs:
        alone = max(r["measured_compute_rel_err"] for r in runs)
        lines.append(f"- the link model alone (each run's own compute time as input): largest error **{alone:.0%}**.")
    return lines


def _figure(results: dict):
    """Throughput against link rate per strategy and K; the dev curves of the slowest setting."""
    setup, runs = results["setup"], results["runs"]
    fig, (ax1, ax2) = new_figure(2, width_per_panel=5.5)
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        for k, style in zip(setup["nodes"], ("--", "-")):
            mine = sorted(
                (r for r in runs if r["strategy"] == strategy and r["nproc"] == k), key=lambda r: r["rate_mbit"]
            )
            if mine:
                rates, speeds = [r["rate_mbit"] for r in mine], [r["samples_per_s"] for r in mine]
                ax1.plot(rates, speeds, style, marker="o", label=f"{strategy} K={k}")
    ax1.set_xscale("log")
    ax1.set_xlabel("link rate, Mbit/s")
    ax1.set_ylabel("samples/s, all workers")
    ax1.set_title(f"throughput ({setup['cores']} cores shared)", fontsize=10)
    ax1.legend(fontsize=6)
    slowest = _slowest(results)
    at = [r for r in runs if (r["nproc"], r["rate_mbit"]) == slowest and r["evals"]]
    plot_evals(ax2, at, at[0].get("target_metric", "dev_loss") if at else "dev_loss")
    ax2.set_xlabel("training time, s")
    ax2.set_ylabel("dev loss / WER (the target's metric)")
    ax2.set_title(f"K = {slowest[0]}, {slowest[1]} Mbit/s", fontsize=10)
    ax2.legend(fontsize=7)
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench network`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command)
