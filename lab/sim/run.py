"""`dasr simulate`: calibrate on this machine, check against its measured N = 2 and 4, predict the paper's cluster.

Writes ``OUT/simulate.md``, ``.json`` and ``.png`` and sets ``sim_vs_measured_max_rel_err`` and
``sim_vs_paper_max_rel_err`` in ``OUT/summary.json``; prints every assumption.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys

from dasr.cli import add_arguments, arg
from dasr.parallel import STRATEGIES
from lab.report import Report, new_figure, publish, table
from lab.sim import calibrate, hardware, paper
from lab.sim.cluster import simulate
from lab.summary import update_summary

TITLE = "Cluster simulator: calibrated on this machine, predicting the paper's clusters"
MEASURED_GOAL = 0.15
PAPER_GOAL = 0.25
#: step-to-step variation of a worker's compute on this machine (batches of equal padded frames; assumed)
CPU_COMPUTE_CV = 0.05


def validate(results: dict, work, cluster, steps: int) -> list[dict]:
    """Simulated vs measured samples/s of every multi-worker run in a strategies benchmark."""
    rows = []
    for run in results["runs"]:
        if run["nproc"] < 2:
            continue
        w = work if run["nproc"] % work.group_size == 0 else dataclasses.replace(work, group_size=run["nproc"])
        sim = simulate(run["strategy"], run["nproc"], w, cluster, steps=steps)
        rows.append(
            {
                "strategy": run["strategy"],
                "nproc": run["nproc"],
                "measured_samples_per_s": run["samples_per_s"],
                "simulated_samples_per_s": sim.samples_per_s,
                "measured_step_s": run["step_s"],
                "simulated_step_s": sim.step_s,
                "rel_err": abs(sim.samples_per_s - run["samples_per_s"]) / run["samples_per_s"],
            }
        )
    return rows


def assumptions(results: dict, link: dict, work, contention: dict) -> list[tuple[str, str, str]]:
    """(what, value, source) of everything the simulator takes as given."""
    return machine_assumptions(results, link, work, contention) + cluster_assumptions()


def machine_assumptions(results: dict, link: dict, work, contention: dict) -> list[tuple[str, str, str]]:
    """(what, value, source) of this machine, as calibrated from ``results`` and the micro-benchmarks."""
    one, setup = calibrate.single_run(results), results["setup"]
    utterances, seconds = calibrate.batch_shape(setup)
    factors = ", ".join(f"k={k}: {s:.2f}x" for k, s in contention["speedup"].items() if k > 1)
    return [
        (
            "this machine: cores shared by all workers",
            f"{setup['cores']} (processor sharing at the measured contention)",
            "strategies.json setup",
        ),
        (
            "this machine: CPU contention",
            f"aggregate speed of k concurrent single-thread training processes vs one: "
            f"{factors} (ideal: min(k, {setup['cores']})); each of k computing tasks runs at s(k)/k, linear between "
            "measured k, flat beyond",
            f"micro-benchmark (demo BLSTM steps on a random {utterances} x {seconds:.1f} s "
            f"batch, {contention['window_s']:g} s per k, all started together; 1-min load average "
            f"{contention['load_before']:.1f} before)",
        ),
        (
            "this machine: compute per step",
            f"{work.compute_s * 1e3:.1f} ms (+ {work.other_s * 1e3:.1f} ms rest of the step)",
            "strategies.json, N = 1 single run (compute_s, step_s)",
        ),
        (
            "this machine: utterances per step, model bytes",
            f"{setup['utts_per_step']:.2f}, {setup['param_bytes']:,}",
            "strategies.json setup",
        ),
        (
            "this machine: gossip period, hybrid group",
            f"{setup.get('gossip_period_s')} s, {setup.get('group_size')}",
            "strategies.json setup",
        ),
        (
            "this machine: gloo loopback link",
            f"{link['latency_s'] * 1e6:.0f} us, {link['bandwidth_Bps'] / 1e9:.2f} GB/s; transfers are CPU work of both ends",
            "link micro-benchmark (2 gloo processes, all-reduce at "
            f"{', '.join(f'{k / 2**20:.2g} MiB' for k in link['allreduce_s'])})",
        ),
        (
            "this machine: one memory pass over the parameters",
            f"{link['pass_s'] * 1e3:.2f} ms",
            "micro-benchmark (add_ on 1 thread)",
        ),
        ("this machine: compute variation", f"lognormal, coefficient of variation {CPU_COMPUTE_CV}", "assumed"),
        ("single run used", f"{one['samples_per_s']:.1f} samples/s", "strategies.json (the only run calibrated on)"),
    ]


def cluster_assumptions() -> list[tuple[str, str, str]]:
    """(what, value, source) of the paper's runs, its model, the GPUs and the cluster nodes."""
    gpu = [
        (g.name, f"{g.fp32_tflops} TFLOPS FP32, {g.memory_GBps} GB/s", g.source) for g in (hardware.V100, hardware.P100)
    ]
    nodes = [(f"cluster {key}", node.describe(), "public specifications") for key, node in hardware.NODES.items()]
    model = [
        (
            "paper's model",
            f"6 BLSTM layers x 512 cells per direction, 256 bottleneck, 32,000 outputs, "
            f"260-dim input (assumed): {paper.blstm_parameters() / 1e6:.1f} M parameters, "
            f"{paper.PARAM_BYTES / 1e6:.0f} MB in FP32",
            "ICASSP 2019 model description; input size assumed",
        )
    ]
    return list(paper.ASSUMPTIONS) + model + gpu + nodes


def _figure(validation: list[dict], published: list[dict], scale: list[dict]):
    fig, (ax1, ax2) = new_figure(2, width_per_panel=5.5, height=4.2)
    for i, strategy in enumerate(("sync", "adpsgd", "hybrid")):
        rows = [r for r in scale if r["strategy"] == strategy]
        ax1.plot(
            [r["learners"] for r in rows],
            [r["speedup"] for r in rows],
            "o-",
            color=f"C{i}",
            label=f"{strategy} (simulated)",
        )
        for p in published:
            if p["strategy"] == strategy:
                ax1.plot(p["learners"], p["published_speedup"], "*", color=f"C{i}", markersize=13, markeredgecolor="k")
                ax1.plot(p["learners"], p["speedup"], "x", color=f"C{i}", markersize=9)
                ax1.annotate(
                    p["label"],
                    (p["learners"], p["published_speedup"]),
                    fontsize=6,
                    xytext=(4, -8),
                    textcoords="offset points",
                )
    ns = sorted({r["learners"] for r in scale})
    ax1.plot(ns, ns, "k:", linewidth=1, label="linear")
    ax1.plot([], [], "k*", label="published")
    ax1.plot([], [], "kx", label="predicted for that run")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log", base=2)
    ax1.set_xlabel("learners (GPUs)")
    ax1.set_ylabel("speed-up over 1 V100 (1 week)")
    ax1.set_title("SWB2000 BLSTM: predicted vs published", fontsize=10)
    ax1.legend(fontsize=7)
    labels = [f"{r['strategy']}\nN={r['nproc']}" for r in validation]
    x = range(len(validation))
    ax2.bar([i - 0.2 for i in x], [r["measured_samples_per_s"] for r in validation], 0.4, label="measured")
    ax2.bar([i + 0.2 for i in x], [r["simulated_samples_per_s"] for r in validation], 0.4, label="simulated")
    ax2.set_xticks(list(x), labels, fontsize=7)
    ax2.set_ylabel("samples/s (all workers)")
    ax2.set_title("this machine: measured vs simulated", fontsize=10)
    ax2.legend(fontsize=8)
    return fig


def run(calibration: str, out: str, learners: list[int], quick: bool, command: str) -> dict:
    """Calibrate, validate, predict; write the report and the two summary figures. Returns the results."""
    results = calibrate.load_strategies(calibration)
    link = calibrate.measure_link(results["setup"]["param_bytes"], reps=3 if quick else 7)
    window_s = 2.0 if quick else 3.0
    contention = {
        "window_s": window_s,
        "load_before": os.getloadavg()[0],
        "speedup": calibrate.measure_contention(*calibrate.batch_shape(results["setup"]), window_s),
    }
    work, cluster = calibrate.machine_model(results, link, CPU_COMPUTE_CV, contention["speedup"])
    steps = 30 if quick else 150
    gpu_steps = 15 if quick else 60
    validation = validate(results, work, cluster, steps)
    published = paper.compare_published(gpu_steps)
    scale = paper.scaling(learners, gpu_steps)
    given = assumptions(results, link, work, contention)
    max_measured = max((r["rel_err"] for r in validation), default=None)
    max_paper = max(r["rel_err"] for r in published)

    res = {
        "calibration": calibration,
        "link": link,
        "contention": contention,
        "workload": dataclasses.asdict(work),
        "assumptions": [dict(zip(("what", "value", "source"), a)) for a in given],
        "validation": validation,
        "published": published,
        "scaling": scale,
        "sim_vs_measured_max_rel_err": max_measured,
        "sim_vs_paper_max_rel_err": max_paper,
    }
    report = publish("simulate", TITLE, command, res, render, out)
    update_summary(out, {"sim_vs_measured_max_rel_err": max_measured, "sim_vs_paper_max_rel_err": max_paper}, report)
    print("Assumptions:")
    for what, value, source in given:
        print(f"  {what}: {value}  [{source}]")
    print(
        f"simulated vs measured on this machine: largest error {max_measured:.1%}"
        if validation
        else "no multi-worker runs to compare"
    )
    print(f"predicted vs published speed-ups: largest error {max_paper:.0%}")
    return res


def render(res: dict, report: Report):
    """The report's tables and figure, from the results alone."""
    given = [(a["what"], a["value"], a["source"]) for a in res["assumptions"]]
    report.add("Assumptions (every number the simulator takes as given)", table(["what", "value", "source"], given))
    report.add(
        f"This machine: simulated vs measured (goal: within {MEASURED_GOAL:.0%})",
        _validation_text(res["validation"], res["sim_vs_measured_max_rel_err"]),
    )
    report.add(
        f"The paper's clusters: predicted vs published (goal: speed-up within {PAPER_GOAL:.0%})",
        _published_text(res["published"], res["sim_vs_paper_max_rel_err"]),
    )
    report.add(
        "Predicted scaling: 4 V100 per node, NVLink 2.0 + EDR InfiniBand, 80 samples per learner",
        _scaling_table(res["scaling"]),
    )
    return _figure(res["validation"], res["published"], res["scaling"])


def _validation_text(validation: list[dict], max_measured: float | None) -> str:
    header = ["strategy", "N", "measured samples/s", "simulated samples/s", "error"]
    header += ["measured step s", "simulated step s"]
    rows = [
        [
            r["strategy"],
            r["nproc"],
            f"{r['measured_samples_per_s']:.1f}",
            f"{r['simulated_samples_per_s']:.1f}",
            f"{r['rel_err']:.1%}",
            f"{r['measured_step_s']:.3f}",
            f"{r['simulated_step_s']:.3f}",
        ]
        for r in validation
    ]
    return table(header, rows) + (
        f"\n\nLargest error: **{max_measured:.1%}**" if validation else "\n\nNo multi-worker runs to compare."
    )


def _published_text(published: list[dict], max_paper: float) -> str:
    header = ["run", "published", "batch", "predicted h", "published speed-up", "predicted speed-up", "error"]
    rows = [
        [
            r["label"],
            r["source"],
            f"{r['batch']} ({r['batch_source']})",
            f"{r['hours']:.2f}",
            f"{r['published_speedup']:.1f}x",
            f"{r['speedup']:.1f}x",
            f"{r['rel_err']:.0%}",
        ]
        for r in published
    ]
    above = ", ".join(f"{r['label']} ({r['rel_err']:.0%})" for r in published if r["rel_err"] > PAPER_GOAL)
    return (
        table(header, rows)
        + f"\n\nLargest error: **{max_paper:.0%}**; above the {PAPER_GOAL:.0%} goal: "
        + (above or "none")
        + ". Speed-ups are over the single-V100 week for every row "
        "(the P100 row too: no single-P100 time is published). The simulator models throughput only: "
        "a prediction above the published speed-up means the published run lost time the model does not "
        "contain (data loading, evaluation, implementation overheads, more epochs, or a GPU less "
        "efficient at small per-learner batches than the cuDNN LSTM benchmark says); one below it means the published system processed samples faster "
        "than the single-GPU week implies."
    )


def _scaling_table(scale: list[dict]) -> str:
    header = ["N", "strategy", "samples/s", "hours per epoch", f"hours for {paper.EPOCHS} epochs", "speed-up"]
    rows = [
        [
            r["learners"],
            r["strategy"],
            f"{r['samples_per_s']:,.0f}",
            f"{r['epoch_h']:.2f}",
            f"{r['hours']:.1f}",
            f"{r['speedup']:.1f}x",
        ]
        for r in scale
    ]
    return table(header, rows)


ARGUMENTS = (
    arg(
        "--calibration",
        default="docs/results/strategies.json",
        help="strategies benchmark output to calibrate on (default docs/results/strategies.json)",
    ),
    arg("--out", default="docs/results", help="directory for simulate.md, .json, .png (default docs/results)"),
    arg("--learners", default="8,16,32,64,128", help="learner counts to predict (default 8,16,32,64,128)"),
    arg("--quick", action="store_true", help="fewer simulated steps and link repetitions"),
    arg(
        "--link-mbit",
        help="predict the network test bed at these link rates, e.g. 1000,200,50 (prints, writes nothing)",
    ),
    arg("--nodes", default="2,4", help="with --link-mbit: node counts (default 2,4)"),
    arg(
        "--network",
        default="docs/results/network.json",
        help="with --link-mbit: `dasr bench network` output to calibrate on (default docs/results/network.json)",
    ),
)


def add_parser(parser: argparse.ArgumentParser) -> None:
    """`dasr simulate`'s options, and :func:`run_cli` as what it runs."""
    add_arguments(parser, ARGUMENTS)
    parser.set_defaults(run=run_cli)


def run_cli(args: argparse.Namespace) -> None:
    """`dasr simulate`: the paper's clusters, or with ``--link-mbit`` the network test bed, predicted."""
    if args.link_mbit:  # the network test bed's settings, calibrated on `dasr bench network`'s reference run
        from lab.sim.network import run_cli as predict_testbed

        rates = [float(r) for r in args.link_mbit.split(",")]
        nodes = [int(k) for k in args.nodes.split(",")]
        predict_testbed(args.network, rates, nodes, [s for s in STRATEGIES if s != "single"])
        return
    learners = [int(n) for n in args.learners.split(",")]
    run(args.calibration, args.out, learners, args.quick, shlex.join(["dasr", *sys.argv[1:]]))
    print(f"wrote {args.out}/simulate.md, .json and .png")
