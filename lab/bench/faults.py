"""Faults injected into real runs: a worker killed with SIGKILL, a gossip partner that vanishes,
a checkpoint writer killed at random moments, damaged checkpoint files, a full disk.

Each check returns a dict of what it did and what survived; `dasr bench reliability` and the
tests run the same functions at different sizes.
"""

from __future__ import annotations

import itertools
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from dasr.errors import DasrError
from dasr.parallel.launch import free_port
from dasr.train import checkpoint
from dasr.train.plots import read_metrics
from lab.bench.procs import Run, workers
from lab.bench.runs import TrainRun


def train_command(
    data: str | os.PathLike,
    exp: str | os.PathLike,
    strategy: str,
    nproc: int,
    steps: int,
    *extra,
    batch_frames: int = 1200,
) -> list[str]:
    """`dasr train` of the tiny preset, one metrics record per step, dev evaluation only at the end."""
    options = ["--model", "tiny", "--max-steps", steps, "--batch-frames", batch_frames, "--log-every", 1]
    options += ["--gossip-period-s", 0.05, "--eval-every-epochs", 100000, *extra]
    return TrainRun(strategy, strategy, nproc, list(map(str, options))).command(data, exp)


def final_dev_loss(exp: str | os.PathLike) -> float | None:
    """The dev loss of the last evaluation of a run."""
    evals = [r for r in read_metrics(Path(exp)) if r["kind"] == "eval"]
    return evals[-1]["dev_loss"] if evals else None


def restarts(records: list[dict]) -> list[dict]:
    """Per rank and restart: the last step logged before it and the step it resumed from.

    A restarted worker's records start again at a lower wall time (seconds since its start).
    """
    found, last = [], {}
    for r in records:
        if r["kind"] != "train":
            continue
        before = last.get(r["rank"])
        if before is not None and (r["step"] <= before["step"] or r["wall_s"] < before["wall_s"]):
            found.append({"rank": r["rank"], "last_step": before["step"], "resumed_from": r["step"] - 1})
        last[r["rank"]] = r
    return found


def _start(exp: Path, data, strategy: str, nproc: int, steps: int, checkpoint_every: int, seed: int, *extra) -> Run:
    """A tiny-preset run checkpointing every ``checkpoint_every`` steps, logging beside ``exp``."""
    command = train_command(
        data, exp, strategy, nproc, steps, "--checkpoint-every", checkpoint_every, "--seed", seed, *extra
    )
    return Run.start(command, exp.parent / f"{exp.name}.log")


def _kill_at(run: Run, exp: Path, kill_at_step: int, victim: int, deadline: float) -> int | None:
    """SIGKILL worker ``victim`` once any rank logged ``kill_at_step``; the step logged then (None: no kill)."""
    while run.process.poll() is None and time.monotonic() < deadline:
        logged = [r["step"] for r in read_metrics(exp) if r["kind"] == "train"]
        procs = workers(run.pid)
        if logged and max(logged) >= kill_at_step and len(procs) > victim:
            os.kill(procs[victim], signal.SIGKILL)
            return max(logged)
        time.sleep(0.05)
    return None


def kill_worker_run(
    data: str | os.PathLike,
    exp: str | os.PathLike,
    strategy: str,
    nproc: int = 2,
    steps: int = 30,
    checkpoint_every: int = 5,
    kill_at_step: int = 12,
    victim: int = 1,
    seed: int = 0,
    timeout_s: float = 300.0,
) -> dict:
    """Train with ``--max-restarts 1``, SIGKILL worker ``victim`` once any rank logged ``kill_at_step``.

    Returns:
        ``recovered`` (the run completed all ``steps`` after the restart), the step logged when
        the kill came, the step the restarted workers resumed from, ``lost_steps`` (the most
        steps any rank redid), the final dev loss and the wall time.
    """
    exp = Path(exp)
    run = _start(exp, data, strategy, nproc, steps, checkpoint_every, seed, "--max-restarts", 1)
    start = time.monotonic()
    try:
        killed = _kill_at(run, exp, kill_at_step, victim, start + timeout_s)
        code = run.wait(max(1.0, timeout_s - (time.monotonic() - start)))
    finally:
        if run.process.poll() is None:
            run.kill()
    records = read_metrics(exp)
    found = restarts(records)
    train_steps = [(r["rank"], r["step"]) for r in records if r["kind"] == "train"]
    final_steps = dict(train_steps)  # each rank's last record
    recovered = (  # all the data trained: every rank's steps (lockstep), or all ranks' claimed batches together
        killed is not None
        and code == 0
        and bool(found)
        and (exp / "final.pt").exists()
        and sum(final_steps.values()) == steps * nproc
    )
    return {
        "strategy": strategy,
        "nproc": nproc,
        "steps": steps,
        "checkpoint_every": checkpoint_every,
        "killed_at_step": killed,
        "exit_code": code,
        "recovered": recovered,
        "resumed_from": min((r["resumed_from"] for r in found), default=None),
        "lost_steps": max((r["last_step"] - r["resumed_from"] for r in found), default=None),
        "final_step": max((step for _, step in train_steps), default=0),
        "final_dev_loss": final_dev_loss(exp),
        "wall_s": round(time.monotonic() - start, 1),
        "log_tail": "" if recovered else run.tail(),
    }


def reference_run(
    data: str | os.PathLike,
    exp: str | os.PathLike,
    strategy: str,
    nproc: int = 2,
    steps: int = 30,
    checkpoint_every: int = 5,
    seed: int = 0,
    timeout_s: float = 300.0,
) -> float | None:
    """The final dev loss of the same run uninterrupted (None when it failed)."""
    run = _start(Path(exp), data, strategy, nproc, steps, checkpoint_every, seed)
    return final_dev_loss(exp) if run.wait(timeout_s) == 0 else None


def gossip_until_error(timeout_s: float, how: str) -> None:
    """An adpsgd worker of :func:`vanished_partner` (env:// rendezvous); the last rank vanishes after 50 steps.

    Prints ``STOPPED <time> <error>`` and exits 1 when its gossip fails.
    """
    from dasr.parallel import make_strategy
    from dasr.parallel.launch import init_worker

    info = init_worker(timeout_s=30)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = make_strategy("adpsgd", period_s=0.01, timeout_s=timeout_s)
    strategy.wrap(model, optimizer)
    for step in itertools.count(1):
        optimizer.zero_grad()
        model(torch.randn(8, 64)).pow(2).mean().backward()
        try:
            strategy.step(optimizer)
        except Exception as e:
            print(f"STOPPED {time.time():.3f} {type(e).__name__}: {e}", flush=True)
            os._exit(1)
        if info.rank == info.world_size - 1 and step == 50:
            print(f"VANISH {time.time():.3f}", flush=True)
            os.kill(os.getpid(), getattr(signal, how))
        time.sleep(0.005)


def vanished_partner(
    workdir: str | os.PathLike, how: str = "SIGKILL", nproc: int = 3, timeout_s: float = 5.0, limit_s: float = 90.0
) -> dict:
    """adpsgd workers started without an agent (nobody restarts or stops them); the last one vanishes.

    ``how``: SIGKILL (the process dies, its sockets close) or SIGSTOP (it freezes, its sockets
    stay open: only the communication timeout ``timeout_s`` can tell).

    Returns:
        How many survivors stopped on their own with an error (``stopped``), how many had to be
        killed (``hung``), the seconds from the kill to the slowest stop, and the survivors' messages.
    """
    workdir = Path(workdir)
    port = free_port()
    code = f"from lab.bench.faults import gossip_until_error; gossip_until_error({timeout_s}, {how!r})"
    runs = [
        Run.start(
            [sys.executable, "-c", code],
            workdir / f"gossip-rank{rank}.log",
            env={
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(nproc),
            },
        )
        for rank in range(nproc)
    ]
    start = time.monotonic()
    codes = [run.wait(max(1.0, limit_s - (time.monotonic() - start))) for run in runs[:-1]]
    runs[-1].kill()
    logs = [run.log.read_text(errors="replace") for run in runs]
    vanish = next((float(ln.split()[1]) for ln in logs[-1].splitlines() if ln.startswith("VANISH")), None)
    messages, stop_times = [], []
    for log in logs[:-1]:
        line = next((ln for ln in log.splitlines() if ln.startswith("STOPPED")), None)
        if line is not None:
            stop_times.append(float(line.split()[1]))
            messages.append(line.split(" ", 2)[2])
    return {
        "how": how,
        "nproc": nproc,
        "timeout_s": timeout_s,
        "vanished": vanish is not None,
        "stopped": len(stop_times),
        "hung": sum(c is None for c in codes),
        "stop_after_s": round(max(stop_times) - vanish, 2) if stop_times and vanish else None,
        "messages": messages,
    }


# ------------------------------------------------------------------------------ checkpoints


def _fake_state(step: int, rank: int, numel: int) -> dict:
    """A checkpoint-shaped state whose every value tells which step and rank wrote it."""
    return {
        "model": {"w": torch.full((numel,), float(step * 10 + rank))},
        "optimizer": {"state": {0: {"momentum_buffer": torch.full((numel,), float(step))}}},
        "progress": {"step": step},
    }


def _intact(state: dict | None, step: int, rank: int) -> bool:
    return (
        state is not None
        and state["progress"]["step"] == step
        and bool((state["model"]["w"] == step * 10 + rank).all())
    )


def write_checkpoints_forever(root: str, world_size: int = 2, numel: int = 250_000) -> None:
    """Write checkpoints of ``world_size`` fake ranks one after another into ``root`` until killed."""
    root_path = Path(root)
    done = checkpoint.list_complete(root_path)
    step = int(done[-1].name.split("-")[1]) + 1 if done else 1
    announced = False
    while True:
        for rank in range(world_size):
            checkpoint.save_rank(root_path, step, rank, _fake_state(step, rank, numel))
        checkpoint.mark_complete(root_path, step, world_size, keep=2)
        if not announced:
            print("ready", flush=True)
            announced = True
        step += 1


def latest_loads(root: str | os.PathLike, world_size: int = 2) -> bool:
    """True when the newest complete checkpoint under ``root`` loads for every rank with the values written."""
    complete = checkpoint.list_complete(Path(root))
    if not complete:
        return False
    step = int(complete[-1].name.split("-")[1])
    try:
        return all(_intact(checkpoint.load_file(complete[-1] / f"rank{r}.pt"), step, r) for r in range(world_size))
    except DasrError:
        return False


def checkpoint_kill_loop(root: str | os.PathLike, kills: int, max_delay_s: float = 0.4, seed: int = 0) -> dict:
    """SIGKILL a checkpoint writer ``kills`` times at random moments; after each, check the latest checkpoint.

    Returns:
        ``kills``, ``intact`` (kills after which the newest complete checkpoint loaded with the
        right values for every rank) and the checkpoints written in all.
    """
    rng = random.Random(seed)
    root = Path(root)
    code = f"from lab.bench.faults import write_checkpoints_forever; write_checkpoints_forever({str(root)!r})"
    intact = done = 0
    for _ in range(kills):
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            process.stdout.readline()  # "ready": imports done, a first checkpoint written
            time.sleep(rng.uniform(0, max_delay_s))
        finally:
            process.kill()
            process.wait()
        done += 1
        intact += latest_loads(root)
    steps = checkpoint.list_complete(root)
    return {"kills": done, "intact": intact, "last_step": int(steps[-1].name.split("-")[1]) if steps else 0}


def damaged_checkpoints(root: str | os.PathLike) -> dict:
    """Truncate, then bit-flip, the newest of two checkpoints: each must be a clear error and fall back.

    Returns:
        Per damage: the error message and whether :func:`checkpoint.load_latest` fell back to
        the previous checkpoint.
    """
    root = Path(root)
    out = {}
    for damage in ("truncated", "bit-flipped"):
        base = root / damage
        for step in (1, 2):
            checkpoint.save_rank(base, step, 0, _fake_state(step, 0, 10_000))
            checkpoint.mark_complete(base, step, 1, keep=3)
        latest = checkpoint.step_dir(base, 2) / "rank0.pt"
        raw = bytearray(latest.read_bytes())
        if damage == "truncated":
            raw = raw[: len(raw) // 2]
        else:
            middle = len(raw) // 2
            raw[middle] ^= 0x10
        latest.write_bytes(bytes(raw))
        try:
            checkpoint.load_file(latest)
            message = None
        except DasrError as e:
            message = str(e)
        out[damage] = {"error": message, "fell_back": _intact(checkpoint.load_latest(base, 0), 1, 0)}
    return out


def _save_with_file_size_limit(root: str, limit_bytes: int, numel: int) -> str:
    """Child of :func:`full_disk`: with RLIMIT_FSIZE at ``limit_bytes``, save step 2 and a new best.pt."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, as on a full disk, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    messages = []
    for save in (
        lambda: checkpoint.save_rank(Path(root), 2, 0, _fake_state(2, 0, numel)),
        lambda: checkpoint.atomic_save(_fake_state(2, 0, numel), Path(root) / "best.pt"),
    ):
        try:
            save()
            messages.append("written")
        except DasrError as e:
            messages.append(str(e))
    return "\n".join(messages)


def full_disk(root: str | os.PathLike, limit_bytes: int = 200_000) -> dict:
    """Write checkpoint 1 and best.pt, then try to write bigger ones in a child that may not grow a file past ``limit_bytes``.

    Returns:
        The child's messages and whether checkpoint 1 and the old best.pt still load intact
        (and no temp file is left behind).
    """
    root = Path(root)
    checkpoint.save_rank(root, 1, 0, _fake_state(1, 0, 1000))
    checkpoint.mark_complete(root, 1, 1, keep=3)
    checkpoint.atomic_save(_fake_state(1, 0, 1000), root / "best.pt")
    code = (
        "from lab.bench.faults import _save_with_file_size_limit as f; "
        f"print(f({str(root)!r}, {limit_bytes}, {limit_bytes}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    leftovers = [p.name for p in root.rglob("*") if ".tmp-" in p.name]
    return {
        "messages": done.stdout.strip().splitlines(),
        "exit_code": done.returncode,
        "checkpoint_intact": _intact(checkpoint.load_latest(root, 0), 1, 0),
        "best_intact": _intact(checkpoint.load_file(root / "best.pt"), 1, 0),
        "temp_files_left": leftovers,
    }
