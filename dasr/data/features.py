"""80-dim log-mel filterbanks (kaldi-native-fbank), sharded on disk, CMVN, SpecAugment.

On-disk layout of a data dir after ``dasr features DIR``::

    features/<split>/shard-00000.npy   float16 (frames, 80), utterances back to back
    features/<split>/index.jsonl       {"id", "shard", "offset", "frames"} per utterance
    cmvn.npz                           train mean, pooled within-utterance std, frame count
    rejected.jsonl                     entries skipped, with stage, manifest, file, line and reason

Shards are read with ``np.load(mmap_mode="r")``, so a worker touches only the frames it uses.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np

from dasr.data import audio
from dasr.data.manifest import RejectionLog, Utterance, read_manifest
from dasr.data.tokenizer import CharTokenizer
from dasr.errors import DataError
from dasr.progress import progress

NUM_MEL_BINS = 80
FRAME_SHIFT_S = 0.01
STORAGE_DTYPE = np.float16
SHARD_FRAMES = 400_000  # 64 MB of float16 x 80 per shard
SPLITS = ("train", "dev", "test")
#: frame subsampling the CTC length check assumes (the model presets' default)
DEFAULT_SUBSAMPLING = 3


def fbank_options() -> knf.FbankOptions:
    """Kaldi's defaults with 80 mel bins and no dither (features are deterministic)."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = audio.TARGET_RATE
    opts.mel_opts.num_bins = NUM_MEL_BINS
    return opts


def fbank(samples: np.ndarray) -> np.ndarray:
    """Log-mel fbank (frames, 80) float32 of 16 kHz float samples in [-1, 1] (scaled to int16 range as Kaldi)."""
    extractor = knf.OnlineFbank(fbank_options())
    extractor.accept_waveform(audio.TARGET_RATE, samples * 32768.0)
    extractor.input_finished()
    n = extractor.num_frames_ready
    if n == 0:
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
    return np.stack([extractor.get_frame(i) for i in range(n)]).astype(np.float32, copy=False)


def ctc_min_frames(num_units: int, labels: list[int]) -> int:
    """Fewest output frames CTC needs for ``labels``: one per unit plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:]) if a == b)
    return num_units + repeats


def _extract(utt: Utterance) -> tuple[str, np.ndarray | None, str | None]:
    try:
        samples = audio.load(utt.audio, utt.start, utt.end)
    except DataError as e:
        return utt.id, None, str(e)
    if len(samples) < audio.TARGET_RATE * 0.025:
        return utt.id, None, f"zero-length audio: {utt.audio} is shorter than one 25 ms frame"
    return utt.id, fbank(samples).astype(STORAGE_DTYPE), None


@dataclass
class IndexEntry:
    id: str
    shard: int
    offset: int
    frames: int


class ShardWriter:
    """Appends utterances' frames to fixed-size shards and records where each one went."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("shard-*.npy"):
            old.unlink()
        self.index: list[IndexEntry] = []
        self.pending: list[np.ndarray] = []
        self.pending_frames = 0
        self.shard = 0

    def add(self, utt_id: str, feats: np.ndarray) -> None:
        self.index.append(IndexEntry(utt_id, self.shard, self.pending_frames, len(feats)))
        self.pending.append(feats)
        self.pending_frames += len(feats)
        if self.pending_frames >= SHARD_FRAMES:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            np.save(self.directory / f"shard-{self.shard:05d}.npy", np.concatenate(self.pending))
            self.shard += 1
        self.pending, self.pending_frames = [], 0

    def close(self) -> None:
        self._flush()
        tmp = self.directory / "index.jsonl.tmp"
        with open(tmp, "w") as f:
            for e in self.index:
                f.write(json.dumps(e.__dict__) + "\n")
        os.replace(tmp, self.directory / "index.jsonl")


def compute_split(
    data_dir: Path, split: str, jobs: int, subsampling: int, rejections: RejectionLog
) -> tuple[int, np.ndarray, np.ndarray, int]:
    """Extract one split's features.

    Returns (accepted, frame sum, sum of squared deviations from each utterance's mean, frames).
    """
    manifest = data_dir / f"{split}.jsonl"
    utts = read_manifest(manifest, rejections)
    seen: dict[str, int] = {}
    unique = []
    tokenizer = CharTokenizer()
    for lineno, u in enumerate(utts, 1):
        if u.id in seen:
            rejections.add(manifest, lineno, u.id, f"duplicate id: first seen on line {seen[u.id]}")
            continue
        seen[u.id] = lineno
        if not u.text.strip() or not tokenizer.encode(u.text):
            rejections.add(manifest, lineno, u.id, "empty transcript: no letters after normalisation")
            continue
        unique.append(u)
    writer = ShardWriter(data_dir / "features" / split)
    total = np.zeros(NUM_MEL_BINS, np.float64)
    total_sq = np.zeros(NUM_MEL_BINS, np.float64)
    count = 0
    by_id = {u.id: u for u in unique}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(_extract, unique, chunksize=16)
        for utt_id, feats, error in progress(results, total=len(unique), desc=f"features {split}", unit="utt"):
            if error is not None:
                rejections.add(manifest, seen[utt_id], utt_id, error)
                continue
            labels = tokenizer.encode(by_id[utt_id].text)
            if len(feats) // subsampling < ctc_min_frames(len(labels), labels):
                rejections.add(
                    manifest,
                    seen[utt_id],
                    utt_id,
                    f"too short for transcript: {len(feats)} frames (/{subsampling}) for {len(labels)} characters under CTC",
                )
                continue
            writer.add(utt_id, feats)
            f64 = feats.astype(np.float64)
            total += f64.sum(axis=0)
            total_sq += ((f64 - f64.mean(axis=0)) ** 2).sum(axis=0)  # spread around each utterance's mean
            count += len(feats)
    writer.close()
    return len(writer.index), total, total_sq, count


def compute_features(
    data_dir: str | os.PathLike, jobs: int | None = None, subsampling: int = DEFAULT_SUBSAMPLING
) -> dict:
    """Compute features for every manifest in ``data_dir`` and CMVN over train.

    Returns a summary ``{split: accepted}`` plus ``rejected`` and ``rejections`` (a reason summary).
    Raises :class:`DataError` when nothing usable remains in train.
    """
    data_dir = Path(data_dir)
    jobs = jobs or os.cpu_count() or 1
    splits = [s for s in SPLITS if (data_dir / f"{s}.jsonl").exists()]
    if not splits:
        raise DataError(f"{data_dir} holds no manifest (train.jsonl, dev.jsonl or test.jsonl)")
    rejections = RejectionLog()
    summary: dict = {}
    stats = None
    for split in splits:
        split_rejections = RejectionLog()
        accepted, total, total_sq, count = compute_split(data_dir, split, jobs, subsampling, split_rejections)
        split_rejections.write(data_dir / "rejected.jsonl", "features", f"{split}.jsonl")
        rejections.extend(split_rejections)
        summary[split] = accepted
        if split == "train" or (stats is None and split == splits[-1]):
            stats = (total, total_sq, count)
    assert stats is not None, "splits is not empty, so its last split set the statistics"
    total, total_sq, count = stats
    if count == 0:
        raise DataError(f"no usable utterances remain in {data_dir} (see {data_dir / 'rejected.jsonl'})")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count, 1e-10))
    np.savez(data_dir / "cmvn.npz", mean=mean, std=std, count=count)
    summary["rejected"] = len(rejections)
    summary["rejections"] = rejections.summary()
    return summary


class FeatureStore:
    """Memory-mapped access to one split's features: ``store[id]`` -> float32 (frames, 80)."""

    def __init__(self, data_dir: str | os.PathLike, split: str) -> None:
        directory = Path(data_dir) / "features" / split
        index_path = directory / "index.jsonl"
        if not index_path.exists():
            raise DataError(f"no features for split {split!r} in {data_dir}: run `dasr features {data_dir}`")
        self.index: dict[str, IndexEntry] = {}
        with open(index_path) as f:
            for line in f:
                e = IndexEntry(**json.loads(line))
                self.index[e.id] = e
        num_shards = max((e.shard for e in self.index.values()), default=-1) + 1
        self.shards = [np.load(directory / f"shard-{i:05d}.npy", mmap_mode="r") for i in range(num_shards)]

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, utt_id: str) -> int:
        return self.index[utt_id].frames

    def __getitem__(self, utt_id: str) -> np.ndarray:
        e = self.index[utt_id]
        return np.asarray(self.shards[e.shard][e.offset : e.offset + e.frames], dtype=np.float32)


class Cmvn:
    """Mean normalisation per utterance, variance normalisation with the train statistics.

    Subtracting each utterance's own mean (CMN) removes what a voice or channel adds to
    every frame (spectral tilt, loudness), which is what differs most between the demo's
    unseen test voices and the training voices; the variance is the train frames' pooled
    spread around their utterances' means. ``mean`` (the global train mean) is kept in
    cmvn.npz for reference.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = mean.astype(np.float32)
        self.inv_std = (1.0 / std).astype(np.float32)

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> Cmvn:
        path = Path(data_dir) / "cmvn.npz"
        if not path.exists():
            raise DataError(f"no CMVN statistics in {data_dir}: run `dasr features {data_dir}`")
        stats = np.load(path)
        return cls(stats["mean"], stats["std"])

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return (feats - feats.mean(axis=0)) * self.inv_std


def spec_augment(
    feats: np.ndarray,
    rng: np.random.Generator,
    freq_masks: int = 2,
    freq_width: int = 15,
    time_masks: int = 2,
    time_width: int = 40,
    max_time_ratio: float = 0.1,
) -> np.ndarray:
    """SpecAugment (Park et al. 2019) without time warping: zero random bands of mel bins and frames."""
    out = feats.copy()
    frames, bins = out.shape
    for _ in range(freq_masks):
        width = int(rng.integers(0, freq_width + 1))
        start = int(rng.integers(0, max(1, bins - width)))
        out[:, start : start + width] = 0.0
    max_width = min(time_width, int(frames * max_time_ratio))
    for _ in range(time_masks):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, max(1, frames - width)))
        out[start : start + width, :] = 0.0
    return out


def speed_perturb(feats: np.ndarray, factor: float) -> np.ndarray:
    """Change tempo by ``factor`` (1.1 = 10 % faster) by linear interpolation along time.

    On precomputed features this is the feature-domain form of speed perturbation: duration
    scales by 1/factor while the spectrum stays (like sox ``tempo``); audio-domain speed
    perturbation (pitch shifts too) is done when the demo corpus is synthesised.
    """
    frames = len(feats)
    new_frames = max(1, int(round(frames / factor)))
    if new_frames == frames:
        return feats
    positions = np.linspace(0, frames - 1, new_frames)
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, frames - 1)
    weight = (positions - lower)[:, None].astype(np.float32)
    return feats[lower] * (1 - weight) + feats[upper] * weight
