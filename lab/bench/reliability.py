"""`dasr bench reliability`: faults injected into real runs, and what survived them.

1. Killed workers: SIGKILL one worker of a `sync` and an `adpsgd` run mid-epoch; `--max-restarts`
   restarts all workers from the latest checkpoint. Work lost, final dev loss against
   uninterrupted runs of several seeds. A gossip partner that vanishes (killed or frozen)
   without an agent to stop the others: they must stop with an error, never hang.
2. Torn checkpoints: a checkpoint writer SIGKILLed at random moments; truncated and
   bit-flipped files; a full disk (RLIMIT_FSIZE) during a write.
3. Hostile inputs: hypothesis fuzzing of manifests, Kaldi dirs, LibriSpeech trees, audio headers.
4. Soak: 8 adpsgd workers for 1,000 steps: progress, resident memory, threads, leftovers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lab.bench import faults, fuzz, soak
from lab.report import Report, publish, sharing, table
from lab.workload import synthesize

#: the sizes of a quick smoke run and of the full soak
SIZES = {
    True: dict(
        kill_victims=[1],
        reference_seeds=[],
        steps=24,
        checkpoint_every=5,
        checkpoint_kills=5,
        vanish=["SIGKILL"],
        fuzz_per_target=100,
        soak_nproc=4,
        soak_steps=60,
        soak_rss_from=20,
    ),
    False: dict(
        kill_victims=[1, 0] * 5,  # 10 kills per strategy: with the vanished partners, over 20 workers
        reference_seeds=[0, 1, 2],
        steps=40,
        checkpoint_every=10,
        checkpoint_kills=60,
        vanish=["SIGKILL", "SIGSTOP"],
        fuzz_per_target=2500,
        soak_nproc=8,
        soak_steps=1000,
        soak_rss_from=100,
    ),
}
TITLE = "Reliability: killed workers, torn checkpoints, hostile inputs, soak"
#: the strategies whose workers are killed (a subset of dasr.parallel.STRATEGIES)
KILLED = ("sync", "adpsgd")


def killed_workers(data: str, work: Path, size: dict) -> dict:
    """Every kill of every strategy, and the uninterrupted references."""
    runs, references = [], {}
    for strategy in KILLED:
        for i, victim in enumerate(size["kill_victims"]):
            kill_at = size["checkpoint_every"] * (1 + i % 2) + 2 + i  # mid-interval, a different spot each time
            runs.append(
                faults.kill_worker_run(
                    data,
                    work / f"{strategy}-kill{i}",
                    strategy,
                    2,
                    size["steps"],
                    size["checkpoint_every"],
                    kill_at,
                    victim,
                )
            )
        references[strategy] = {
            seed: faults.reference_run(
                data, work / f"{strategy}-ref{seed}", strategy, 2, size["steps"], size["checkpoint_every"], seed
            )
            for seed in size["reference_seeds"]
        }
    for r in runs:
        refs = [v for v in references[r["strategy"]].values() if v is not None]
        same_seed = references[r["strategy"]].get(0)
        if same_seed is None or r["final_dev_loss"] is None:
            r["within_variation"] = None
            continue
        spread = max(refs) - min(refs)
        r["within_variation"] = abs(r["final_dev_loss"] - same_seed) <= max(spread, 0.01 * same_seed)
    return {"runs": runs, "references": references}


def summary(kills: dict, vanished: list[dict], ckpt: dict, fuzzed: dict, soaked: dict) -> dict:
    """The headline counts (the interface `docs/results/reliability.json` promises)."""
    return {
        "kills": len(kills["runs"]) + sum(v["vanished"] for v in vanished),
        "kills_recovered": sum(r["recovered"] for r in kills["runs"])
        + sum(v["vanished"] and v["hung"] == 0 and v["stopped"] == v["nproc"] - 1 for v in vanished),
        "checkpoint_kills": ckpt["kill_loop"]["kills"],
        "checkpoint_intact": ckpt["kill_loop"]["intact"],
        "fuzz_cases": fuzzed["total"]["cases"],
        "fuzz_tracebacks": fuzzed["total"]["tracebacks"],
        "soak_steps": soaked["steps_per_rank"],
        "soak_deadlocks": soaked["deadlocks"],
        "soak_rss_growth": soaked["rss_growth"],
    }


def _yes(flag) -> str:
    return {True: "yes", False: "**no**", None: "–"}[flag]


def render(results: dict, report: Report) -> None:
    """The Markdown sections of reliability.md (no figure)."""
    cores = report.machine["cores"]
    report.add("1. Killed workers", _killed_text(results, cores))
    report.add("2. Torn checkpoints", _checkpoints_text(results["checkpoints"]))
    report.add("3. Hostile inputs", _fuzz_text(results["fuzz"]))
    report.add("4. Soak", _soak_text(results["soak"], cores))
    head = summary(
        results["killed_workers"], results["vanished_partner"], results["checkpoints"], results["fuzz"], results["soak"]
    )
    report.add(
        "Summary",
        table(list(head), [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in head.values()]])
        + "\n\n`kills`: workers killed (restarted runs and vanished gossip partners); `kills_recovered`: runs "
        "that completed after their restart, and vanished-partner runs whose survivors all stopped with "
        "an error; `soak_steps`: steps every soak worker reached; `soak_rss_growth`: a fraction.",
    )


def _killed_row(r: dict) -> list:
    loss = r["final_dev_loss"]
    return [
        r["strategy"],
        r["killed_at_step"],
        r["resumed_from"],
        _lost_steps(r["lost_steps"], r["checkpoint_every"]),
        _yes(r["recovered"]),
        loss if loss is None else round(loss, 3),
        _yes(r["within_variation"]),
        r["wall_s"],
    ]


def _lost_steps(lost: int | None, interval: int) -> str:
    """Steps lost to a kill, flagged when more than the checkpoint interval (the ranks' step counts differ
    under claimed batches, and a checkpoint is named after the largest)."""
    if lost is None or lost <= interval:
        return f"{lost} (≤ {interval})"
    return f"**{lost} (over the interval of {interval})**"


def _references_text(references: dict) -> str:
    """The uninterrupted runs' final dev loss per strategy and seed."""
    return (
        "; ".join(
            f"{s}: "
            + ", ".join(f"seed {k} → {v:.3f}" if v is not None else f"seed {k} failed" for k, v in seeds.items())
            for s, seeds in references.items()
            if seeds
        )
        or "none in a quick run"
    )


def _killed_text(results: dict, cores: int) -> str:
    size, kills = SIZES[results["quick"]], results["killed_workers"]
    header = ["strategy", "killed at step", "resumed from", "steps lost (≤ interval)", "completed", "final dev loss"]
    header += ["within run-to-run variation", "wall s"]
    vanished = [
        [
            v["how"],
            f"{v['stopped']} of {v['nproc'] - 1}",
            v["hung"],
            v["stop_after_s"],
            f"`{(v['messages'] or ['–'])[0][:160]}`",
        ]
        for v in results["vanished_partner"]
    ]
    return (
        f"`dasr train --model tiny --nproc 2 --max-steps {size['steps']} --checkpoint-every {size['checkpoint_every']} "
        f"--max-restarts 1`; one worker gets SIGKILL mid-interval; torch's agent restarts all workers, which resume "
        f"from the latest checkpoint ({sharing(2, cores)}).\n\n"
        + table(header, [_killed_row(r) for r in kills["runs"]])
        + f"\n\nUninterrupted runs, final dev loss: {_references_text(kills['references'])}. Within variation: "
        "|killed − same seed| ≤ the spread over seeds (at least 1 %).\n\n"
        "A vanished adpsgd partner, with no agent to stop the others (3 workers, gossip timeout 5 s):\n\n"
        + table(["partner", "survivors stopped with an error", "hung", "seconds to stop", "message"], vanished)
    )


def _checkpoints_text(ckpt: dict) -> str:
    loop, full = ckpt["kill_loop"], ckpt["full_disk"]
    rows = [[k, f"`{v['error']}`", _yes(v["fell_back"])] for k, v in ckpt["damaged"].items()]
    rows.append(
        [
            "full disk (RLIMIT_FSIZE)",
            f"`{full['messages'][0] if full['messages'] else '–'}`",
            f"{_yes(full['checkpoint_intact'])} (old best.pt intact: {_yes(full['best_intact'])}, "
            f"temp files left: {len(full['temp_files_left'])})",
        ]
    )
    return (
        f"A process writing 2-rank checkpoints (2 × 2 MB files + `COMPLETE`) back to back, SIGKILLed at a random "
        f"moment {loop['kills']} times: the newest complete checkpoint loaded with the values written after "
        f"**{loop['intact']} of {loop['kills']}** kills.\n\n"
        + table(["damage", "error", "resume falls back to the previous checkpoint"], rows)
    )


def _fuzz_text(fuzzed: dict) -> str:
    rows = [[t, fuzzed[t]["cases"], fuzzed[t]["tracebacks"]] for t in fuzz.TARGETS]
    rows.append(["**total**", f"**{fuzzed['total']['cases']}**", f"**{fuzzed['total']['tracebacks']}**"])
    return (
        "hypothesis-generated inputs (random bytes, mutated valid files, malformed JSON, wav.scp shell pipes, "
        "bad segments); allowed outcomes: a result, a rejection record, or `DataError`.\n\n"
        + table(["target", "cases", "tracebacks"], rows)
        + "\n\n"
        + (
            "\n".join(f"```\n{e}\n```" for t in fuzz.TARGETS for e in fuzzed[t]["examples"])
            or "No wav.scp pipe ran (a pipe entry would create a file; `allow_pipes` is off)."
        )
    )


def _soak_text(soaked: dict, cores: int) -> str:
    growth = soaked["rss_growth"]
    rows = [
        ["steps per rank (claimed batches: the mean over ranks)", f"{soaked['steps_per_rank']:g}"],
        ["deadlocks", soaked["deadlocks"]],
        ["exit code", soaked["exit_code"]],
        [
            f"RSS growth from step {soaked['rss_from_step']} to the end (worst rank)",
            f"{'–' if growth is None else f'{100 * growth:+.2f} %'} (goal < 5 %)",
        ],
        ["threads a worker gained after that step (max)", soaked["thread_growth"]],
        ["processes of the run left after it exited", soaked["processes_left"]],
        ["addresses its sockets listened on", ", ".join(soaked["listened_on"])],
        ["wall time", f"{soaked['wall_s']} s"],
    ]
    return (
        f"{soaked['nproc']} adpsgd workers ({sharing(soaked['nproc'], cores)}), {soaked['steps']} steps each, "
        f"checkpoint every {max(soaked['steps'] // 4, 1)} steps.\n\n" + table(["measure", "value"], rows)
    )


def run(data_dir: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the reliability checks and write ``reliability.md`` and ``reliability.json`` into ``out_dir``.

    Args:
        data_dir: a data dir with features; None to synthesise a small one.
        quick: the smoke-sized run (under two minutes on 2 cores).
        out_dir: where the report goes.
        command: the command line that started this run, for the report.

    Returns:
        The raw results written to ``reliability.json`` (the headline counts also at its top level).
    """
    size = SIZES[quick]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dasr-reliability-") as tmp:
        work = Path(tmp)
        data = data_dir or str(work / "corpus")
        if data_dir is None:
            synthesize(data, quick=True)
        kills = killed_workers(data, work / "kills", size)
        vanished = [faults.vanished_partner(work / f"vanish-{how}", how) for how in size["vanish"]]
        ckpt = {
            "kill_loop": faults.checkpoint_kill_loop(work / "kill-loop", size["checkpoint_kills"]),
            "damaged": faults.damaged_checkpoints(work / "damaged"),
            "full_disk": faults.full_disk(work / "full"),
        }
        fuzzed = fuzz.fuzz_all(work / "fuzz", size["fuzz_per_target"])
        soaked = soak.soak(data, work / "soak", size["soak_nproc"], size["soak_steps"], size["soak_rss_from"])
    head = summary(kills, vanished, ckpt, fuzzed, soaked)
    results = {
        **head,
        "quick": quick,
        "data": data_dir or "synthesised (temporary)",
        "wall_s": round(time.monotonic() - start, 1),
        "killed_workers": kills,
        "vanished_partner": vanished,
        "checkpoints": ckpt,
        "fuzz": fuzzed,
        "soak": soaked,
    }
    publish("reliability", TITLE, command, results, render, out_dir, top_level=head)
    return results


def run_cli(args, command: str) -> dict:
    """`dasr bench reliability`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command)
