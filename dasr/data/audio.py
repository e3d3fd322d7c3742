"""Audio in: read with soundfile (wav, flac, ogg, ...), downmix to mono, resample to 16 kHz with soxr.

Every failure is a :class:`DataError` whose message starts with a short kind
("missing audio file", "corrupt audio", "zero-length audio", "unexpected sample rate",
"shell pipe not allowed") followed by the detail; importers use the kind to summarise rejections.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

from dasr.errors import DataError

TARGET_RATE = 16000
MIN_RATE = 8000
MAX_RATE = 192000
PIPE_TIMEOUT_S = 120
READ_BLOCK_FRAMES = 1 << 20
#: libsndfile's log line for a WAV data chunk shorter than its header says (header size, size found)
TRUNCATED_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def is_pipe(entry: str) -> bool:
    """True for a Kaldi wav.scp entry that is a shell command ending in '|'."""
    return entry.rstrip().endswith("|")


def _run_pipe(entry: str, allow_pipes: bool) -> io.BytesIO:
    if not allow_pipes:
        raise DataError(f"shell pipe not allowed: {entry!r} (pass --allow-pipes to run it)")
    command = entry.rstrip()[:-1]
    try:
        done = subprocess.run(command, shell=True, capture_output=True, timeout=PIPE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DataError(f"corrupt audio: pipe {command!r} ran longer than {PIPE_TIMEOUT_S}s") from None
    if done.returncode != 0:
        raise DataError(f"corrupt audio: pipe {command!r} exited with status {done.returncode}")
    return io.BytesIO(done.stdout)


def _open(entry: str, allow_pipes: bool):
    if is_pipe(entry):
        return _run_pipe(entry, allow_pipes)
    if not os.path.exists(entry):
        raise DataError(f"missing audio file: {entry}")
    return entry


def _check_rate(rate: int, entry: str) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DataError(f"unexpected sample rate: {rate} Hz in {entry} (supported: {MIN_RATE}-{MAX_RATE} Hz)")


def probe(entry: str, allow_pipes: bool = False) -> AudioInfo:
    """Read an audio file's header (running the pipe if it is one) and validate it."""
    source = _open(entry, allow_pipes)
    try:
        info = soundfile.info(source)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError) as e:
        raise DataError(f"corrupt audio: {entry}: {e}") from None
    _check_rate(info.samplerate, entry)
    if info.frames <= 0:
        raise DataError(f"zero-length audio: {entry} has no samples")
    return AudioInfo(info.samplerate, info.frames, info.channels)


def load(
    entry: str,
    start: float | None = None,
    end: float | None = None,
    allow_pipes: bool = False,
    target_rate: int = TARGET_RATE,
) -> np.ndarray:
    """Load [start, end) seconds of an audio file as float32 mono at ``target_rate``."""
    return _decode(_open(entry, allow_pipes), entry, start, end, target_rate)


def load_bytes(data: bytes, name: str = "upload", target_rate: int = TARGET_RATE) -> np.ndarray:
    """Decode an audio file held in memory (an upload) as float32 mono at ``target_rate``; opens no path.

    ``name`` only labels the error messages.
    """
    if not data:
        raise DataError(f"zero-length audio: {name} is empty")
    return _decode(io.BytesIO(data), name, None, None, target_rate)


def _decode(
    source: str | io.BytesIO, entry: str, start: float | None, end: float | None, target_rate: int
) -> np.ndarray:
    try:
        with soundfile.SoundFile(source) as f:
            rate = f.samplerate
            _check_rate(rate, entry)
            _check_complete(f, entry)
            first = int(round((start or 0.0) * rate))
            last = f.frames if end is None else min(f.frames, int(round(end * rate)))
            if first:
                f.seek(first)
            samples = _read_frames(f, max(0, last - first))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError) as e:
        detail = getattr(e, "error_string", None) or e  # libsndfile's own words, without the source's repr
        raise DataError(f"corrupt audio: {entry}: {detail}") from None
    if samples.shape[0] == 0:
        raise DataError(f"zero-length audio: {entry} has no samples in the requested range")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.all(np.isfinite(mono)):
        raise DataError(f"corrupt audio: {entry} contains NaN or infinite samples")
    return resample(mono, rate, target_rate)


def _check_complete(f: soundfile.SoundFile, entry: str) -> None:
    """A WAV whose header claims more data than the file holds was cut short (an interrupted copy or
    upload): libsndfile reads the part that is there and says so only in its log, which we read.
    A size of 0xFFFFFFFF is a streaming writer's "unknown", not a cut."""
    found = TRUNCATED_DATA.search(f.extra_info)
    if found and int(found[2]) < int(found[1]) < 0xFFFFFFFF:
        raise DataError(
            f"corrupt audio: {entry} is truncated: its header declares {found[1]} bytes of audio, it holds {found[2]}"
        )


def _read_frames(f: soundfile.SoundFile, count: int) -> np.ndarray:
    """Up to ``count`` frames as float32 (frames, channels), read in blocks: a corrupt header that
    claims billions of frames costs only the memory of the frames the file really holds."""
    blocks = []
    while count > 0:
        block = f.read(min(count, READ_BLOCK_FRAMES), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        blocks.append(block)
        count -= len(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, f.channels), dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target_rate: int = TARGET_RATE) -> np.ndarray:
    """Resample float32 mono samples with soxr (high quality); a no-op at equal rates."""
    if rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32)


def write(path: str | os.PathLike, samples: np.ndarray, rate: int = TARGET_RATE) -> None:
    """Write float32 mono samples; the format follows the extension (wav, flac, ogg)."""
    soundfile.write(str(path), samples, rate)
