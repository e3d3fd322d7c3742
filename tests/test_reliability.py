"""Faults injected into real runs: killed workers, vanished gossip partners, torn and damaged
checkpoints, a full disk, malicious pickles, loopback binding, a short soak."""

import os
import pickle
import socket

import pytest
import torch

from dasr.errors import DasrError
from dasr.train import checkpoint
from lab.bench import faults, soak
from lab.bench.procs import listening_addresses


@pytest.mark.slow  # 18 s; `make soak` kills sync workers too
def test_killed_sync_worker_restarts_from_checkpoint_and_ends_like_an_uninterrupted_run(speech_data_dir, tmp_path):
    killed = faults.kill_worker_run(
        speech_data_dir, tmp_path / "killed", "sync", steps=16, checkpoint_every=5, kill_at_step=7, timeout_s=120
    )
    assert killed["recovered"], killed["log_tail"]
    assert killed["resumed_from"] % 5 == 0 and killed["resumed_from"] <= killed["killed_at_step"]
    assert 0 <= killed["lost_steps"] <= 5
    reference = faults.reference_run(speech_data_dir, tmp_path / "straight", "sync", steps=16, checkpoint_every=5)
    assert killed["final_dev_loss"] == pytest.approx(reference, rel=1e-4)  # sync resumes exactly


@pytest.mark.slow  # 11 s; `make soak` kills adpsgd workers too
def test_killed_adpsgd_worker_restarts_from_checkpoint(speech_data_dir, tmp_path):
    killed = faults.kill_worker_run(
        speech_data_dir,
        tmp_path / "killed",
        "adpsgd",
        steps=16,
        checkpoint_every=5,
        kill_at_step=7,
        victim=0,
        timeout_s=120,
    )
    assert killed["recovered"], killed["log_tail"]
    # adpsgd workers claim batches: a mark every 5 steps of each is one every 10 batches of both,
    # and one worker may have trained any number of those 10 before the kill
    assert 0 <= killed["lost_steps"] <= 10


@pytest.mark.parametrize("how", ["SIGKILL", pytest.param("SIGSTOP", marks=pytest.mark.slow)])
def test_vanished_gossip_partner_stops_the_others_with_an_error(tmp_path, how):
    result = faults.vanished_partner(tmp_path, how, timeout_s=5.0, limit_s=60.0)
    assert result["vanished"] and result["hung"] == 0 and result["stopped"] == 2, result
    assert result["stop_after_s"] < 5.0 + 10.0
    assert all(m.startswith("GossipError: gossip thread") for m in result["messages"])


def test_checkpoint_writer_killed_at_random_moments_leaves_latest_loadable(tmp_path):
    result = faults.checkpoint_kill_loop(tmp_path, kills=3)
    assert result == {**result, "kills": 3, "intact": 3} and result["last_step"] > 3
    steps = [d for d in tmp_path.iterdir() if d.name.startswith("step-")]
    assert len(steps) <= 2 + 2  # keep=2, plus one being marked and one being written when killed


def test_truncated_or_bit_flipped_checkpoint_is_a_clear_error_and_resume_falls_back(tmp_path):
    result = faults.damaged_checkpoints(tmp_path)
    assert "truncated or corrupt" in result["truncated"]["error"]
    assert "fails its CRC check" in result["bit-flipped"]["error"]
    assert result["truncated"]["fell_back"] and result["bit-flipped"]["fell_back"]


def test_full_disk_keeps_the_previous_checkpoint_with_a_clear_message(tmp_path):
    result = faults.full_disk(tmp_path)
    assert result["exit_code"] == 0 and len(result["messages"]) == 2
    assert all("cannot write" in m and "File too large" in m for m in result["messages"])
    assert "previous version is kept" in result["messages"][1]
    assert result["checkpoint_intact"] and result["best_intact"] and result["temp_files_left"] == []


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_malicious_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    with pytest.raises(DasrError, match="refused.*weights_only=True.*GLOBAL"):
        checkpoint.load_file(path)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"  # not a torch zip at all
    plain.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(DasrError, match="truncated or corrupt"):
        checkpoint.load_file(plain)
    assert not marker.exists()


def test_listening_addresses_tell_loopback_from_every_interface():
    with socket.create_server(("127.0.0.1", 0)), socket.create_server(("", 0)):
        assert listening_addresses([os.getpid()]) == {"127.0.0.1", "0.0.0.0"}
    if socket.has_dualstack_ipv6():  # what torch's TCPStore binds to by itself
        with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True):
            assert listening_addresses([os.getpid()]) == {"::"}


@pytest.mark.parametrize("nproc,steps,rss_from", [(4, 40, 15), pytest.param(8, 150, 50, marks=pytest.mark.slow)])
def test_short_soak_no_deadlock_no_leaks_loopback_only(speech_data_dir, tmp_path, nproc, steps, rss_from):
    result = soak.soak(speech_data_dir, tmp_path / "soak", nproc, steps, rss_from, stall_s=60, limit_s=300)
    assert result["exit_code"] == 0 and result["deadlocks"] == 0, result["log_tail"]
    assert result["steps_per_rank"] == steps and result["processes_left"] == 0
    assert result["thread_growth"] == 0 and result["rss_growth"] < 0.05
    assert result["listened_on"] == ["127.0.0.1"]  # rendezvous, stores and gloo bind to loopback
