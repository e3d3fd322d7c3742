"""examples/adpsgd_classifier.py runs as users run it: torchrun, or starting its own workers."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "adpsgd_classifier.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.parametrize(
    "command",
    [
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(EXAMPLE), "--steps", "200"],
        [sys.executable, str(EXAMPLE), "--nproc", "2", "--steps", "200"],
    ],
    ids=["torchrun", "self-started"],
)
def test_example_trains_and_averages(command):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.findall(r"rank (\d): test accuracy ([0-9.]+) after 200 steps and (\d+) gossip rounds", done.stdout)
    assert sorted(r for r, _, _ in found) == ["0", "1"], done.stdout
    accuracies = {a for _, a, _ in found}
    assert len(accuracies) == 1, done.stdout  # average() left identical replicas
    assert float(accuracies.pop()) > 0.8, done.stdout  # 4 classes: chance is 0.25
    assert all(int(n) > 0 for _, _, n in found), done.stdout  # the gossip ran
