"""`dasr bench stragglers`: time to a common target (dev WER, else dev loss) with one of N = 4 workers 1x, 2x, 4x slower.

sync, adpsgd and hybrid train the `demo` model for the same budget of training seconds in
time mode (`--eval-every-s`, `--train-seconds`): the workers evaluate at agreed marks of
training time, and each worker's epochs are its own, so a fast adpsgd worker never waits
for the slow one at an epoch end. Rank 3 is the straggler (`--straggler 3:F`: it sleeps
(F - 1) x its compute time after every step).

The target is the lowest dev WER that every run reached (so every run has a time to it), or
the lowest dev loss when that WER is above 90 % (see :func:`common_target`); time to target
is interpolated between evaluations. The limit of a ratio sync ÷ adpsgd is
mean speed ÷ slowest speed = (3F + 1) / 4 (1.75 at F = 2): sync moves at the slowest
worker's pace, adpsgd at best at the mean pace.
"""

from __future__ import annotations

from pathlib import Path

from dasr.cli import arg
from lab.bench.runs import TrainRun, kept_run, require_data, time_to_target, train
from lab.report import Report, new_figure, plot_evals, publish, sharing, table, verdict
from lab.summary import update_summary

TITLE = "Stragglers: time to a common target"
NPROC = 4
SLOW_RANK = 3
#: the strategies this benchmark compares (a subset of dasr.parallel.STRATEGIES)
COMPARED = ("sync", "adpsgd", "hybrid", "localsgd")
FACTORS = (1, 2, 4)
#: (training seconds per run, seconds between evaluations): quick smoke run, full benchmark
SIZES = {True: (20, 10), False: (240, 30)}
#: padded frames per worker step (half the demo's: twice the updates per epoch in the short budget)
BATCH_FRAMES = 2000
ARGUMENTS = (arg("--work", default="exp/bench-stragglers", help="keeps each run and its summary; a rerun resumes"),)


def limit(factor: float, nproc: int = NPROC) -> float:
    """Mean speed ÷ slowest speed with one of ``nproc`` workers ``factor`` times slower."""
    return ((nproc - 1) * factor + 1) / nproc


def _options(strategy: str, factor: int, train_s: float, eval_s: float) -> list[str]:
    options = [
        "--config",
        "demo",
        "--batch-frames",
        str(BATCH_FRAMES),
        "--reference-batch-frames",
        "4000",
        "--eval-every-s",
        str(eval_s),
        "--train-seconds",
        str(train_s),
        "--log-every",
        "10",
        "--checkpoint-every",
        "0",
    ]
    if strategy == "hybrid":
        options += ["--group-size", "2"]
    if factor > 1:
        options += ["--straggler", f"{SLOW_RANK}:{factor}"]
    return options


#: a common WER target above this says too little (the runs had barely left the blank-only stage):
#: the target is then the lowest dev loss every run reached
MEANINGFUL_WER = 0.9


def common_target(runs: list[dict]) -> tuple[str, float]:
    """(metric, target): the lowest dev WER every run reached, or dev loss when that WER says too little."""
    wer = max(min(e["dev_wer"] for e in r["evals"]) for r in runs)
    if wer <= MEANINGFUL_WER:
        return "dev_wer", wer
    return "dev_loss", max(min(e["dev_loss"] for e in r["evals"]) for r in runs)


def measure(data_dir: str, train_s: float, eval_s: float, work: Path) -> list[dict]:
    """Every strategy at every straggler factor, one after the other; one summary per run.

    Each finished run's summary is kept in ``work/<strategy>-<F>x-<train_s>s/result.json``;
    a rerun takes it instead of training again (an unfinished run starts again)."""
    runs = []
    for factor in FACTORS:
        for strategy in COMPARED:
            label = f"{strategy} {factor}x"
            run = TrainRun(label, strategy, NPROC, _options(strategy, factor, train_s, eval_s))
            summary = kept_run(
                work / f"{strategy}-{factor}x-{train_s:g}s",
                lambda d, run=run, factor=factor: {**train(run, data_dir, d / "exp", skip_steps=10), "factor": factor},
            )
            runs.append(summary)
            print(
                f"  {label}: {summary['samples_per_s']:.1f} samples/s, dev WER "
                f"{[round(e['dev_wer'], 3) for e in summary['evals']]}",
                flush=True,
            )
    return runs


def run(data_dir: str | None, quick: bool, out_dir: str, command: str, work: str = "exp/bench-stragglers") -> dict:
    """Run the straggler benchmark; write ``stragglers.md/.json/.png`` and the summary's headline ratio."""
    require_data(data_dir, "stragglers")
    train_s, eval_s = SIZES[quick]
    results = analyse(measure(data_dir, train_s, eval_s, Path(work)), train_s, eval_s)
    report = publish("stragglers", TITLE, command, results, render, out_dir)
    headline = results["sync_over_adpsgd_time_to_target"][2]
    update_summary(out_dir, {"straggler2x_time_to_target_ratio_sync_over_adpsgd": headline}, report)
    return results


def analyse(runs: list[dict], train_s: float, eval_s: float) -> dict:
    """The results of the ``runs``: the common target, every run's time to it, the ratios and their limits."""
    metric, target = common_target(runs)
    for r in runs:
        r["time_to_target_s"] = time_to_target(r["evals"], target, metric, 1.0 if metric == "dev_wer" else None)
    table = {(r["strategy"], r["factor"]): r for r in runs}
    ratios = {f: table[("sync", f)]["time_to_target_s"] / table[("adpsgd", f)]["time_to_target_s"] for f in FACTORS}
    localsgd = {
        f: table[("localsgd", f)]["time_to_target_s"] / table[("adpsgd", f)]["time_to_target_s"]
        for f in FACTORS
        if ("localsgd", f) in table
    }
    return {
        "nproc": NPROC,
        "slow_rank": SLOW_RANK,
        "train_seconds": train_s,
        "eval_every_s": eval_s,
        "target_metric": metric,
        "target": target,
        "runs": runs,
        "sync_over_adpsgd_time_to_target": ratios,
        "localsgd_over_adpsgd_time_to_target": localsgd,
        "limits": {f: limit(f) for f in FACTORS},
    }


#: how the report names each target metric
METRIC_NAMES = {"dev_wer": "dev WER (greedy)", "dev_loss": "dev loss (CTC per utterance)"}


def _shown_target(results: dict) -> str:
    target = results["target"]
    return f"{100 * target:.1f} %" if results["target_metric"] == "dev_wer" else f"{target:.1f}"


def _ratios(results: dict) -> dict[int, float]:
    """sync ÷ adpsgd time to target per factor (the JSON stores the factors as strings)."""
    return {int(f): v for f, v in results["sync_over_adpsgd_time_to_target"].items()}


def render(results: dict, report: Report):
    """stragglers.md's sections and figure, from the ``results`` alone (see :func:`analyse`)."""
    nproc, name = results["nproc"], METRIC_NAMES[results["target_metric"]]
    report.add("Setup", _setup_text(results, report.machine["cores"]))
    report.add("Results", _results_table(results))
    ratios = _ratios(results)
    report.add(
        "Headline",
        (
            f"With one worker 2x slow at N = {nproc}, adpsgd reached the target {name} **{ratios[2]:.2f}x** sooner "
            f"than sync (limit {limit(2, nproc):.2f}x; goal ≥ 1.6x: {verdict(ratios[2] >= 1.6)}). At 4x: "
            f"{ratios[4]:.2f}x (limit {limit(4, nproc):.2f}x); without a straggler {ratios[1]:.2f}x."
            + _localsgd_text(results)
        ),
    )
    report.add(
        "Reading the ratios",
        (
            "The limit counts compute speed only. A ratio above it comes from what else sync pays here: every "
            "sync step all-reduces the whole gradient on the shared CPU cores and waits for the slowest of the "
            "four workers (also without an injected straggler, step times vary when 4 processes share 2 cores), "
            "while adpsgd averages in the background every gossip period; and while the straggler sleeps, its "
            "core serves the other adpsgd workers, whereas sync's workers wait at the step's all-reduce. The runs "
            "go one after the other, so a busy spell of the machine lands on some runs only: compare ratios, "
            "and read single cells with care."
        ),
    )
    return _figure(results, report.machine["cores"])


def _localsgd_text(results: dict) -> str:
    """localsgd (the baseline users would pick: an exact average every few steps) against adpsgd."""
    ratios = {int(f): v for f, v in results.get("localsgd_over_adpsgd_time_to_target", {}).items()}
    if not ratios:
        return ""
    cells = ", ".join(f"{v:.2f}x at {f}x" for f, v in sorted(ratios.items()))
    won = [f"{f}x" for f, v in sorted(ratios.items()) if v > 1]
    where = f"adpsgd was sooner at {', '.join(won)}" if won else "adpsgd was sooner at no factor"
    return f" localsgd ÷ adpsgd time to target: {cells} ({where})."


def _setup_text(results: dict, cores: int) -> str:
    nproc, metric = results["nproc"], results["target_metric"]
    return (
        f"`demo` model, AdamW, {BATCH_FRAMES} frames per worker step, the demo's LR for a reference batch of 4000 "
        f"frames scaled linearly (x {nproc * BATCH_FRAMES // 4000}); N = {nproc} workers, one torch thread each "
        f"({sharing(nproc, cores)}); rank {results['slow_rank']} slowed by F (it sleeps (F − 1) × its compute time "
        f"per step; sleeping takes no CPU, so on shared cores the others speed up a little meanwhile). Every run "
        f"trains {results['train_seconds']} s of training time in time mode (evaluations excluded), evaluating every "
        f"{results['eval_every_s']} s. Target: the lowest {METRIC_NAMES[metric]} every run reached, "
        f"**{_shown_target(results)}**"
        + (
            ""
            if metric == "dev_wer"
            else f" (the lowest WER every run reached was above {100 * MEANINGFUL_WER:.0f} %, "
            "too close to the blank-only stage to time, so the target is on the dev loss, which falls smoothly "
            "from the start)"
        )
        + "; time to it interpolated between evaluations."
    )


def _results_table(results: dict) -> str:
    runs, nproc = results["runs"], results["nproc"]
    sync = {r["factor"]: r["time_to_target_s"] for r in runs if r["strategy"] == "sync"}
    header = ["F", "strategy", "samples/s", "time to target, s", "sync ÷ this", "limit (mean ÷ slowest speed)"]
    rows = [
        [
            f"{r['factor']}x",
            r["strategy"],
            f"{r['samples_per_s']:.1f}",
            f"{r['time_to_target_s']:.0f}",
            f"{sync[r['factor']] / r['time_to_target_s']:.2f}",
            f"{limit(r['factor'], nproc):.2f}",
            f"{100 * r['evals'][-1]['dev_wer']:.1f} %",
            f"{r['evals'][-1]['dev_loss']:.1f}",
        ]
        for r in runs
    ]
    return table([*header, "final dev WER", "final dev loss"], rows)


def _figure(results: dict, cores: int):
    """Per straggler factor: every strategy's dev curve over training time, and the target."""
    factors, metric = sorted(_ratios(results)), results["target_metric"]
    fig, axes = new_figure(len(factors))
    for ax, factor in zip(axes, factors):
        plot_evals(ax, [r for r in results["runs"] if r["factor"] == factor], metric)
        ax.axhline(results["target"], color="k", linestyle="--", linewidth=1, label=f"target {_shown_target(results)}")
        ax.set_title(f"rank {results['slow_rank']} {factor}x slower ({sharing(results['nproc'], cores)})", fontsize=9)
        ax.set_xlabel("training time, s")
        ax.set_ylabel(METRIC_NAMES[metric])
        ax.legend(fontsize=7)
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench stragglers`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command, args.work)
