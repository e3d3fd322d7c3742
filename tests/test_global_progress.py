"""Global progress in the default (epoch) mode: independent workers claim an epoch's batches.

`dasr train` with real worker processes on 127.0.0.1. Before claims, every adpsgd rank had
the same number of batches per epoch, so the fast workers waited for a straggler's share at
every epoch end and all ranks made the same number of steps.
"""

import dataclasses

import pytest

from dasr.data.features import compute_features
from dasr.data.manifest import read_manifest, write_manifest

COPIES = 4  # the 8 fixture utterances 4 times over: an epoch of 32 one-utterance batches


@pytest.fixture
def larger_train_dir(speech_data_dir, tmp_path):
    """The speech fixture with a 4x longer train split (copies under their own ids)."""
    data = tmp_path / "larger"
    train = read_manifest(speech_data_dir / "train.jsonl")
    write_manifest(
        data / "train.jsonl", [dataclasses.replace(u, id=f"{u.id}-{k}") for k in range(COPIES) for u in train]
    )
    for split in ("dev", "test"):
        write_manifest(data / f"{split}.jsonl", read_manifest(speech_data_dir / f"{split}.jsonl"))
    compute_features(data, jobs=1)
    return data


def _last_steps(records, world):
    return [max(r["step"] for r in records if r["kind"] == "train" and r["rank"] == k) for k in range(world)]


@pytest.mark.slow  # 11 s; the claimed sampler's tests cover the claims in-process
def test_fast_adpsgd_workers_take_more_of_each_epoch_than_a_5x_straggler(
    larger_train_dir, tmp_path, dasr_train, read_metrics
):
    exp = tmp_path / "exp"
    done = dasr_train(larger_train_dir, exp, "--strategy", "adpsgd", "--nproc", 4, "--epochs", 2, "--straggler", "0:5")
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(exp)
    steps = _last_steps(records, 4)
    assert min(steps[1:]) >= 2 * steps[0], steps  # same wall time, at least twice the slow rank's steps
    assert sum(steps) == 2 * 8 * COPIES, steps  # 2 epochs of one-utterance batches (200 frames), each trained once
    evals = [r for r in records if r["kind"] == "eval"]
    assert sorted(r["epoch"] for r in evals if r["rank"] == 0) == [0, 1]


def test_sync_workers_keep_equal_shares(speech_data_dir, tmp_path, dasr_train, read_metrics):
    exp = tmp_path / "exp"
    done = dasr_train(speech_data_dir, exp, "--strategy", "sync", "--nproc", 2, "--epochs", 2, "--straggler", "0:3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _last_steps(read_metrics(exp), 2) == [8, 8]  # lockstep: 4 batches each per epoch


def test_time_mode_refuses_step_counted_checkpoints(speech_data_dir, tmp_path, dasr_train):
    done = dasr_train(
        speech_data_dir, tmp_path / "exp", "--eval-every-s", 2, "--train-seconds", 4, "--checkpoint-every", 5
    )
    assert done.returncode != 0
    assert "--checkpoint-every cannot be combined with --eval-every-s" in done.stderr
