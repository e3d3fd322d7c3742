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

import tempfile
from pathlib import Path

from lab.bench.runs import TrainRun, require_data, time_to_target, train
from lab.report import Report, machine_info, new_figure, sharing
from lab.summary import update_summary

NPROC = 4
SLOW_RANK = 3
#: the strategies this benchmark compares (a subset of dasr.parallel.STRATEGIES)
COMPARED = ("sync", "adpsgd", "hybrid", "localsgd")
FACTORS = (1, 2, 4)
#: (training seconds per run, seconds between evaluations): quick smoke run, full benchmark
SIZES = {True: (20, 10), False: (240, 30)}
#: padded frames per worker step (half the demo's: twice the updates per epoch in the short budget)
BATCH_FRAMES = 2000


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


def measure(data_dir: str, train_s: float, eval_s: float) -> list[dict]:
    """Every strategy at every straggler factor, one after the other; one summary per run."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="dasr-bench-") as tmp:
        for factor in FACTORS:
            for strategy in COMPARED:
                label = f"{strategy} {factor}x"
                summary = train(
                    TrainRun(label, strategy, NPROC, _options(strategy, factor, train_s, eval_s)),
                    data_dir,
                    Path(tmp) / f"{strategy}-{factor}",
                    skip_steps=10,
                )
                summary["factor"] = factor
                runs.append(summary)
                print(
                    f"  {label}: {summary['samples_per_s']:.1f} samples/s, dev WER "
                    f"{[round(e['dev_wer'], 3) for e in summary['evals']]}",
                    flush=True,
                )
    return runs


def run(data_dir: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the straggler benchmark; write ``stragglers.md/.json/.png`` and the summary's headline ratio."""
    require_data(data_dir, "stragglers")
    train_s, eval_s = SIZES[quick]
    report = Report("stragglers", "Stragglers: time to a common target", command, machine_info())
    return write_report(measure(data_dir, train_s, eval_s), train_s, eval_s, report, out_dir)


def write_report(runs: list[dict], train_s: float, eval_s: float, report: Report, out_dir: str) -> dict:
    """Times to the common target, ratios and limits from the ``runs``; the report and the summary figure."""
    cores = report.machine["cores"]
    metric, target = common_target(runs)
    name = {"dev_wer": "dev WER (greedy)", "dev_loss": "dev loss (CTC per utterance)"}[metric]
    shown = f"{100 * target:.1f} %" if metric == "dev_wer" else f"{target:.1f}"
    for r in runs:
        r["time_to_target_s"] = time_to_target(r["evals"], target, metric, 1.0 if metric == "dev_wer" else None)
    table = {(r["strategy"], r["factor"]): r for r in runs}
    ratios = {f: table[("sync", f)]["time_to_target_s"] / table[("adpsgd", f)]["time_to_target_s"] for f in FACTORS}
    results = {
        "nproc": NPROC,
        "slow_rank": SLOW_RANK,
        "train_seconds": train_s,
        "eval_every_s": eval_s,
        "target_metric": metric,
        "target": target,
        "runs": runs,
        "sync_over_adpsgd_time_to_target": ratios,
        "limits": {f: limit(f) for f in FACTORS},
    }
    report.add(
        "Setup",
        (
            f"`demo` model, AdamW, {BATCH_FRAMES} frames per worker step, the demo's LR for a reference batch of 4000 "
            f"frames scaled linearly (x {NPROC * BATCH_FRAMES // 4000}); N = {NPROC} workers, one torch thread each "
            f"({sharing(NPROC, cores)}); rank {SLOW_RANK} slowed by F (it sleeps (F − 1) × its compute time per step; "
            f"sleeping takes no CPU, so on shared cores the others speed up a little meanwhile). Every run trains "
            f"{train_s} s of training time in time mode (evaluations excluded), evaluating every {eval_s} s. "
            f"Target: the lowest {name} every run reached, **{shown}**"
            + (
                ""
                if metric == "dev_wer"
                else f" (the lowest WER every run reached was above {100 * MEANINGFUL_WER:.0f} %, "
                "too close to the blank-only stage to time, so the target is on the dev loss, which falls smoothly "
                "from the start)"
            )
            + "; time to it interpolated between evaluations."
        ),
    )
    rows = (
        "| F | strategy | samples/s | time to target, s | sync ÷ this | limit (mean ÷ slowest speed) | "
        "final dev WER | final dev loss |\n|---|---|---|---|---|---|---|---|\n"
    )
    for r in runs:
        sync_t, t = table[("sync", r["factor"])]["time_to_target_s"], r["time_to_target_s"]
        rows += (
            f"| {r['factor']}x | {r['strategy']} | {r['samples_per_s']:.1f} | {t:.0f} | {sync_t / t:.2f} | "
            f"{limit(r['factor']):.2f} | {100 * r['evals'][-1]['dev_wer']:.1f} % | "
            f"{r['evals'][-1]['dev_loss']:.1f} |\n"
        )
    report.add("Results", rows)
    headline = ratios[2]
    report.add(
        "Headline",
        (
            f"With one worker 2x slow at N = {NPROC}, adpsgd reached the target {name} **{headline:.2f}x** sooner than "
            f"sync (limit {limit(2):.2f}x; goal ≥ 1.6x: {'met' if headline >= 1.6 else '**not met**'}). At 4x: "
            f"{ratios[4]:.2f}x (limit {limit(4):.2f}x); without a straggler {ratios[1]:.2f}x."
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

    fig, axes = new_figure(len(FACTORS))
    for ax, factor in zip(axes, FACTORS):
        for strategy in COMPARED:
            evals = table[(strategy, factor)]["evals"]
            ax.plot([e["train_s"] for e in evals], [e[metric] for e in evals], marker="o", label=strategy)
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {shown}")
        ax.set_title(f"rank {SLOW_RANK} {factor}x slower ({sharing(NPROC, cores)})", fontsize=9)
        ax.set_xlabel("training time, s")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    report.write(out_dir, results, fig)
    update_summary(out_dir, {"straggler2x_time_to_target_ratio_sync_over_adpsgd": headline}, report)
    return results


def run_cli(args, command: str) -> dict:
    """`dasr bench stragglers`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command)
