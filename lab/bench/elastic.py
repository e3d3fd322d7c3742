"""`dasr bench elastic`: elastic adpsgd trained through injected faults, beside fault-free and sync/localsgd runs.

N = 4 workers train with `dasr train`; every ``every_s`` seconds of training one worker (the
slots in turn, rank 0 included) is killed with SIGKILL, ``kills`` times per run. The same kills
hit `sync` and `localsgd`, which torch's agent restarts as a whole from the latest checkpoint
(`--max-restarts`, `--checkpoint-every`). A further elastic run hangs a worker instead: SIGSTOP
for ``hang_s`` (longer than the lease), then SIGCONT; the live set drops it, and it comes back
fresh under a new incarnation. The benchmark watches each run from outside: it timestamps every
metrics record as it appears (throughput over the training window, first to last train record),
and for elastic runs reads the coordinator's views (fault → dropped → back in a view, holding the
model). Claims come from the run's EXP/elastic-claims.json.

Each run keeps its experiment and ``result.json`` under ``--work``: a rerun skips finished runs
and starts an unfinished one again (a faulted run cannot continue where the benchmark stopped).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dasr.cli import arg
from dasr.errors import DasrError
from dasr.parallel.membership import View, connect, read_view
from lab.bench.procs import cmdline, descendants
from lab.bench.runs import TrainRun, kept_run, require_data
from lab.report import Report, new_figure, publish, sharing
from lab.summary import update_summary

NPROC = 4
#: (kills per faulted run, hangs, seconds of training between faults, epochs): quick smoke run, full benchmark
SIZES = {True: (3, 2, 15.0, 6), False: (20, 5, 15.0, 40)}
LEASE_S = 5.0
PAIR_TIMEOUT_S = 5.0  # the elastic runs' gossip pair timeout unless --pair-timeout-s says otherwise (train's default)
#: the demo's batch of 2 workers x 4000 frames, for which its LR is set (4 workers x 2000 frames here)
REFERENCE_BATCH_FRAMES = 4000
#: an uninterrupted run's dev WER at or above this means the model emits next to no words yet: a WER
#: difference to it says nothing about the faults (the headline leaves it out, the report says so)
NOT_LEARNED_WER = 0.95
ARGUMENTS = (
    arg("--kills", type=int, default=None, help="kills per faulted run (default: 3 quick, 20 full)"),
    arg("--hangs", type=int, default=None, help="SIGSTOPs of the hang run (default: 2 quick, 5 full)"),
    arg("--hang-s", type=float, default=3 * LEASE_S, help="seconds a hung worker stays stopped (default 15)"),
    arg("--every-s", type=float, default=None, help="seconds between faults (default 15)"),
    arg("--epochs", type=int, default=None, help="epochs per run (default: 6 quick, 40 full)"),
    arg("--model", default="demo", help="model preset (default demo)"),
    arg("--batch-frames", type=int, default=2000, help="padded frames per worker step"),
    arg("--pair-timeout-s", type=float, default=PAIR_TIMEOUT_S, help="elastic runs' gossip pair timeout (default 5)"),
    arg(
        "--pairs",
        type=int,
        default=1,
        help="fault-free and killed elastic runs side by side, this many times (the dev WER of one recipe's runs "
        "spreads by several points: more pairs judge the faults' cost; default 1)",
    ),
    arg("--work", default="exp/bench-elastic", help="keeps each run and its result; a rerun resumes"),
    arg(
        "--runs",
        choices=("all", "elastic"),
        default="all",
        help="all (default), or elastic: the three elastic adpsgd runs without sync's and localsgd's restarts",
    ),
)


@dataclass
class Watch:
    """What the benchmark sees of one run from outside."""

    exp: Path
    records: list[tuple[float, dict]] = field(default_factory=list)
    kills: list[dict] = field(default_factory=list)  # the faults injected: SIGKILLs, or SIGSTOPs of a hang run
    stopped: list[tuple[float, int]] = field(default_factory=list)  # (when to SIGCONT, pid) of hung workers
    live_samples: list[tuple[float, int]] = field(default_factory=list)  # (when, ready workers)
    store: object | None = None  # a client of the coordinator's store (elastic runs)
    store_gone: bool = False
    _read: int = 0

    def poll(self) -> None:
        """Timestamp the metrics records written since the last poll."""
        path = self.exp / "metrics.jsonl"
        if not path.exists():
            return
        with path.open() as f:
            f.seek(self._read)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        self._read += len(complete.encode())
        now = time.monotonic()
        self.records += [(now, json.loads(line)) for line in complete.splitlines() if line]

    def train_records(self) -> list[tuple[float, dict]]:
        return [(t, r) for t, r in self.records if r["kind"] == "train"]


def _elastic_workers(launcher: int) -> dict[int, tuple[int, str]]:
    """{slot: (pid, store address)} of the elastic workers under ``launcher``."""
    out = {}
    for pid in descendants(launcher):
        if "dasr.train" not in cmdline(pid):
            continue
        try:
            env = dict(e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if b"DASR_ELASTIC_SLOT" in env:
            out[int(env[b"DASR_ELASTIC_SLOT"])] = (pid, env[b"DASR_ELASTIC_STORE"].decode())
    return out


def _agent_workers(launcher: int) -> list[int]:
    return [p for p in descendants(launcher) if "spawn_main" in cmdline(p)]


def _fault_one(launcher: int, elastic: bool, n: int, sig: signal.Signals) -> dict | None:
    """Send ``sig`` to the ``n``-th fault's victim (slots in turn); what was hit, or None if no worker is up."""
    if elastic:
        workers = _elastic_workers(launcher)
        slot = n % NPROC
        if slot not in workers:
            return None
        pid, address = workers[slot]
        view = read_view(connect(address, timeout_s=10))
        os.kill(pid, sig)
        return {"slot": slot, "pid": pid, "incarnation": dict(view.members).get(slot)}
    agent_workers = _agent_workers(launcher)
    if len(agent_workers) < NPROC:
        return None
    os.kill(agent_workers[n % NPROC], sig)
    return {"slot": n % NPROC, "pid": agent_workers[n % NPROC]}


def _track_rejoin(kill: dict, view: View, now: float) -> None:
    """Note when the faulted incarnation left the view and when the slot's next one (the killed worker's
    replacement, or the hung worker itself, joined again) holds the model in a view."""
    members = dict(view.members)
    if "dropped_s" not in kill and members.get(kill["slot"]) != kill["incarnation"]:
        kill["dropped_s"] = now - kill["t"]
    replaced = members.get(kill["slot"]) not in (None, kill["incarnation"])
    if "rejoined_s" not in kill and replaced and kill["slot"] in view.ready:  # the replacement holds the model
        kill["rejoined_s"] = now - kill["t"]


def watch_run(
    run: TrainRun, data: str, exp: Path, faults: int, every_s: float, timeout_s: float, hang_s: float | None = None
) -> dict:
    """Start ``run``, fault a worker every ``every_s`` s of training ``faults`` times, and summarise it.

    A fault is a SIGKILL, or with ``hang_s`` a SIGSTOP that a SIGCONT ends ``hang_s`` later.
    """
    elastic = "--elastic" in run.options
    sig = signal.SIGKILL if hang_s is None else signal.SIGSTOP
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (exp.parent / f"{exp.name}.log").open("w")
    proc = subprocess.Popen(run.command(data, exp), stdout=log, stderr=subprocess.STDOUT, env=env)
    w = Watch(exp)
    deadline, next_kill = time.monotonic() + timeout_s, None
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{run.label} did not finish within {timeout_s:.0f} s")
            time.sleep(0.25)
            w.poll()
            now = time.monotonic()
            if next_kill is None and w.train_records():
                next_kill = now + every_s
            if next_kill is not None and len(w.kills) < faults and now >= next_kill:
                hit = _fault_one(proc.pid, elastic, len(w.kills), sig)
                if hit is not None:
                    w.kills.append({**hit, "t": now})
                    if hang_s is not None:
                        w.stopped.append((now + hang_s, hit["pid"]))
                next_kill = now + every_s
            _continue_due(w, now)
            if elastic:
                _watch_views(w, proc.pid, now)
    finally:
        _continue_due(w, float("inf"))
        if proc.poll() is None:
            for pid in [proc.pid, *descendants(proc.pid)]:
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        log.close()
    w.poll()
    return summarise(run, w, proc.returncode, elastic)


def _continue_due(w: Watch, now: float) -> None:
    """SIGCONT the hung workers whose time is up."""
    for due, pid in [s for s in w.stopped if s[0] <= now]:
        w.stopped.remove((due, pid))
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _watch_views(w: Watch, launcher: int, now: float) -> None:
    """Sample the live set and follow each kill's slot through the coordinator's views."""
    if w.store_gone:
        return
    try:
        if w.store is None:
            address = next((address for _, address in _elastic_workers(launcher).values()), None)
            if address is None:
                return
            w.store = connect(address, timeout_s=5)
        view = read_view(w.store)  # type: ignore[arg-type]
    except RuntimeError:  # the coordinator has stopped: the run is ending
        w.store_gone = True
        return
    if view.version:
        w.live_samples.append((now, len(view.ready)))
    for kill in w.kills:
        _track_rejoin(kill, view, now)


def summarise(run: TrainRun, w: Watch, returncode: int, elastic: bool) -> dict:
    """Throughput over the training window, the last evaluation, the kills and (elastic) the claims."""
    train = w.train_records()
    window = train[-1][0] - train[0][0] if len(train) > 1 else 0.0
    samples = sum(r["utts_per_step"] for _, r in train)
    evals = [r for _, r in w.records if r["kind"] == "eval"]
    live = [n for t, n in w.live_samples if train and train[0][0] <= t <= train[-1][0]]
    claims_file = w.exp / "elastic-claims.json"
    return {
        "label": run.label,
        "strategy": run.strategy,
        "elastic": elastic,
        "returncode": returncode,
        "samples": samples,
        "train_window_s": window,
        "samples_per_s": samples / window if window else None,
        "final_dev_wer": evals[-1]["dev_wer"] if evals else None,
        "final_dev_loss": evals[-1]["dev_loss"] if evals else None,
        "final_epoch": evals[-1]["epoch"] if evals else None,
        "kills": [{k: v for k, v in kill.items() if k != "t"} for kill in w.kills],
        "mean_live": statistics.mean(live) if live else None,  # workers holding the model, while training
        "claims": json.loads(claims_file.read_text()) if claims_file.exists() else None,
    }


@dataclass
class Faults:
    """What the faulted runs get: ``kills`` SIGKILLs, ``hangs`` SIGSTOPs of ``hang_s``, one every ``every_s``."""

    kills: int
    hangs: int
    hang_s: float
    every_s: float


@dataclass
class Plan:
    """What the benchmark runs: the model and its batches, the epochs, the faults, and which runs."""

    model: str
    batch_frames: int
    epochs: int
    faults: Faults
    only_elastic: bool = False  # without sync's and localsgd's restarts
    pair_timeout_s: float = PAIR_TIMEOUT_S
    pairs: int = 1  # fault-free and killed elastic runs side by side, this many times


def runs(plan: Plan) -> list[tuple[TrainRun, int, float | None]]:
    """The runs, in order (elastic adpsgd first: a run cut short still has its figures), each with its
    number of faults and (hang runs) how long a hang lasts. The elastic runs come in ``plan.pairs``: a
    fault-free run, then one with kills, repeated."""
    faults, epochs = plan.faults, plan.epochs
    # the demo recipe (AdamW, its LR for 2 workers' batch, warm-up, cosine): with train's defaults
    # (SGD at 0.1) the demo model had not left the blank stage after 45 epochs
    common = ["--config", "demo", "--reference-batch-frames", str(REFERENCE_BATCH_FRAMES)]
    common += ["--model", plan.model, "--batch-frames", str(plan.batch_frames), "--epochs", str(epochs)]
    common += ["--log-every", "1", "--eval-every-epochs", str(max(1, epochs // 4))]
    elastic = [*common, "--elastic", "--max-restarts", str(faults.kills), "--lease-s", f"{LEASE_S:g}"]
    elastic += ["--pair-timeout-s", f"{plan.pair_timeout_s:g}"]
    restarted = [*common, "--max-restarts", str(faults.kills), "--checkpoint-every", "20"]
    elastic_runs: list[tuple[TrainRun, int, float | None]] = []
    for p in range(plan.pairs):
        suffix = f" (pair {p + 1})" if plan.pairs > 1 else ""
        elastic_runs.append((TrainRun(f"adpsgd elastic, no faults{suffix}", "adpsgd", NPROC, elastic), 0, None))
        elastic_runs.append((TrainRun(f"adpsgd elastic, kills{suffix}", "adpsgd", NPROC, elastic), faults.kills, None))
    if faults.hangs:
        elastic_runs.append(
            (TrainRun("adpsgd elastic, hangs (SIGSTOP)", "adpsgd", NPROC, elastic), faults.hangs, faults.hang_s)
        )
    if plan.only_elastic:
        return elastic_runs
    return elastic_runs + [
        (TrainRun("sync, kills (agent restart)", "sync", NPROC, restarted), faults.kills, None),
        (TrainRun("localsgd, kills (agent restart)", "localsgd", NPROC, restarted), faults.kills, None),
    ]


def measure(data: str, plan: Plan, work: Path) -> dict:
    """Every run of :func:`runs`, one after the other; a run with a ``result.json`` under ``work`` is kept."""
    out = []
    faults = plan.faults
    planned = runs(plan)
    for i, (run, count, hang_s) in enumerate(planned):
        summary = kept_run(
            work / f"run{i}",
            lambda d, run=run, count=count, hang_s=hang_s: {
                **watch_run(run, data, d / "exp", count, faults.every_s, 3600, hang_s),
                "hang_s": hang_s,
            },
        )
        print(f"  {run.label}: {json.dumps({x: summary[x] for x in ('returncode', 'samples_per_s')})}", flush=True)
        out.append(summary)
    return {
        "nproc": NPROC,
        "model": plan.model,
        "epochs": plan.epochs,
        "kills": faults.kills,
        "hangs": faults.hangs,
        "hang_s": faults.hang_s,
        "every_s": faults.every_s,
        "pair_timeout_s": plan.pair_timeout_s,
        "pairs": plan.pairs,
        "runs": out,
    }


def _hang_run(results: dict) -> dict | None:
    return next((r for r in results["runs"] if r.get("hang_s")), None)


def pairs_of(results: dict) -> list[tuple[dict, dict]]:
    """The (fault-free, killed) elastic runs side by side, in order (results before --pairs hold one)."""
    elastic = results["runs"][: 2 * results.get("pairs", 1)]
    return list(zip(elastic[0::2], elastic[1::2], strict=True))


def compare(clean: dict, faulted: dict) -> dict:
    """One pair's figures: kills survived, throughput ratio (the dead worker's share excluded), WER difference."""
    kills = faulted["kills"]
    ratio = None
    if clean["samples_per_s"] and faulted["samples_per_s"]:  # per live worker: the dead worker's share excluded
        ratio = (faulted["samples_per_s"] / (faulted["mean_live"] or NPROC)) / (
            clean["samples_per_s"] / (clean["mean_live"] or NPROC)
        )
    wer = None
    learned = clean["final_dev_wer"] is not None and clean["final_dev_wer"] < NOT_LEARNED_WER
    if learned and faulted["final_dev_wer"] is not None:
        wer = (faulted["final_dev_wer"] - clean["final_dev_wer"]) / clean["final_dev_wer"]
    return {
        "kills": len(kills),
        "survived": sum("rejoined_s" in k for k in kills) if faulted["returncode"] == 0 else 0,
        "throughput_ratio": ratio,
        "wer_rel_diff": wer,
    }


def headline(results: dict) -> dict:
    """The summary figures over every pair: kills survived, the mean throughput ratio and WER difference
    (per pair: :func:`compare`), the median rejoin time."""
    pairs = pairs_of(results)
    compared = [compare(clean, faulted) for clean, faulted in pairs]
    ratios = [c["throughput_ratio"] for c in compared if c["throughput_ratio"] is not None]
    wers = [c["wer_rel_diff"] for c in compared if c["wer_rel_diff"] is not None]
    rejoins = [k["rejoined_s"] for _, faulted in pairs for k in faulted["kills"] if "rejoined_s" in k]
    out = {
        "elastic_kills": sum(c["kills"] for c in compared),
        "elastic_kills_survived": sum(c["survived"] for c in compared),
        "elastic_throughput_ratio": statistics.mean(ratios) if ratios else None,
        "elastic_wer_rel_diff": statistics.mean(wers) if wers else None,
        "elastic_wer_pairs": len(wers),
        "elastic_rejoin_s_median": statistics.median(rejoins) if rejoins else None,
    }
    hung = _hang_run(results)
    if hung is not None:
        out["elastic_hangs"] = len(hung["kills"])
        out["elastic_hangs_back"] = sum("rejoined_s" in k for k in hung["kills"]) if hung["returncode"] == 0 else 0
    return out


def render(results: dict, report: Report):
    """The report's tables and figure from the stored results."""
    cores = report.machine["cores"]
    gpu = f" and one {report.machine['gpu']}" if report.machine.get("gpu") else ""
    head = headline(results)
    hangs = (
        f" The hang run stops one worker with SIGSTOP for {results['hang_s']:.0f} s (the lease is {LEASE_S:.0f} s), "
        f"then SIGCONT, {results['hangs']} times."
        if results.get("hangs")
        else ""
    )
    report.add(
        "Setup",
        f"{results['nproc']} workers ({sharing(results['nproc'], cores)}{gpu}), `{results['model']}` model, "
        f"{results['epochs']} epochs; faulted runs: SIGKILL of one worker every {results['every_s']:.0f} s of "
        f"training, slots in turn (rank 0 included), {results['kills']} kills.{hangs} Elastic runs: lease "
        f"{LEASE_S:g} s, gossip pair timeout {results.get('pair_timeout_s', PAIR_TIMEOUT_S):g} s. Runs one after the other.",
    )
    rows = "| run | exit | samples/s | train window, s | mean live workers | final dev WER | final dev loss | kills |\n"
    rows += "|---|---|---|---|---|---|---|---|\n"
    for r in results["runs"]:
        sps = f"{r['samples_per_s']:.1f}" if r["samples_per_s"] else "-"
        wer = f"{100 * r['final_dev_wer']:.1f} %" if r["final_dev_wer"] is not None else "-"
        live = f"{r['mean_live']:.2f}" if r["mean_live"] else "-"
        loss = f"{r['final_dev_loss']:.2f}" if r.get("final_dev_loss") is not None else "-"
        rows += f"| {r['label']} | {r['returncode']} | {sps} | {r['train_window_s']:.0f} | {live} | {wer} | {loss} | "
        rows += f"{len(r['kills'])} |\n"
    report.add("Runs", rows)
    if results.get("pairs", 1) > 1:
        report.add("Pairs (fault-free and killed runs side by side)", _pairs_table(results))
    report.add(
        "Elastic kills (kill → view without it → its replacement ready in a view)"
        + (", the first pair" if results.get("pairs", 1) > 1 else ""),
        _fault_table(results["runs"][1]["kills"], "kill", "replacement holds the model after, s"),
    )
    hung = _hang_run(results)
    if hung is not None:
        report.add(
            "Elastic hangs (SIGSTOP → view without it → SIGCONT → back in a view, holding the model)",
            _fault_table(hung["kills"], "hang", "back, holding the model, after, s"),
        )
    report.add("Batch claims of the elastic runs", _claims_table(results["runs"]))
    if head["elastic_wer_rel_diff"] is None and results["runs"][0]["final_dev_wer"] is not None:
        report.add(
            "Dev WER",
            f"The uninterrupted run ended at {100 * results['runs'][0]['final_dev_wer']:.1f} % dev WER: the model "
            "had not learned to emit words yet, so the WER difference between the runs says nothing about the "
            "faults and the headline leaves it out. Compare the dev losses in the table instead.",
        )
    report.add("Headline", f"`{json.dumps(head)}`")
    fig, axes = new_figure(2, width_per_panel=3.6)
    labels = [r["label"] for r in results["runs"]]
    axes[0].barh(labels, [r["train_window_s"] or 0 for r in results["runs"]])
    axes[0].set_xlabel("seconds to train the epochs\n(restarts and redone steps included)")
    axes[1].barh(labels, [100 * (r["final_dev_wer"] or 0) for r in results["runs"]])
    axes[1].set_xlabel("final dev WER, %")
    axes[1].set_yticklabels([])
    return fig


def _pairs_table(results: dict) -> str:
    lines = "| pair | no faults: dev WER | kills: dev WER | relative | throughput ratio | kills survived |\n"
    lines += "|---|---|---|---|---|---|\n"
    for i, (clean, faulted) in enumerate(pairs_of(results)):
        c = compare(clean, faulted)
        wer = "-" if c["wer_rel_diff"] is None else f"{100 * c['wer_rel_diff']:+.1f} %"
        ratio = "-" if c["throughput_ratio"] is None else f"{c['throughput_ratio']:.2f}"
        lines += f"| {i + 1} | {100 * (clean['final_dev_wer'] or 0):.1f} % | {100 * (faulted['final_dev_wer'] or 0):.1f} % | "
        lines += f"{wer} | {ratio} | {c['survived']} of {c['kills']} |\n"
    return lines


def _claims_table(all_runs: list[dict]) -> str:
    """Each elastic run's batches: trained once, twice (a hung worker's batch, re-offered and also
    finished by it), in flight at a fault and re-offered, and re-offered but never taken (lost)."""
    lines = "| run | batches | trained once | twice or more | re-offered | re-offered, never taken |\n"
    lines += "|---|---|---|---|---|---|\n"
    for r in all_runs:
        c = r.get("claims")
        if c:
            lines += f"| {r['label']} | {c['batches_trained']:,} | {c['trained_once']:,} | "
            lines += f"{c['trained_twice_or_more']} | {c['reoffered']} | {c['reoffered_never_taken']} |\n"
    return lines


def _fault_table(faults: list[dict], name: str, back: str) -> str:
    lines = f"| {name} | slot | dropped after, s | {back} |\n|---|---|---|---|\n"
    for i, k in enumerate(faults):
        lines += f"| {i + 1} | {k['slot']} | {k.get('dropped_s', float('nan')):.1f} | "
        lines += f"{k.get('rejoined_s', float('nan')):.1f} |\n"
    return lines


def run_cli(args, command: str) -> dict:
    """`dasr bench elastic`: measure, publish elastic.md/.json/.png and the summary's figures."""
    data = require_data(args.data, "elastic")
    kills, hangs, every_s, epochs = SIZES[args.quick]
    faults = Faults(
        kills=args.kills if args.kills is not None else kills,
        hangs=args.hangs if args.hangs is not None else hangs,
        hang_s=args.hang_s,
        every_s=args.every_s if args.every_s is not None else every_s,
    )
    epochs = args.epochs if args.epochs is not None else epochs
    if args.pairs < 1:
        raise DasrError(f"--pairs must be at least 1, not {args.pairs}")
    plan = Plan(args.model, args.batch_frames, epochs, faults, args.runs == "elastic", args.pair_timeout_s, args.pairs)
    results = measure(data, plan, Path(args.work))
    report = publish("elastic", "Elastic adpsgd through injected faults", command, results, render, args.out)
    update_summary(args.out, headline(results), report)
    return results
