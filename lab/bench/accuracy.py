"""`dasr bench accuracy`: test WER of every strategy after the same number of epochs (the "no loss" claim).

single (N = 1), sync, adpsgd and ps (N = 2) and hybrid (N = 4, groups of 2) train the `demo`
model for the same epochs with the same per-worker batch; the LR is scaled with the effective
batch as `dasr train` does. The consensus model (`final.pt`) of each is decoded on the test
split, greedily and with the word LM (lexicon beam search, weights tuned on dev).
ps runs SGD with Nesterov momentum (the only optimizer its server applies); the others AdamW.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lab.bench.runs import TrainRun, require_data, train
from lab.report import Report, new_figure, publish, sharing

TITLE = "Accuracy of every strategy at equal epochs"
BEAM = 50
#: epochs per run: quick smoke run, full benchmark
EPOCHS = {True: 1, False: 5}


def configurations(epochs: int) -> list[TrainRun]:
    """The five runs (see the module docstring)."""
    common = [
        "--config",
        "demo",
        "--epochs",
        str(epochs),
        "--eval-every-epochs",
        "1",
        "--log-every",
        "20",
        "--checkpoint-every",
        "0",
        "--gossip-period-s",
        "0.5",
        "--reference-batch-frames",
        "8000",
    ]
    return [
        TrainRun("single x1", "single", 1, common),
        TrainRun("sync x2", "sync", 2, common),
        TrainRun("adpsgd x2", "adpsgd", 2, common),
        TrainRun("hybrid x4 (g=2)", "hybrid", 4, common + ["--group-size", "2"]),
        TrainRun("ps x2 (SGD)", "ps", 2, common + ["--optimizer", "sgd", "--lr", "0.05"]),
    ]


def decoded_test_wer(exp: Path, data_dir: str) -> dict:
    """Greedy and LM test WER of ``exp``'s final (consensus) model."""
    from dasr.decode.run import decode_split

    greedy = decode_split(str(exp), data_dir, "test", use_lm=False, checkpoint="final")
    with_lm = decode_split(str(exp), data_dir, "test", use_lm=True, checkpoint="final", beam_size=BEAM)
    return {"test_wer_greedy": greedy["wer"], "test_wer_lm": with_lm["wer"], "test_words": greedy["num_words"]}


def run(data_dir: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the accuracy benchmark; write ``accuracy.md/.json/.png``."""
    require_data(data_dir, "accuracy")
    epochs = EPOCHS[quick]
    runs = []
    with tempfile.TemporaryDirectory(prefix="dasr-bench-") as tmp:
        for config in configurations(epochs):
            exp = Path(tmp) / config.label.split()[0]
            summary = train(config, data_dir, exp, skip_steps=0)
            summary.update(decoded_test_wer(exp, data_dir))
            runs.append(summary)
            print(
                f"  {config.label}: test WER {100 * summary['test_wer_lm']:.2f} % with LM, "
                f"{100 * summary['test_wer_greedy']:.2f} % greedy",
                flush=True,
            )
    results = {"epochs": epochs, "beam": BEAM, "runs": runs}
    publish("accuracy", TITLE, command, results, render, out_dir)
    return results


def render(results: dict, report: Report):
    """The setup, the table and the figure of the measured runs."""
    cores = report.machine["cores"]
    epochs, beam, runs = results["epochs"], results["beam"], results["runs"]
    report.add(
        "Setup",
        (
            f"`demo` model, {epochs} epochs each, 4000 padded frames per worker step, LR given for 8000 frames and scaled "
            f"linearly with the effective batch, SpecAugment and speed perturbation (`dasr/recipes/demo.yaml`); one torch thread "
            f"per worker ({sharing(4, cores)} at N = 4). Test = unseen voices and sentences ({runs[0]['test_words']} "
            f"words); LM decoding with the 5-gram `lm.arpa`, beam {beam}, LM weight and word score tuned on dev."
        ),
    )
    rows = (
        "| strategy | workers | updates per worker | test WER, LM | test WER, greedy | final dev WER (greedy) | "
        "samples/s |\n|---|---|---|---|---|---|---|\n"
    )
    for r in runs:
        rows += (
            f"| {r['label']} | {r['nproc']} | {r['evals'][-1]['step']} | {100 * r['test_wer_lm']:.2f} % | "
            f"{100 * r['test_wer_greedy']:.2f} % | {100 * r['evals'][-1]['dev_wer']:.1f} % | "
            f"{r['samples_per_s']:.1f} |\n"
        )
    report.add(
        "Results",
        rows
        + (
            "\nAt equal epochs N workers make 1/N of one worker's updates, each on an N times larger batch with "
            "an N times larger LR (linear scaling). Early in training, as after these few epochs, the WER still "
            'follows the number of updates; whether the strategies end level (the paper\'s "no loss") needs '
            "training to convergence, e.g. the demo's 18 epochs (`make demo`: adpsgd on 2 workers, 3.16 % test "
            "WER with the LM). ps, the baseline the paper argues against, also runs plain SGD here."
        ),
    )
    fig, (ax1, ax2) = new_figure(2)
    for r in runs:
        ax1.plot([e["epoch"] + 1 for e in r["evals"]], [e["dev_wer"] for e in r["evals"]], marker="o", label=r["label"])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("dev WER (greedy)")
    ax1.legend(fontsize=7)
    ax1.set_title("dev WER per epoch", fontsize=10)
    ax2.bar(
        [r["label"] for r in runs], [100 * r["test_wer_lm"] for r in runs], color=[f"C{i}" for i in range(len(runs))]
    )
    ax2.set_ylabel("test WER with LM, %")
    ax2.set_title(f"after {epochs} epochs", fontsize=10)
    ax2.tick_params(axis="x", labelsize=7, rotation=20)
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench accuracy`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command)
