"""The trainer through `dasr train` with real worker processes on loopback."""

import json
import socket
import subprocess
import sys

import pytest

from dasr.train.checkpoint import list_complete, load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(data, exp, *extra):
    return [
        sys.executable,
        "-m",
        "dasr",
        "train",
        "--data",
        str(data),
        "--exp",
        str(exp),
        "--model",
        "tiny",
        "--max-steps",
        "3",
        "--batch-frames",
        "1200",
        "--log-every",
        "1",
        *map(str, extra),
    ]


def test_two_nodes_train_together_over_c10d_rendezvous(speech_data_dir, tmp_path):
    """Two launcher processes (`--nnodes 2`), one worker each, meet at one rendezvous and train with sync."""
    exp = tmp_path / "exp"  # a shared file system, as on a cluster
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [
        subprocess.Popen(
            _train_args(
                speech_data_dir,
                exp,
                "--strategy",
                "sync",
                "--nproc",
                1,
                "--nnodes",
                2,
                "--node-rank",
                rank,
                "--rdzv-endpoint",
                endpoint,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-2000:]

    _check_train_records(exp, communicates_every_step=True)
    last = list_complete(exp / "checkpoints")[-1]
    a, b = load_file(last / "rank0.pt")["model"], load_file(last / "rank1.pt")["model"]
    assert all((a[k] == b[k]).all() for k in a)  # sync replicas stay identical


@pytest.mark.parametrize("strategy", ["adpsgd", "hybrid", "ps"])
def test_strategies_train_through_the_cli(speech_data_dir, tmp_path, strategy):
    extra = ["--strategy", strategy, "--nproc", 2, "--group-size", 1, "--gossip-period-s", 0.05]
    done = subprocess.run(
        _train_args(speech_data_dir, tmp_path / "exp", *extra), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = list_complete(tmp_path / "exp" / "checkpoints")[-1]
    a, b = load_file(last / "rank0.pt")["model"], load_file(last / "rank1.pt")["model"]
    assert all((a[k] == b[k]).all() for k in a)  # checkpoints hold the consensus model
    assert (tmp_path / "exp" / "final.pt").exists()
    _check_train_records(tmp_path / "exp", communicates_every_step=strategy != "adpsgd")


def _check_train_records(exp, communicates_every_step):
    """metrics.jsonl carries the per-step fields of the interface, from every rank."""
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert {r["rank"] for r in train} == {0, 1}
    for r in train:
        assert {"rank", "step", "epoch", "loss", "lr", "samples_per_s", "compute_s", "comm_s", "wall_s"} <= r.keys()
        assert r["compute_s"] > 0 and r["comm_s"] >= 0 and r["exposed_comm_s"] >= 0 and r["wall_s"] > 0, r
        if communicates_every_step:
            assert r["comm_s"] > 0, r


@pytest.mark.parametrize("strategy", ["adpsgd", pytest.param("sync", marks=pytest.mark.slow)])  # sync: 14 s more
def test_time_mode_evaluates_at_agreed_marks_and_lets_adpsgd_run_ahead(speech_data_dir, tmp_path, strategy):
    """--eval-every-s: evaluations at marks of training time; no epoch-end waits for a 4x slow rank in adpsgd."""
    exp = tmp_path / "exp"
    args = _train_args(
        speech_data_dir,
        exp,
        "--strategy",
        strategy,
        "--nproc",
        2,
        "--gossip-period-s",
        0.05,
        "--straggler",
        "1:4",
        "--eval-every-s",
        2,
        "--train-seconds",
        6,
    )
    del args[args.index("--max-steps") : args.index("--max-steps") + 2]
    done = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert sorted(r["rank"] for r in evals) == [0, 0, 0, 1, 1, 1]
    for rank in (0, 1):  # one evaluation per 2 s mark of training time, at a step past it (a loaded machine's
        times = [r["train_s"] for r in evals if r["rank"] == rank]  # slow step may carry it past the next mark)
        # as round(t / 2) == k + 1 allowed: a rank may be up to 1 s short of the mark another rank crossed first
        assert all(t >= 2 * (k + 1) - 1 for k, t in enumerate(times)), evals
        assert [round(t / 2) for t in times] == sorted({round(t / 2) for t in times}), evals  # never two per mark
    last_step = {rank: max(r["step"] for r in records if r["rank"] == rank and r["kind"] == "train") for rank in (0, 1)}
    if strategy == "adpsgd":
        assert last_step[0] >= 2 * last_step[1], last_step  # nobody waited for the slow rank
    else:
        assert last_step[0] == last_step[1], last_step  # sync: lockstep, marks agreed by all-reduce
    complete = list_complete(exp / "checkpoints")
    assert len(complete) >= 1 and (complete[-1] / "rank1.pt").exists()  # one checkpoint dir for all ranks
