"""Calibrating the simulator to this machine: the strategies benchmark's single run plus a link micro-benchmark.

Only these measurements go in (never the multi-worker runs the simulator is checked against):

* ``docs/results/strategies.json`` (``dasr bench strategies``): its ``setup`` (cores, model
  bytes, utterances per step, gossip period, hybrid group size) and its N = 1 ``single``
  run (compute and whole-step time of one worker alone);
* :func:`measure_link`: two gloo processes on 127.0.0.1 all-reducing a few message sizes
  (latency and bandwidth of the loopback "link"), and one memory pass over the parameter
  vector (what snapshot, merge and server updates cost per pass);
* :func:`measure_contention`: ``k`` = 1, 2, 4 single-thread processes training the benchmark's
  model on a random batch at once; their aggregate steps/s relative to one alone is the
  engine's ``speedup`` (how far the shared cores fall short of ideal processor sharing).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch

from dasr.errors import DasrError
from lab.sim import model
from lab.sim.cluster import Cluster, Workload

#: all-reduce message sizes of the link micro-benchmark, in bytes (the model's own size is added)
LINK_SIZES = (64 * 1024, 1024 * 1024, 4 * 1024 * 1024)
#: concurrent processes of the contention micro-benchmark
CONTENTION_PROCS = (1, 2, 4)


def load_strategies(path: str | os.PathLike) -> dict:
    """The ``results`` of a ``strategies.json`` written by ``dasr bench strategies`` (setup + runs)."""
    path = Path(path)
    if not path.exists():
        raise DasrError(f"no calibration file {path}; run `dasr bench strategies` first (it writes it)")
    results = json.loads(path.read_text()).get("results", {})
    if "setup" not in results or "runs" not in results:
        raise DasrError(f"{path} has no results.setup and results.runs; is it from `dasr bench strategies`?")
    if not any(r["strategy"] == "single" and r["nproc"] == 1 for r in results["runs"]):
        raise DasrError(f"{path} has no N = 1 single run to take the compute time from")
    return results


def allreduce_worker(sizes: list[int], reps: int) -> dict[int, float]:
    """In a launched worker: median seconds of a gloo all-reduce over all workers per message size (bytes)."""
    import torch.distributed as dist

    from dasr.parallel.launch import finish_worker, init_worker

    init_worker()
    out = {}
    try:
        for size in sizes:
            x = torch.ones(max(size // 4, 1))
            for _ in range(2):
                dist.all_reduce(x)
            times = []
            for _ in range(reps):
                dist.barrier()
                t = time.perf_counter()
                dist.all_reduce(x)
                times.append(time.perf_counter() - t)
            out[size] = statistics.median(times)
    finally:
        finish_worker()
    return out


def pass_seconds(nbytes: int, reps: int = 7) -> float:
    """Median seconds of one ``add_`` pass over a float32 vector of ``nbytes`` on one thread (reads 2, writes 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.ones(nbytes // 4), torch.ones(nbytes // 4)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a.add_(b)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        torch.set_num_threads(threads)


def measure_link(param_bytes: int, reps: int = 7) -> dict:
    """Two gloo processes on 127.0.0.1: median all-reduce seconds per size, the fitted link, one memory pass.

    Returns:
        ``{"allreduce_s": {bytes: seconds}, "latency_s", "bandwidth_Bps", "pass_s"}``.
    """
    from dasr.parallel.launch import launch

    sizes = sorted({*LINK_SIZES, int(param_bytes)})
    times = launch(allreduce_worker, (sizes, reps), nproc=2)[0]
    link = model.fit_link(list(times), list(times.values()), ranks=2)
    return {
        "allreduce_s": {int(k): v for k, v in times.items()},
        "latency_s": link.latency_s,
        "bandwidth_Bps": link.bandwidth_Bps,
        "pass_s": pass_seconds(int(param_bytes)),
    }


def _contention_worker(conn, utterances: int, seconds: float) -> None:
    """One process of :func:`measure_contention`: warm up, then time bare steps in each window it is sent.

    Receives ``(start wall time, window s)`` (or None to stop), answers steps/s: the steps completed
    inside the window over the time the last of them completed (it keeps stepping until the window
    ends, so its neighbours see the same load throughout).
    """
    torch.set_num_threads(1)
    from dasr.data.tokenizer import CharTokenizer
    from dasr.model.blstm import BlstmCtc, preset_config
    from lab.workload import bare_step, random_batch

    vocab = CharTokenizer().vocab_size
    net = BlstmCtc(preset_config("demo", vocab))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    batch = random_batch(utterances, seconds, vocab)
    bare_step(net, optimizer, batch, 0.0)
    conn.send("ready")
    while (window := conn.recv()) is not None:
        start, length = window
        time.sleep(max(start - time.time(), 0.0))
        t0, done = time.perf_counter(), []
        while not done or done[-1] < length:
            bare_step(net, optimizer, batch, 0.0)
            done.append(time.perf_counter() - t0)
        inside = [t for t in done if t <= length] or done[:1]
        conn.send(len(inside) / inside[-1])


def measure_contention(
    utterances: int, seconds: float, window_s: float = 3.0, procs: tuple[int, ...] = CONTENTION_PROCS
) -> dict[int, float]:
    """Aggregate speed of ``k`` concurrent single-thread training processes relative to one, for ``k`` in ``procs``.

    Every process trains the strategies benchmark's model (``demo`` preset, character units) with
    bare steps on a random batch of ``utterances`` x ``seconds`` of audio; for each ``k``, ``k`` of
    them start together and step for ``window_s``, in the order 1, 2, 4, 4, 2, 1 (each ``k``'s
    rate is the mean of its two windows). Returns ``{k: s(k)}`` with ``s(1) = 1``.
    """
    ctx = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    for _ in range(max(procs)):
        parent, child = ctx.Pipe()
        worker = ctx.Process(target=_contention_worker, args=(child, utterances, seconds), daemon=True)
        worker.start()
        pipes.append(parent)
        workers.append(worker)
    try:
        for conn in pipes:
            conn.recv()
        rates: dict[int, list[float]] = {}
        ks = sorted({1, *procs})
        for k in ks + ks[::-1]:  # 1 2 4 4 2 1: a drift of the background load hits every k alike
            start = time.time() + 0.2
            for conn in pipes[:k]:
                conn.send((start, window_s))
            rates.setdefault(k, []).append(sum(conn.recv() for conn in pipes[:k]))
    except EOFError:
        raise DasrError("a process of the CPU contention micro-benchmark died; see its error above") from None
    finally:
        for conn, worker in zip(pipes, workers):
            if worker.is_alive():
                conn.send(None)
            worker.join(timeout=30)
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    return {k: mean[k] / mean[1] for k in sorted(mean)}


def single_run(results: dict) -> dict:
    """The N = 1 ``single`` run of a strategies benchmark."""
    return next(r for r in results["runs"] if r["strategy"] == "single" and r["nproc"] == 1)


def batch_shape(setup: dict) -> tuple[int, float]:
    """Utterances and seconds of audio per utterance of the benchmark's steps (100 frames/s)."""
    utterances = max(1, round(setup["utts_per_step"]))
    return utterances, setup.get("batch_frames", 300 * utterances) / setup["utts_per_step"] / 100


def machine_model(
    results: dict, link: dict, compute_cv: float, speedup: dict[int, float] | None = None
) -> tuple[Workload, Cluster]:
    """This machine as the simulator sees it: the single run's step, the setup, the measured link.

    Workers share ``setup.cores`` cores, at the measured ``speedup`` (None: ideally); gloo runs
    on the CPU, so transfers are CPU work.
    """
    setup, one = results["setup"], single_run(results)
    compute = one["compute_s"]
    work = Workload(
        compute_s=compute,
        other_s=max(one["step_s"] - compute, 0.0),
        samples_per_step=setup["utts_per_step"],
        param_bytes=setup["param_bytes"],
        pass_s=link["pass_s"],
        compute_cv=compute_cv,
        gossip_period_s=setup.get("gossip_period_s", 0.0),
        group_size=setup.get("group_size", 2),
    )
    cluster = Cluster(
        cores=setup["cores"],
        link=model.Link(link["latency_s"], link["bandwidth_Bps"]),
        comm_on_cpu=True,
        speedup=speedup,
    )
    return work, cluster
