"""The simulator with link rates as inputs: this machine's workers, one per node, joined by links of ``rate_mbit``.

What `dasr bench network` builds: every node has its own link to a switch, shaped to the rate in
both directions (tbf, no delay), so a transfer between two nodes runs at the rate per direction,
full duplex, and disjoint pairs do not share a link. The transfers wait on the wire (wall time),
not on the CPU: at these rates gloo's own CPU work is a small fraction of a transfer. The
workers' compute shares the machine's cores at the measured contention::

    work = reference_workload(single_run, param_bytes, pass_s, gossip_period_s=0.5, group_size=2)
    predict("adpsgd", nodes=4, rate_mbit=50, work=work, cores=2, speedup={1: 1.0, 2: 1.9, 4: 1.9})

or, calibrated on a `dasr bench network` run (``dasr simulate --link-mbit 1000,200,50``)::

    compare(load_bench("docs/results/network.json"), [("sync", 4, 50), ("adpsgd", 4, 50)])
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from dasr.errors import DasrError
from lab.sim import calibrate
from lab.sim.cluster import Cluster, Result, Workload, simulate
from lab.sim.model import Link

#: per-message latency of a veth + bridge hop (no delay is emulated: netem does not work on this kernel)
VETH_LATENCY_S = 50e-6
#: step-to-step variation of a worker's compute (batches of equal padded frames; as in `dasr simulate`)
COMPUTE_CV = 0.05


def link(rate_mbit: float) -> Link:
    """A test-bed link of ``rate_mbit`` megabits per second per direction."""
    if rate_mbit <= 0:
        raise ValueError(f"link rate must be > 0 Mbit/s, got {rate_mbit}")
    return Link(VETH_LATENCY_S, rate_mbit * 1e6 / 8)


def reference_workload(
    single: dict, param_bytes: int, pass_s: float, gossip_period_s: float, group_size: int, average_period: int = 8
) -> Workload:
    """A learner's step from a one-worker reference run's summary (``compute_s``, ``step_s``, ``utts_per_step``)."""
    return Workload(
        compute_s=single["compute_s"],
        other_s=max(single["step_s"] - single["compute_s"], 0.0),
        samples_per_step=single["utts_per_step"],
        param_bytes=param_bytes,
        pass_s=pass_s,
        compute_cv=COMPUTE_CV,
        gossip_period_s=gossip_period_s,
        group_size=group_size,
        average_period=average_period,
    )


def probed_link(results: dict, rate_mbit: float) -> Link:
    """The link a network benchmark probed at ``rate_mbit`` (gloo all-reduces between two nodes), else the nominal one."""
    probe = results.get("links", {}).get(f"{rate_mbit:g}")
    return Link(probe["latency_s"], probe["bandwidth_Bps"]) if probe else link(rate_mbit)


def predict(
    strategy: str,
    nodes: int,
    rate_mbit: float,
    work: Workload,
    cores: int,
    speedup: dict[int, float] | None,
    steps: int = 60,
    probed: Link | None = None,
) -> Result:
    """Simulated run of ``strategy`` on ``nodes`` single-worker nodes whose links run at ``rate_mbit``.

    ``probed``: the link as measured on the test bed at that rate (default: the nominal rate, no latency but the veth's).
    """
    cluster = Cluster(cores=cores, link=probed or link(rate_mbit), comm_on_cpu=False, speedup=speedup)
    return simulate(strategy, nodes, work, cluster, steps=steps, warmup_steps=3)


def predict_with_measured_compute(run: dict, work: Workload, steps: int = 60, probed: Link | None = None) -> Result:
    """The link model alone: ``run``'s own measured compute per step as each learner's step, the link rate as input.

    The measured compute already contains the CPU sharing with the other workers and the machine's
    background load, so the learners get a processor each here (no further sharing).
    """
    other = max(run["step_s"] - run["compute_s"] - run["exposed_comm_s"], 0.0)
    own = dataclasses.replace(work, compute_s=run["compute_s"], other_s=other, samples_per_step=run["utts_per_step"])
    cluster = Cluster(cores=None, link=probed or link(run["rate_mbit"]), comm_on_cpu=False)
    return simulate(run["strategy"], run["nproc"], own, cluster, steps=steps, warmup_steps=3)


def load_bench(path: str | os.PathLike) -> dict:
    """The ``results`` of a ``network.json`` written by `dasr bench network` (its calibration and runs)."""
    path = Path(path)
    if not path.exists():
        raise DasrError(f"no network benchmark results {path}; run `dasr bench network` first (it writes them)")
    results = json.loads(path.read_text()).get("results", {})
    if not {"setup", "reference_single", "contention_speedup", "runs"} <= results.keys():
        raise DasrError(
            f"{path} lacks setup, reference_single, contention_speedup or runs; is it from `dasr bench network`?"
        )
    return results


def calibrated(results: dict) -> tuple[Workload, int, dict[int, float]]:
    """(workload, cores, contention) from a network benchmark's one-worker reference run, setup and contention."""
    setup = results["setup"]
    work = reference_workload(
        results["reference_single"],
        setup["param_bytes"],
        calibrate.pass_seconds(setup["param_bytes"]),
        setup["gossip_period_s"],
        setup["hybrid_group_size"],
        setup.get("localsgd_period", 8),
    )
    return work, setup["cores"], {int(k): float(v) for k, v in results["contention_speedup"].items()}


def compare(results: dict, settings: list[tuple[str, int, float]], steps: int = 60) -> list[dict]:
    """Predicted samples/s of every (strategy, nodes, rate) in ``settings``, beside the measured run where there is one.

    Where a run was measured, also the link model's prediction from that run's own compute time
    (:func:`predict_with_measured_compute`): it separates the network model's error from the
    machine's load drifting between the reference run and this one.
    """
    work, cores, speedup = calibrated(results)
    measured = {(r["strategy"], r["nproc"], float(r["rate_mbit"])): r for r in results["runs"]}
    rows = []
    for strategy, nodes, rate in settings:
        probed = probed_link(results, rate)
        sim = predict(strategy, nodes, rate, work, cores, speedup, steps, probed)
        row = {"strategy": strategy, "nodes": nodes, "rate_mbit": rate, "simulated_samples_per_s": sim.samples_per_s}
        row["simulated_step_s"] = sim.step_s
        run = measured.get((strategy, nodes, float(rate)))
        if run is not None:
            row["measured_samples_per_s"] = run["samples_per_s"]
            row["rel_err"] = abs(sim.samples_per_s - run["samples_per_s"]) / run["samples_per_s"]
            own = predict_with_measured_compute(run, work, steps, probed).samples_per_s
            row["measured_compute_simulated_samples_per_s"] = own
            row["measured_compute_rel_err"] = abs(own - run["samples_per_s"]) / run["samples_per_s"]
        rows.append(row)
    return rows


def run_cli(path: str, rates: list[float], nodes: list[int], strategies: list[str]) -> list[dict]:
    """`dasr simulate --link-mbit ...`: print the predicted samples/s per setting (and the measured, if any)."""
    results = load_bench(path)
    g = results["setup"]["hybrid_group_size"]
    settings = [
        (s, k, r) for k in nodes for r in rates for s in strategies if not (s == "hybrid" and (k % g or k <= g))
    ]
    rows = compare(results, settings)
    print(f"calibration: {path} (one-worker reference run, CPU contention); links without delay")
    print(f"{'K':>3} {'Mbit/s':>7} {'strategy':<9} {'predicted':>10} {'measured':>9} {'error':>6}")
    for row in rows:
        measured = f"{row['measured_samples_per_s']:9.2f}" if "rel_err" in row else f"{'-':>9}"
        error = f"{row['rel_err']:6.0%}" if "rel_err" in row else f"{'-':>6}"
        print(
            f"{row['nodes']:>3} {row['rate_mbit']:>7g} {row['strategy']:<9} "
            f"{row['simulated_samples_per_s']:10.2f} {measured} {error}"
        )
    return rows
