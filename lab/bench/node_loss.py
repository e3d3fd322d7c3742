"""`dasr bench node-loss`: elastic adpsgd in the network test bed while one whole node is cut off.

Three nodes in network namespaces (:mod:`lab.bench.netns`, 1 Gbit/s links). Node 0 holds the
run's store; nodes 1 and 2 run two workers each (`dasr train --elastic --nnodes 2 --nproc 2`).
``cut_s`` seconds into training one node's link goes down for good. The runs, side by side:

- the store on etcd (a member on every node; a coordinator replica on node 0, which decides
  first, and one in each node's launcher): no cut, node 0 cut (the store's host: an etcd member
  and the deciding replica), node 2 cut (a workers' node);
- the store in a coordinator process on node 0 (a TCPStore), node 0 cut: what etcd removes.

The benchmark watches every node's metrics from outside and timestamps each train record as it
appears: the slots that trained after the cut, the samples/s before and after it, the epochs
reached, the launchers' exit codes; with etcd, how long after the cut a replica on another node
took the decisions over. Each run keeps its ``result.json`` under ``--work``; a rerun skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from dasr.cli import arg
from lab.bench import netns
from lab.bench.etcd import CLIENT_PORT, etcd_commands
from lab.bench.runs import kept_run, require_data
from lab.report import Report, new_figure, publish, sharing
from lab.summary import update_summary

NPROC, WORKER_NODES = 2, (1, 2)
LEASE_S = 5.0
COORDINATOR_PORT = 29600
#: no train record this long after the cut: training has stopped (the run is ended there)
STALLED_S = 120.0
#: a rate after the cut is reported over at least this many seconds (less is the steps in flight at the cut)
MIN_AFTER_S = 10.0
#: (epochs, seconds of training before the cut): quick smoke run, full benchmark
SIZES = {True: (2, 15.0), False: (4, 40.0)}
ARGUMENTS = (
    arg("--model", default="demo", help="model preset (default demo)"),
    arg("--epochs", type=int, default=None, help="epochs per run (default: 2 quick, 4 full)"),
    arg("--cut-s", type=float, default=None, help="seconds of training before the cut (default: 15 quick, 40 full)"),
    arg("--work", default="exp/bench-node-loss", help="keeps each run and its result; a rerun resumes"),
)
#: label, store, the node cut (None: none)
RUNS = (
    ("etcd store, no cut", "etcd", None),
    ("etcd store, node 0 cut (store host, deciding replica)", "etcd", 0),
    ("etcd store, node 2 cut (2 workers)", "etcd", 2),
    ("coordinator's TCPStore on node 0, node 0 cut", "tcp", 0),
)


def start_store(bed: netns.Testbed, kind: str, slots: int, work: Path, lease_s: float = LEASE_S) -> str:
    """The run's store on node 0 (``tcp``: a coordinator process) or on every node (``etcd``: a member
    each, and a coordinator replica on node 0, which leads first); returns its address."""
    log = work / "node0.log"
    if kind == "tcp":
        command = [sys.executable, "-m", "dasr.parallel.membership", str(slots), "--host", bed.address(0)]
        command += ["--port", str(COORDINATOR_PORT), "--lease-s", f"{lease_s:g}"]
        bed.popen(0, command, stdout=log.open("w"), stderr=subprocess.STDOUT)
        return f"{bed.address(0)}:{COORDINATOR_PORT}"
    hosts = [bed.address(i) for i in range(bed.nodes)]
    for node, command in enumerate(etcd_commands(hosts, work / "etcd")):
        bed.popen(node, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = "etcd://" + ",".join(f"{h}:{CLIENT_PORT}" for h in hosts) + "/run"
    replica = [sys.executable, "-m", "dasr.parallel.membership", str(slots), "--store", address]
    bed.popen(0, [*replica, "--lease-s", f"{lease_s:g}"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "in office" not in log.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"node 0's coordinator replica did not take office: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return address


def start_workers(
    bed: netns.Testbed, node: int, node_rank: int, coordinator: str, data: str, exp: Path, options: list[str]
) -> subprocess.Popen:
    """`dasr train --elastic` of ``NPROC`` workers on test-bed node ``node`` (slots ``node_rank * NPROC`` on),
    logging to ``EXP.log`` beside ``exp``; ``options`` go to `dasr train` (``--lease-s`` among them)."""
    command = [sys.executable, "-m", "dasr", "train", "--data", data, "--exp", str(exp), *options]
    command += ["--strategy", "adpsgd", "--elastic", "--coordinator", coordinator]
    command += ["--nnodes", str(len(WORKER_NODES)), "--node-rank", str(node_rank), "--nproc", str(NPROC)]
    env = {"GLOO_SOCKET_IFNAME": bed.interface, "OMP_NUM_THREADS": "1"}
    log = (exp.parent / f"{exp.name}.log").open("w")
    return bed.popen(node, command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _new_records(path: Path, seen: int) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines[seen:] if line.endswith("}")]


def watch(
    launchers: list[subprocess.Popen], exps: list[Path], cut, cut_s: float, cut_off: set[int], timeout_s: float
) -> dict:
    """Timestamp every train record of every node until the launchers end (or ``timeout_s``); call
    ``cut()`` once ``cut_s`` seconds have passed since the first record. The launchers whose index is
    in ``cut_off`` (their node was cut) are not waited for. Returns what was seen."""
    records: list[tuple[float, dict]] = []
    seen = [0] * len(exps)
    first: float | None = None
    cut_at: float | None = None
    cut_wall: float | None = None
    waited = [p for i, p in enumerate(launchers) if i not in cut_off]
    deadline = time.monotonic() + timeout_s
    stalled = False
    while any(p.poll() is None for p in waited) and time.monotonic() < deadline and not stalled:
        now = time.monotonic()
        for i, exp in enumerate(exps):
            new = _new_records(exp / "metrics.jsonl", seen[i])
            seen[i] += len(new)
            records += [(now, r) for r in new if r["kind"] == "train"]
        stalled = cut_at is not None and now - max(cut_at, records[-1][0]) > STALLED_S
        if records and first is None:
            first = records[0][0]
        if first is not None and cut_at is None and now - first >= cut_s:
            cut_at, cut_wall = now, time.time()
            cut()
        time.sleep(0.2)
    timed_out = not stalled and any(p.poll() is None for p in waited)
    codes = [p.poll() for p in launchers]  # None: still running (a cut-off node's), stopped with the test bed
    return {
        "records": records,
        "first": first,
        "cut_at": cut_at,
        "cut_wall": cut_wall,
        "timed_out": timed_out,
        "stalled": stalled,
        "codes": codes,
    }


def _rate(records: list[tuple[float, dict]], start: float, end: float) -> float | None:
    """Samples per second of the train records that appeared from ``start`` to ``end``."""
    inside = [r for t, r in records if start <= t <= end]
    return sum(r["utts_per_step"] for r in inside) / (end - start) if inside and end > start else None


def _took_office_s(logs: list[Path], cut_wall: float | None) -> float | None:
    """Seconds from the cut to the first "in office" line of a replica on a worker node after it."""
    times = []
    for log in logs:
        for line in log.read_text().splitlines() if log.exists() else []:
            if "coordinator in office" in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if cut_wall is not None and stamp >= cut_wall:
                    times.append(stamp - cut_wall)
    return min(times) if times else None


def one_run(data: str, store: str, cut_node: int | None, options: list[str], cut_s: float, work: Path) -> dict:
    """One run in a fresh test bed: the store, both worker nodes, the cut; its summary."""
    exps = [work / f"node{n}" for n in WORKER_NODES]
    with netns.Testbed(3, 1000) as bed:
        address = start_store(bed, store, NPROC * len(WORKER_NODES), work)
        launchers = [start_workers(bed, n, r, address, data, exps[r], options) for r, n in enumerate(WORKER_NODES)]

        def cut() -> None:
            if cut_node is not None:
                bed.set_link(cut_node, up=False)

        cut_off = {i for i, n in enumerate(WORKER_NODES) if n == cut_node}
        seen = watch(launchers, exps, cut, cut_s, cut_off, timeout_s=1800)
    # the takeover is timed where node 0's deciding replica is cut off (elsewhere a replica takes office at the end)
    logs = [e.parent / f"{e.name}.log" for e in exps] if store == "etcd" and cut_node == 0 else []
    return {"store": store, "cut_node": cut_node, **summarise(seen, logs)}


def summarise(seen: dict, logs: list[Path]) -> dict:
    """What a run came to, from what :func:`watch` saw and the worker nodes' logs."""
    records, cut_at = seen["records"], seen["cut_at"]
    last = records[-1][0] if records else 0.0
    after = [r for t, r in records if cut_at is not None and t > cut_at]
    return {
        "exit_codes": seen["codes"],
        "timed_out": seen["timed_out"],
        "stalled": seen["stalled"],
        "slots_after_cut": sorted({r["rank"] for r in after}),
        "last_epoch": max((r["epoch"] for _, r in records), default=None),
        "trained_s_after_cut": (last - cut_at) if after and cut_at else 0.0,
        "samples_per_s_before": _rate(records, seen["first"] or 0.0, cut_at or last),
        "samples_per_s_after": _rate(records, cut_at, last) if cut_at else None,
        "took_office_s": _took_office_s(logs, seen["cut_wall"]),
    }


def measure(data: str, model: str, epochs: int, cut_s: float, work: Path) -> dict:
    """Every run of :data:`RUNS`, one after the other; a run with a ``result.json`` under ``work`` is kept."""
    reason = netns.available()
    if reason:
        raise RuntimeError(f"dasr bench node-loss needs the network test bed: {reason}")
    options = ["--model", model, "--epochs", str(epochs), "--eval-every-epochs", str(epochs), "--log-every", "1"]
    options += ["--batch-frames", "2000", "--lease-s", f"{LEASE_S:g}"]
    out = []
    for i, (label, store, cut_node) in enumerate(RUNS):
        summary = kept_run(work / f"run{i}", lambda d, s=store, c=cut_node: one_run(data, s, c, options, cut_s, d))
        out.append({"label": label, **summary})
        print(f"  {label}: exit {summary['exit_codes']}, slots after the cut {summary['slots_after_cut']}", flush=True)
    return {"model": model, "epochs": epochs, "cut_s": cut_s, "lease_s": LEASE_S, "runs": out}


def headline(results: dict) -> dict:
    """Whether training went on past each node's loss (all four slots, or the cut node's survivors)."""
    by_cut = {(r["store"], r["cut_node"]): r for r in results["runs"]}
    host, workers = by_cut.get(("etcd", 0)), by_cut.get(("etcd", 2))
    return {
        "elastic_store_host_loss_survived": bool(
            host and host["exit_codes"] == [0, 0] and host["slots_after_cut"] == [0, 1, 2, 3]
        ),
        "elastic_worker_node_loss_survived": bool(
            workers and workers["exit_codes"][0] == 0 and {0, 1} <= set(workers["slots_after_cut"])
        ),
        "elastic_store_takeover_s": host["took_office_s"] if host else None,
    }


def render(results: dict, report: Report):
    """The report's setup, the table of runs and the throughput figure."""
    slots = NPROC * len(WORKER_NODES)
    report.add(
        "Setup",
        f"3 nodes in network namespaces on one machine, 1 Gbit/s links: node 0 holds the store, nodes 1 and 2 "
        f"run {NPROC} workers each ({sharing(slots, report.machine['cores'])}; the etcd members and coordinator "
        f"replicas too). `{results['model']}` model, {results['epochs']} epochs, lease {results['lease_s']:g} s. "
        f"The cut: `ip link set eth0 down` in the node's namespace {results['cut_s']:.0f} s into training, for good. "
        "A node cut off with its etcd member is the minority: its workers stop at their next store operation, and "
        "only the other node's launcher is waited for.",
    )
    rows = "| run | launchers' exit | trained on after the cut, s | last epoch | samples/s before the cut | after | "
    rows += "replica in office after the cut, s |\n|---|---|---|---|---|---|---|\n"
    for r in results["runs"]:
        fmt = lambda x, spec=".1f": "-" if x is None else format(x, spec)  # noqa: E731
        timed = " (killed at the time limit)" if r["timed_out"] else ""
        timed = f" (no step for {STALLED_S:.0f} s: ended there)" if r.get("stalled") else timed
        codes = ", ".join("still running" if c is None else str(c) for c in r["exit_codes"])
        after = r["samples_per_s_after"] if r["trained_s_after_cut"] >= MIN_AFTER_S else None  # not steps in flight
        rows += f"| {r['label']} | {codes}{timed} | {r['trained_s_after_cut']:.1f} | {r['last_epoch']} | "
        rows += f"{fmt(r['samples_per_s_before'])} | {fmt(after)} | {fmt(r['took_office_s'])} |\n"
    report.add("Runs", rows)
    report.add("Headline", f"`{json.dumps(headline(results))}`")
    fig, axes = new_figure(1, width_per_panel=7.0)
    labels = [r["label"] for r in results["runs"]]
    positions = range(len(labels))
    axes[0].barh(
        [p + 0.2 for p in positions],
        [r["samples_per_s_before"] or 0 for r in results["runs"]],
        0.4,
        label="before the cut",
    )
    axes[0].barh(
        [p - 0.2 for p in positions],
        [r["samples_per_s_after"] or 0 for r in results["runs"]],
        0.4,
        label="after the cut",
    )
    axes[0].set_yticks(list(positions), labels)
    axes[0].set_xlabel("samples/s of all workers")
    axes[0].legend()
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench node-loss`: measure, publish node-loss.md/.json/.png and the summary's figures."""
    data = require_data(args.data, "node-loss")
    epochs, cut_s = SIZES[args.quick]
    results = measure(
        data, args.model, args.epochs or epochs, args.cut_s if args.cut_s is not None else cut_s, Path(args.work)
    )
    report = publish("node-loss", "Elastic adpsgd when a whole node is cut off", command, results, render, args.out)
    update_summary(args.out, headline(results), report)
    return results
