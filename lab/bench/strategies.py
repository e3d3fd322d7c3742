"""`dasr bench strategies`: throughput of every strategy at N = 1, 2, 4 workers on this machine.

Each configuration is a real `dasr train` run (launcher + N worker processes over loopback,
one torch thread each) of the `demo` model for a fixed number of steps; the first steps are
warm-up and not counted. All configurations run once per round, every other round in
reverse order, so a slow spell of the shared machine hits them alike. Reported per
configuration: samples/s of all workers, time per epoch, and per worker step the compute
time, the communication time (hidden or not) and the part of it the training thread waited
for, hence the overlap achieved.

The results are also the simulator's calibration input (``docs/results/strategies.json``,
read by `dasr simulate`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dasr.data.manifest import read_manifest
from dasr.model.blstm import num_parameters, preset_config
from dasr.parallel import STRATEGIES
from lab.bench.runs import TrainRun, train
from lab.report import Report, machine_info, new_figure, publish, sharing, table, verdict
from lab.summary import update_summary
from lab.workload import synthesize

TITLE = "Throughput of the strategies"
#: the runs' settings: SGD (the only optimizer ps supports) for every strategy, so steps cost the same
GOSSIP_PERIOD_S = 0.5
GROUP_SIZE = 2
BATCH_FRAMES = 4000
#: (steps per run, warm-up steps left out, rounds): quick smoke run, full benchmark
SIZES = {True: (10, 5, 1), False: (30, 10, 2)}


def configurations() -> list[TrainRun]:
    """single at N=1; sync, adpsgd, ps, localsgd at N=2 and 4; hybrid (groups of 2) at N=4.

    hybrid at N=2 would be one sync group (or, with groups of 1, adpsgd), so it runs at N=4 only.
    """
    runs = [TrainRun("single x1", "single", 1)]
    for n in (2, 4):
        runs += [TrainRun(f"{s} x{n}", s, n) for s in ("sync", "adpsgd", "ps", "localsgd")]
    runs.append(TrainRun(f"hybrid x4 (g={GROUP_SIZE})", "hybrid", 4, ["--group-size", str(GROUP_SIZE)]))
    return runs


def _options(steps: int) -> list[str]:
    return [
        "--config",
        "demo",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--batch-frames",
        str(BATCH_FRAMES),
        "--max-steps",
        str(steps),
        "--log-every",
        "5",
        "--checkpoint-every",
        "0",
        "--gossip-period-s",
        str(GOSSIP_PERIOD_S),
    ]


def measure(data_dir: str, work: Path, steps: int, skip: int, rounds: int) -> list[dict]:
    """Every configuration ``rounds`` times (alternating order); one summary per run."""
    runs = configurations()
    results = []
    for r in range(rounds):
        for run in reversed(runs) if r % 2 else runs:
            full = TrainRun(run.label, run.strategy, run.nproc, run.options + _options(steps))
            summary = train(full, data_dir, work / f"round{r}" / run.label.split()[0] / str(run.nproc), skip)
            summary["round"] = r
            results.append(summary)
            print(f"  {run.label}: {summary['samples_per_s']:.1f} samples/s", flush=True)
    return results


def combine(runs: list[dict], train_utterances: int) -> list[dict]:
    """One row per configuration: medians over its rounds, time per epoch from the samples/s."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        row = {"label": label, "strategy": mine[0]["strategy"], "nproc": mine[0]["nproc"], "rounds": len(mine)}
        for f in ("samples_per_s", "step_s", "compute_s", "comm_s", "exposed_comm_s"):
            row[f] = float(np.median([r[f] for r in mine]))
        row["samples_per_s_each_round"] = [r["samples_per_s"] for r in mine]
        row["overlap"] = max(0.0, 1 - row["exposed_comm_s"] / row["comm_s"]) if row["comm_s"] > 0 else None
        row["epoch_s"] = train_utterances / row["samples_per_s"]
        rows.append(row)
    return rows


def paired_ratio(runs: list[dict], numerator: str, denominator: str) -> dict:
    """samples/s of ``numerator`` over ``denominator`` per round (side by side), and their median."""
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["label"]] = r["samples_per_s"]
    ratios = [v[numerator] / v[denominator] for v in by_round.values() if numerator in v and denominator in v]
    return {"median": float(np.median(ratios)), "each_round": ratios}


def run(data_dir: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the throughput benchmark; write ``strategies.md/.json/.png`` and the summary's headline ratio."""
    steps, skip, rounds = SIZES[quick]
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="dasr-bench-") as tmp:
        if data_dir is None:
            data_dir = str(Path(tmp) / "corpus")
            synthesize(data_dir, quick)
        train_utterances = len(read_manifest(Path(data_dir) / "train.jsonl"))
        runs = measure(data_dir, Path(tmp), steps, skip, rounds)
    rows = combine(runs, train_utterances)
    ratio = paired_ratio(runs, "adpsgd x4", "sync x4")
    single = next(r for r in rows if r["strategy"] == "single")
    setup = {
        "preset": "demo",
        "params": num_parameters_of_demo(),
        "batch_frames": BATCH_FRAMES,
        "utts_per_step": single["samples_per_s"] * single["step_s"],
        "gossip_period_s": GOSSIP_PERIOD_S,
        "group_size": GROUP_SIZE,
        "cores": machine["cores"],
        "threads_per_worker": 1,
        "steps": steps,
        "warmup_steps_skipped": skip,
        "rounds": rounds,
        "train_utterances": train_utterances,
    }
    setup["param_bytes"] = 4 * setup["params"]
    results = {"setup": setup, "runs": rows, "each_run": runs, "adpsgd_over_sync_x4": ratio}
    report = publish("strategies", TITLE, command, results, render, out_dir, machine=machine)
    update_summary(out_dir, {"throughput_ratio_adpsgd_vs_sync": ratio["median"]}, report)
    return results


def render(results: dict, report: Report):
    """strategies.md's sections and figure, from the ``results`` alone."""
    setup, ratio = results["setup"], results["adpsgd_over_sync_x4"]
    report.add("Setup", _setup_text(setup, report.machine["cores"]))
    report.add(
        "Results (medians over rounds; per step: median over workers)",
        _results_table(results["runs"])
        + (
            "\n\n*Communication* is the time the exchange took whether hidden or not (sync/hybrid: first bucket "
            "launched to last bucket done in DDP's hook; adpsgd: the gossip thread's exchanges per step; ps: push + "
            "pull); *exposed* is what the training thread waited for (DDP's last bucket, adpsgd's merge lock, ps's "
            "whole exchange). *Overlap* = 1 − exposed ÷ communication. On shared cores hidden communication still "
            "takes CPU from the compute, which shows in the compute time rather than as exposed time."
        ),
    )
    report.add(
        "Headline",
        (
            f"adpsgd ÷ sync samples/s at N = 4, no straggler, per round side by side: "
            f"{', '.join(f'{x:.3f}' for x in ratio['each_round'])}; median **{ratio['median']:.3f}** "
            f"(goal ≥ 1.0: {verdict(ratio['median'] >= 1.0)})."
        ),
    )
    return _figure(results["runs"], report.machine["cores"])


def _setup_text(setup: dict, cores: int) -> str:
    return (
        f"`demo` model ({setup['params'] / 1e6:.2f} M parameters), SGD, {setup['batch_frames']} padded frames per "
        f"worker step (~{setup['utts_per_step']:.1f} utterances), SpecAugment and speed perturbation on (as in "
        f"`dasr/recipes/demo.yaml`); {setup['steps']} steps per worker per run, the first "
        f"{setup['warmup_steps_skipped']} not counted; {setup['rounds']} round(s), every other in reverse order. "
        f"Every worker has one torch thread: at N = 4, {sharing(4, cores)}, at N = 2 {sharing(2, cores)}. adpsgd "
        f"gossips every {setup['gossip_period_s']} s; hybrid has groups of {setup['group_size']}. Time per epoch = "
        f"{setup['train_utterances']} training utterances ÷ samples/s."
    )


def _results_table(rows: list[dict]) -> str:
    header = ["configuration", "samples/s", "time per epoch, s", "step, s", "compute, s/step"]
    header += ["communication, s/step", "exposed, s/step", "overlap"]
    cells = [
        [
            r["label"],
            f"{r['samples_per_s']:.1f}",
            f"{r['epoch_s']:.0f}",
            f"{r['step_s']:.3f}",
            f"{r['compute_s']:.3f}",
            f"{r['comm_s']:.3f}",
            f"{r['exposed_comm_s']:.3f}",
            "–" if r["overlap"] is None else f"{100 * r['overlap']:.0f} %",
        ]
        for r in rows
    ]
    return table(header, cells)


def _figure(rows: list[dict], cores: int):
    """Throughput against N per strategy; where each configuration's step time goes."""
    fig, (ax1, ax2) = new_figure(2, width_per_panel=5.5)
    for strategy in [s for s in STRATEGIES if any(r["strategy"] == s for r in rows)]:
        mine = [r for r in rows if r["strategy"] == strategy or (strategy != "single" and r["strategy"] == "single")]
        mine = sorted(mine, key=lambda r: r["nproc"])
        ax1.plot([r["nproc"] for r in mine], [r["samples_per_s"] for r in mine], marker="o", label=strategy)
    ax1.set_xlabel("workers N")
    ax1.set_ylabel("samples/s, all workers")
    ax1.set_xticks([1, 2, 4])
    ax1.set_title(f"throughput ({cores} cores shared)", fontsize=10)
    ax1.legend(fontsize=8)
    labels = [r["label"] for r in rows]
    compute = [r["compute_s"] for r in rows]
    exposed = [r["exposed_comm_s"] for r in rows]
    hidden = [max(0.0, r["comm_s"] - r["exposed_comm_s"]) for r in rows]
    ax2.barh(labels, compute, label="compute")
    ax2.barh(labels, exposed, left=compute, label="exposed communication")
    ax2.barh(labels, hidden, left=np.add(compute, exposed), label="hidden communication", alpha=0.5)
    ax2.set_xlabel("seconds per worker step")
    ax2.set_title("where a step's time goes", fontsize=10)
    ax2.legend(fontsize=7)
    ax2.invert_yaxis()
    return fig


def num_parameters_of_demo() -> int:
    """Parameters of the `demo` model with character units."""
    from dasr.data.tokenizer import CharTokenizer
    from dasr.model.blstm import BlstmCtc

    return num_parameters(BlstmCtc(preset_config("demo", CharTokenizer().vocab_size)))


def run_cli(args, command: str) -> dict:
    """`dasr bench strategies`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command)
