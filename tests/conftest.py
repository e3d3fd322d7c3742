"""Shared fixtures: real audio files and data dirs made on disk by the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dasr.data import audio
from dasr.data.manifest import Utterance, write_manifest


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A chirp with a little noise: real, non-trivial audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (freq + 200 * t) * t) + 0.01 * rng.standard_normal(len(t))
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture
def make_wav(tmp_path):
    def make(name: str, seconds: float = 1.0, rate: int = 16000, **kw) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        audio.write(path, tone(seconds, rate, **kw), rate)
        return str(path)

    return make


@pytest.fixture
def tiny_data_dir(tmp_path, make_wav):
    """A data dir with train/dev/test manifests of short tones (features not computed)."""
    data = tmp_path / "data"
    words = ["call mom", "set an alarm", "play some music", "turn on the light", "what time is it"]
    for split, n in (("train", 12), ("dev", 3), ("test", 3)):
        utts = []
        for i in range(n):
            seconds = 1.0 + 0.25 * (i % 5)
            path = make_wav(f"data/audio/{split}-{i}.wav", seconds, freq=300 + 20 * i, seed=i)
            utts.append(
                Utterance(
                    id=f"{split}-{i:03d}",
                    audio=path,
                    duration=seconds,
                    text=words[i % len(words)],
                    speaker=f"spk{i % 3}",
                )
            )
        write_manifest(data / f"{split}.jsonl", utts)
    return data


SPEECH = Path(__file__).parent / "data" / "speech"


def make_speech_data_dir(root: Path) -> Path:
    """ROOT/speech: a data dir of the 8 committed espeak utterances (train = dev = test), features computed."""
    from dasr.data.features import compute_features

    utts = []
    for line in (SPEECH / "transcripts.tsv").read_text().splitlines():
        utt_id, speaker, text = line.split("\t")
        path = SPEECH / f"{utt_id}.flac"
        utts.append(Utterance(utt_id, str(path), audio.probe(str(path)).duration, text, speaker))
    data = root / "speech"
    for split in ("train", "dev", "test"):
        write_manifest(data / f"{split}.jsonl", utts)
    compute_features(data, jobs=1)
    return data


@pytest.fixture(scope="session")
def _speech_features(tmp_path_factory):
    """The speech data dir computed once per session."""
    return make_speech_data_dir(tmp_path_factory.mktemp("speech-features"))


@pytest.fixture
def speech_data_dir(tmp_path, _speech_features):
    """A data dir of the 8 committed espeak utterances (train = dev = test), features computed: this test's own
    copy (tests may change it), copied from the session's one computation."""
    data = tmp_path / "speech"
    shutil.copytree(_speech_features, data)
    return data


def train_tiny(data: Path, exp: Path, steps: int = 60, **units) -> None:
    """``steps`` steps of the tiny model on the 8 fixture utterances: seconds, and far from perfect text."""
    config = dict(
        model="tiny",
        epochs=1000,
        batch_frames=100000,
        optimizer="adamw",
        lr=0.01,
        warmup_steps=10,
        anneal_start_epoch=10000,
        **units,
    )
    from dasr.config import TrainConfig
    from dasr.train.run import train

    train(TrainConfig(data=str(data), exp=str(exp), max_steps=steps, eval_every_epochs=1000, seed=1, **config))


def train_cli(data, exp, *extra, timeout=300) -> subprocess.CompletedProcess:
    """`dasr train` of the tiny model in a subprocess (one-utterance batches of the speech fixture, every step logged)."""
    args = [sys.executable, "-m", "dasr", "train", "--data", str(data), "--exp", str(exp), "--model", "tiny"]
    args += ["--batch-frames", "200", "--log-every", "1", "--gossip-period-s", "0.05", *map(str, extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def metrics_records(exp) -> list[dict]:
    """The records of EXP/metrics.jsonl."""
    return [json.loads(line) for line in (Path(exp) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def dasr_train():
    """:func:`train_cli` as a fixture (test modules do not import each other)."""
    return train_cli


@pytest.fixture
def read_metrics():
    """:func:`metrics_records` as a fixture."""
    return metrics_records
