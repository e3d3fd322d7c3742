"""`dasr bench large-batch`: dev WER against the global batch m x B, every run trained until its dev WER plateaus.

The paper grew the batch from 256 to 2560 utterances at equal accuracy by scaling the peak LR
with the batch and warming up to it, comparing models trained to their plateau. This benchmark
trains the `tiny` model on N = 2 workers at m = 1, 2, 4, 10, 16 times a base batch B
(B = N x 300 padded frames, about one utterance per worker), sync and adpsgd, each run until
its dev WER plateaus (:mod:`lab.bench.plateau`: the last three epochs within 2 % relative).
It reports two views side by side: equal epochs (the paper's protocol: every run's dev WER at the
epochs m = 1 took to plateau, read from its per-epoch evaluations, so every run trains at least
that long) and each run at its own plateau. m = 1 and m = 10 run with three seeds; at m = 10
the recipe meets its rivals (:data:`RECIPES`).

Each run keeps its experiment and ``result.json`` under the work dir (``--work``), so the
command can stop and resume: a rerun skips finished runs, continues an interrupted one from its
checkpoint, lengthens finished ones when m = 1's plateau moves later, and rewrites the report
from everything done so far (unfinished runs are listed as pending). Analysis and rendering are
in :mod:`lab.bench.large_batch_report`.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dasr.cli import arg
from dasr.errors import DasrError
from dasr.train.schedule import scaled_peak_lr, scaling_rule
from lab.bench import large_batch_report as lbr
from lab.bench.plateau import train_until
from lab.bench.runs import TrainRun, require_data
from lab.report import publish
from lab.summary import update_summary

ARGUMENTS = (
    arg(
        "--work",
        default="exp/large-batch",
        help="keeps each run and its result; a rerun resumes (default exp/large-batch)",
    ),
    arg("--only", default=None, metavar="TEXT", help="run only the runs whose id contains TEXT, e.g. m10"),
    arg("--report-only", action="store_true", help="rewrite the report from the finished runs, train nothing"),
)

NPROC = 2
MODEL = "tiny"
BASE_FRAMES = 300
WARMUP_EPOCHS = 0.1
ANNEAL_START_EPOCH = 6
STRATEGIES = ("sync", "adpsgd")
DEFAULT_WORK = "exp/large-batch"
#: the corpus the full plan is sized for
CORPUS = (
    "`dasr corpus synth --out DATA --hours 1` then `dasr features DATA` (espeak voices; 998 train utterances, "
    "0.76 h, 96 speakers, 1,201 words; 127 dev)"
)


@dataclass(frozen=True)
class Recipe:
    """An optimizer with its LR at B, its LR scaling rule, and a warm-up kind: LEGW (0.1 x m epochs), fixed, none."""

    title: str
    optimizer: str
    lr: float
    warmup: str = "legw"
    scaling: str = "auto"
    anneal_start_epoch: int = ANNEAL_START_EPOCH

    def peak_lr(self, m: int) -> float:
        """The peak LR at m x B: by default the optimizer's rule (linear for SGD, square root for AdamW and LAMB)."""
        return scaled_peak_lr(self.lr, m, scaling_rule(self.scaling, self.optimizer))

    def warmup_epochs(self, m: int) -> float:
        """The warm-up epochs at m x B: LEGW's 0.1 x m, a fixed 0.1 at every m, or none."""
        return {"legw": WARMUP_EPOCHS * m, "fixed": WARMUP_EPOCHS, "none": 0.0}[self.warmup]

    def options(self, m: int) -> list[str]:
        """The optimizer options (the trainer multiplies ``--warmup-epochs`` by m itself: LEGW)."""
        warmup = ["--warmup-epochs", str(self.warmup_epochs(m) / m)]
        anneal = ["--anneal-start-epoch", str(self.anneal_start_epoch)]
        return ["--optimizer", self.optimizer, "--lr", str(self.lr), "--lr-scaling", self.scaling, *warmup, *anneal]


#: the recipe and its rivals at m = 10. The LRs at B were set before the runs, not tuned: AdamW's
#: 0.002 is the previous equal-epoch benchmark's; SGD's 0.005 is the 0.05 of `dasr bench
#: accuracy` at 8,000 frames scaled down to B by the paper's own linear rule; LAMB's 0.005 lets
#: its trust ratio (the update's size relative to the weights') match SGD's.
RECIPES = {
    "adamw": Recipe("AdamW, sqrt LR scaling, LEGW warm-up (default)", "adamw", 0.002),
    "sgd": Recipe("SGD + Nesterov, linear LR scaling, LEGW warm-up (the paper's)", "sgd", 0.005),
    "lamb": Recipe("LAMB (torch-optimizer), sqrt LR scaling, LEGW warm-up", "lamb", 0.005),
    "adamw-fixed-warmup": Recipe("AdamW, sqrt LR scaling, fixed 0.1-epoch warm-up", "adamw", 0.002, "fixed"),
    "adamw-no-warmup": Recipe("AdamW, sqrt LR scaling, no warm-up", "adamw", 0.002, "none"),
    # added after the first rivals: without warm-up (a larger early LR) did best, so: a larger peak
    "adamw-linear": Recipe("AdamW, linear LR scaling, LEGW warm-up", "adamw", 0.002, scaling="linear"),
    # ... and one that keeps the peak until m = 1's plateau (12 epochs): are 10x fewer updates the limit?
    "adamw-late-anneal": Recipe(
        "AdamW, sqrt LR scaling, LEGW warm-up, annealed from epoch 12", "adamw", 0.002, anneal_start_epoch=12
    ),
}
DEFAULT_RECIPE = "adamw"


@dataclass(frozen=True)
class Point:
    """One run: a strategy at multiplier ``m`` with a recipe and a seed."""

    strategy: str
    m: int
    recipe: str = DEFAULT_RECIPE
    seed: int = 0

    @property
    def id(self) -> str:
        return f"{self.strategy}-m{self.m}-{self.recipe}-s{self.seed}"

    def run(self) -> TrainRun:
        """The `dasr train` run: the batch, the recipe's options and the seed differ between runs; the epochs are set later."""
        options = [
            "--model",
            MODEL,
            "--batch-frames",
            str(BASE_FRAMES * self.m),
            "--reference-batch-frames",
            str(NPROC * BASE_FRAMES),
            "--anneal",
            "paper",
            "--eval-every-epochs",
            "1",
            "--log-every",
            "10",
            "--checkpoint-every",
            "0",
            "--gossip-period-s",
            "0.5",
            "--seed",
            str(self.seed),
            *RECIPES[self.recipe].options(self.m),
        ]
        return TrainRun(self.id, self.strategy, NPROC, options)


@dataclass(frozen=True)
class Plan:
    """What one invocation aims at: multipliers, the largest (where seeds and rivals run), seeds, the epoch cap."""

    multipliers: tuple[int, ...]
    top: int
    seeds: tuple[int, ...]
    rivals: tuple[str, ...]
    max_epochs: int
    seeded_rivals: tuple[str, ...] = ()


#: quick smoke run (capped at 3 epochs: the least that can show a plateau), full benchmark
PLANS = {
    True: Plan((1, 2), 2, (0,), (), 3),
    False: Plan(
        (1, 2, 4, 10, 16),
        10,
        (0, 1, 2),
        tuple(r for r in RECIPES if r != DEFAULT_RECIPE),
        24,
        # the rivals that beat the recipe by more than the seeds' range with seed 0 get the seeds too
        ("adamw-no-warmup", "adamw-late-anneal"),
    ),
}


def points(plan: Plan) -> list[Point]:
    """The runs in order of importance: m = 1 and the top m, the rivals, more seeds, the other multipliers, the
    best rivals' seeds, then the other multipliers' seeds (added last: the tolerated multipliers rest on them)."""
    order = [Point(s, m) for m in (1, plan.top) for s in STRATEGIES]
    order += [Point("sync", plan.top, r) for r in plan.rivals]
    order += [Point(s, m, seed=k) for k in plan.seeds[1:] for m in (1, plan.top) for s in STRATEGIES]
    others = sorted((m for m in plan.multipliers if m not in (1, plan.top)), reverse=True)
    order += [Point(s, m) for m in others for s in STRATEGIES]
    order += [Point("sync", plan.top, r, k) for r in plan.seeded_rivals for k in plan.seeds[1:]]
    return order + [Point(s, m, seed=k) for k in plan.seeds[1:] for m in sorted(others) for s in STRATEGIES]


def load_results(work: Path) -> dict[str, dict]:
    """The finished runs' ``result.json`` under ``work``, by run id."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(work.glob("*/result.json"))}


def next_due(todo: list[Point], results: dict[str, dict], failed: set[str]) -> Point | None:
    """The first run not finished, or finished short of m = 1's plateau epochs (and not capped), that has not failed."""
    need = lbr.base_plateau_epochs(list(results.values())) or 0
    for point in todo:
        r = results.get(point.id)
        if point.id not in failed and (r is None or len(r["evals"]) < min(need, r["max_epochs"])):
            return point
    return None


def train_point(point: Point, data_dir: str, work: Path, plan: Plan, min_epochs: int) -> dict:
    """Train ``point`` until its plateau and ``min_epochs`` (or the cap); write and return its ``result.json``."""
    started = time.perf_counter()
    evals = train_until(point.run(), data_dir, work / point.id / "exp", min_epochs, plan.max_epochs)
    path = work / point.id / "result.json"
    before = json.loads(path.read_text())["wall_s"] if path.exists() else 0.0
    recipe = RECIPES[point.recipe]
    result = {
        **asdict(point),
        "id": point.id,
        "options": point.run().options,
        "peak_lr": recipe.peak_lr(point.m),
        "warmup_epochs": recipe.warmup_epochs(point.m),
        "max_epochs": plan.max_epochs,
        "evals": evals,
        "wall_s": before + time.perf_counter() - started,
    }
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def run(
    data_dir: str | None,
    quick: bool,
    out_dir: str,
    command: str,
    work: str = DEFAULT_WORK,
    only: str | None = None,
    report_only: bool = False,
) -> dict:
    """Run (or continue) the plan's runs whose id contains ``only`` (none: ``report_only``), rewriting the report after each.

    Returns:
        The results of the report (:func:`lab.bench.large_batch_report.analyse`).
    """
    plan = PLANS[quick]
    home = Path(work) / ("quick" if quick else "full")
    if report_only:
        return publish_report(load_results(home), plan, out_dir, command)
    data_dir = require_data(data_dir, "large-batch")
    home.mkdir(parents=True, exist_ok=True)
    todo = [p for p in points(plan) if only is None or only in p.id]
    failed: set[str] = set()
    results = load_results(home)
    while (point := next_due(todo, results, failed)) is not None:
        need = lbr.base_plateau_epochs(list(results.values())) or 0
        print(f"  {point.id}: training until its plateau (at least {need} epochs) ...", flush=True)
        try:
            result = train_point(point, data_dir, home, plan, need)
        except DasrError as e:  # one failed run leaves the others' results standing; the report lists it pending
            print(f"  {point.id} failed: {e}", flush=True)
            failed.add(point.id)
            continue
        print(f"  {point.id}: dev WER {[round(e['dev_wer'], 3) for e in result['evals']]}", flush=True)
        results[point.id] = result
        publish_report(results, plan, out_dir, command)
    return publish_report(results, plan, out_dir, command)


def pending(results: dict[str, dict], plan: Plan) -> list[str]:
    """The plan's runs not finished yet."""
    return [p.id for p in points(plan) if p.id not in results]


def publish_report(results: dict[str, dict], plan: Plan, out_dir: str, command: str) -> dict:
    """The analysis of the finished runs as ``large-batch.md/.json/.png``, and the summary's headline figures."""
    analysis = lbr.analyse(
        list(results.values()),
        setup={
            "nproc": NPROC,
            "model": MODEL,
            "base_frames_per_worker": BASE_FRAMES,
            "warmup_epochs_at_B": WARMUP_EPOCHS,
            "anneal_start_epoch": ANNEAL_START_EPOCH,
            "corpus": CORPUS,
            "recipes": {name: asdict(r) for name, r in RECIPES.items()},
            "default_recipe": DEFAULT_RECIPE,
            **asdict(plan),
        },
        pending=pending(results, plan),
    )
    report = publish("large-batch", lbr.TITLE, command, analysis, lbr.render, out_dir)
    update_summary(out_dir, lbr.summary_figures(analysis), report)
    return analysis


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_cli(args, command: str) -> dict:
    """`dasr bench large-batch`: :func:`run` with the command line's options.

    SIGTERM interrupts it like Ctrl-C, so the training run in progress (in a session of its own)
    is stopped too and the next invocation continues it from its checkpoint alone.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args.data, args.quick, args.out, command, args.work, args.only, args.report_only)
