"""Slow (make test-all): adpsgd keeps sync's accuracy on the demo corpus at equal epochs."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _dasr(*args, timeout):
    done = subprocess.run([sys.executable, "-m", "dasr", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def _final_dev_wer(exp) -> float:
    evals = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    return [r for r in evals if r.get("kind") == "eval" and r["rank"] == 0][-1]["dev_wer"]


def test_adpsgd_matches_sync_dev_wer_on_four_workers(tmp_path):
    data = tmp_path / "data"
    _dasr("corpus", "synth", "--out", data, "--hours", 1, timeout=900)
    _dasr("features", data, timeout=900)
    wers = {}
    # Measured 2026-11-25 on 2 cores: sync 73.4 %, adpsgd 80.1 % with the 0.5 s gossip period of
    # conf/demo.yaml, 75.9 % with 0.1 s (3.4 % relative): this test still fails; see issue 5's note.
    for strategy in ("sync", "adpsgd"):
        exp = tmp_path / strategy
        _dasr("train", "--data", data, "--exp", exp, "--preset", "demo", "--strategy", strategy, "--nproc", 4,
              "--epochs", 10, "--batch-frames", 2000, "--eval-every-epochs", 10, "--gossip-period-s", 0.1,
              timeout=5400)
        wers[strategy] = _final_dev_wer(exp)
    assert wers["adpsgd"] <= wers["sync"] * 1.03, wers
