"""Progress: a bar on a terminal only; piped, a log line every few percent."""

import collections
import io
import logging
import re
import subprocess
import sys

from tqdm import tqdm

from dasr.progress import PercentLog, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _percent_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "dasr.progress"]


def test_piped_progress_logs_every_ten_percent(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO)
    bar = progress(range(1000), desc="features train", unit="utt")
    assert isinstance(bar, PercentLog)
    assert sum(bar) == sum(range(1000))
    lines = _percent_lines(caplog)
    assert (
        len(lines) == 10
        and lines[0] == "features train: 10 % (100/1000 utt)"
        and lines[-1].startswith("features train: 100 %")
    )
    caplog.clear()
    resumed = progress(total=8, initial=4, desc="epoch 3", unit="batch", step=25)
    for _ in range(4):
        resumed.set_postfix(loss=1.5)
        resumed.update(1)
    assert _percent_lines(caplog) == ["epoch 3: 75 % (6/8 batch), loss 1.5", "epoch 3: 100 % (8/8 batch), loss 1.5"]
    caplog.clear()
    silent = progress(range(50), enabled=False)
    assert list(silent) == list(range(50)) and not _percent_lines(caplog)
    assert sys.stderr.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = progress(range(3), desc="decode")
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]


def test_a_piped_training_run_prints_no_bar_redraws(speech_data_dir, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "dasr", "train", "--data", str(speech_data_dir), "--exp", str(tmp_path / "exp")]
        + ["--model", "tiny", "--max-steps", "24", "--batch-frames", "1200", "--log-every", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert "\r" not in output and "it/s" not in output
    found = [re.search(r"progress: epoch (\d+): (\d+) %", line) for line in output.splitlines()]
    marks = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    assert marks and all(percent % 25 == 0 for _, percent in marks)  # the trainer logs every 25 %
    per_epoch = collections.Counter(epoch for epoch, _ in marks)
    assert max(per_epoch.values()) <= 4 and len(per_epoch) >= 3
