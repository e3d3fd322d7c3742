"""The embedded demo corpus: sentences spoken by many espeak-ng voices, with noise and speed changes.

``synthesize_corpus(out_dir, hours=1.0)`` writes a data dir::

    out_dir/audio/{train,dev,test}/<id>.flac    16 kHz mono
    out_dir/{train,dev,test}.jsonl              Utterance manifests
    out_dir/lm_text.txt                         more in-domain sentences for the LM, none from dev/test

Split policy: a *voice* is an espeak-ng base voice (accent) plus a variant (``en-gb+f3``).
Voices form a grid of accents x variants; the diagonals ``(accent + variant + seed) % 8 == 0``
are test voices and ``== 1`` dev voices, so train never hears a test or dev voice, yet every
accent and every variant of test is also heard in train with other partners. Sentences are
split the same way: test, dev and train sentence sets are disjoint (babble noise, too, is made
from the split's own sentences and voices). Each utterance gets a random speaking rate, pitch,
speed perturbation and, for about half of them, white, pink or babble noise at 10-30 dB SNR.

Everything random is drawn up front from ``seed``, and each utterance's noise from its own
numpy Generator, so the same seed gives the same manifests and the same audio bytes, whatever
the number of ``jobs``.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from dasr.data import audio
from dasr.data.manifest import Utterance, write_manifest
from dasr.data.sentences import generate_sentences
from dasr.data.text import normalize
from dasr.errors import DasrError
from dasr.progress import progress

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt3", "linda")
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
_GRID_SPLIT = {0: "test", 1: "dev"}  # by (accent + variant + seed) % len(ACCENTS); the rest is train

RATE_WPM = (140, 185)  # espeak-ng -s
PITCH = (30, 70)  # espeak-ng -p
SPEEDS = tuple(round(0.90 + 0.02 * i, 2) for i in range(11))  # 0.90 ... 1.10
NOISE_FRACTION = 0.5
NOISE_KINDS = ("white", "pink", "babble")
SNR_DB = (10.0, 30.0)
BABBLE_TALKERS = (3, 6)
PEAK = 0.9
LM_TEXT_FILE = "lm_text.txt"  # extra LM text written beside the manifests
LM_TEXT_SENTENCES = 100_000
SECONDS_PER_CHAR_AT_1_WPM = 11.3  # measured: espeak speaks ~wpm/11.3 characters a second


@dataclass(frozen=True)
class _Job:
    """Everything needed to make one utterance's audio, drawn in the parent process."""

    id: str
    split: str
    path: str
    text: str
    sentence: str
    voice: str
    rate: int
    pitch: int
    speed: float
    noise: str | None
    snr_db: float | None
    babble: tuple[tuple[str, str], ...]
    noise_seed: int


def voices(split: str, seed: int = 0) -> list[str]:
    """The espeak-ng voice names (``accent+variant``) of one split for a given seed."""
    return [
        accent + (f"+{variant}" if variant else "")
        for i, accent in enumerate(ACCENTS)
        for j, variant in enumerate(VARIANTS)
        if _GRID_SPLIT.get((i + j + seed) % len(ACCENTS), "train") == split
    ]


def _read_text_file(path: str | os.PathLike) -> list[str]:
    """Distinct normalised non-empty lines of a text file, in file order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DasrError(f"cannot read sentences from {path}: {e}") from None
    return list(dict.fromkeys(t for t in map(normalize, lines) if t))


def _split_sentences(sentences: list[str], rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """Shuffle (id, text) pairs and cut them into disjoint per-split lists by SPLITS' fractions."""
    pairs = [(f"s{i:06d}", text) for i, text in enumerate(sentences)]
    rng.shuffle(pairs)
    out, start = {}, 0
    for split, fraction in reversed(SPLITS):  # small splits first, train takes the rest
        count = len(pairs) - start if split == "train" else max(1, round(fraction * len(pairs)))
        out[split] = pairs[start : start + count]
        start += count
    return out


def _plan(out_dir: Path, hours: float, seed: int, sentences: list[str]) -> list[_Job]:
    """Draw every utterance's sentence, voice, rate, pitch, speed and noise."""
    rng = random.Random(seed)
    by_split = _split_sentences(sentences, rng)
    jobs = []
    for split, fraction in SPLITS:
        pool, split_voices = by_split[split], voices(split, seed)
        target_s, planned_s, index = hours * 3600 * fraction, 0.0, 0
        while planned_s < target_s or index == 0:
            sentence_id, text = pool[index % len(pool)]
            rate, speed = rng.randint(*RATE_WPM), rng.choice(SPEEDS)
            noisy = rng.random() < NOISE_FRACTION
            kind = rng.choice(NOISE_KINDS) if noisy else None
            babble = (
                tuple((rng.choice(pool)[1], rng.choice(split_voices)) for _ in range(rng.randint(*BABBLE_TALKERS)))
                if kind == "babble"
                else ()
            )
            utt_id = f"{split}-{index:06d}"
            jobs.append(
                _Job(
                    id=utt_id,
                    split=split,
                    path=str(out_dir / "audio" / split / f"{utt_id}.flac"),
                    text=text,
                    sentence=sentence_id,
                    voice=rng.choice(split_voices),
                    rate=rate,
                    pitch=rng.randint(*PITCH),
                    speed=speed,
                    noise=kind,
                    snr_db=round(rng.uniform(*SNR_DB), 1) if noisy else None,
                    babble=babble,
                    noise_seed=rng.getrandbits(63),
                )
            )
            planned_s += SECONDS_PER_CHAR_AT_1_WPM * len(text) / rate / speed
            index += 1
    return jobs


def _espeak(text: str, voice: str, rate: int, pitch: int, speed: float = 1.0) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return it at 16 kHz, sped up by ``speed``."""
    command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0 or not done.stdout:
        raise DasrError(f"espeak-ng failed for voice {voice}: {done.stderr.decode(errors='replace').strip()}")
    samples, rate_hz = soundfile.read(io.BytesIO(done.stdout), dtype="float32")
    # Playing the samples as if recorded at rate_hz * speed changes tempo and pitch together.
    return audio.resample(samples, int(round(rate_hz * speed)), audio.TARGET_RATE)


def _noise(job: _Job, length: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or babble noise of ``length`` samples, not yet scaled."""
    if job.noise == "white":
        return rng.standard_normal(length)
    if job.noise == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(length))
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        return np.fft.irfft(spectrum, length)
    mix = np.zeros(length)
    for text, voice in job.babble:
        talker = _espeak(text, voice, rng.integers(*RATE_WPM, endpoint=True), rng.integers(*PITCH, endpoint=True))
        mix += np.roll(np.resize(talker, length), rng.integers(length))
    return mix


def _synthesize(job: _Job) -> int:
    """Make one utterance's FLAC file; return its number of samples."""
    speech = _espeak(job.text, job.voice, job.rate, job.pitch, job.speed).astype(np.float64)
    if job.noise is not None:
        noise = _noise(job, len(speech), np.random.default_rng(job.noise_seed))
        gain = math.sqrt(np.mean(speech**2) / (np.mean(noise**2) * 10 ** (job.snr_db / 10)))
        speech += gain * noise
    speech *= PEAK / max(np.max(np.abs(speech)), 1e-9)
    audio.write(job.path, speech.astype(np.float32), audio.TARGET_RATE)
    return len(speech)


def _write_lm_text(path: Path, sentences: list[str], held_out: set[str]) -> None:
    """Extra in-domain text for the language model, without any dev or test sentence.

    Like LibriSpeech's LM corpus beside its audio: the grammar's other sentences give the LM
    (and the decoder's lexicon) the domain's words and phrases, while every sentence spoken
    in dev or test stays unseen.
    """
    path.write_text("".join(f"{s}\n" for s in sentences if s not in held_out), encoding="utf-8")


def synthesize_corpus(
    out_dir: str | os.PathLike,
    hours: float = 1.0,
    seed: int = 0,
    jobs: int | None = None,
    text_file: str | os.PathLike | None = None,
) -> dict:
    """Synthesize the demo corpus into a data dir (see the module docstring for the layout and splits).

    Args:
        out_dir: where to write ``audio/`` and the ``train/dev/test.jsonl`` manifests.
        hours: total audio to make across the splits (80 % train, 10 % dev, 10 % test),
            planned from an estimate of each sentence's duration.
        seed: the same seed makes the same utterances and the same audio bytes.
        jobs: processes synthesizing in parallel (default: ``os.cpu_count()``).
        text_file: sentences to speak, one per line (normalised; empty lines and repeats
            skipped); by default sentences come from :mod:`dasr.data.sentences`.

    Returns:
        A summary: ``splits`` (per split: ``utterances``, ``hours``, ``voices``,
        ``sentences``), total ``hours``, ``elapsed_s``, ``x_real_time`` (seconds of audio made
        per second of wall time) and ``jobs``.

    Raises:
        DasrError: espeak-ng is not installed, or ``text_file`` is unreadable or holds fewer
            sentences than there are splits.
        ValueError: ``hours`` or ``jobs`` is not positive.
    """
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if shutil.which("espeak-ng") is None:
        raise DasrError("espeak-ng is not installed: run `make demo` (or `apt-get install espeak-ng`) first.")
    if text_file is None:
        # Mean planned duration is ~3 s; 2 s per sentence leaves enough so that none repeats.
        sentences = generate_sentences(math.ceil(hours * 3600 / 2.0) + 10 * len(SPLITS), seed)
    else:
        sentences = _read_text_file(text_file)
        if len(sentences) < len(SPLITS):
            raise DasrError(
                f"{text_file} holds {len(sentences)} distinct sentences; "
                f"at least {len(SPLITS)} are needed (one per split)."
            )
    out = Path(out_dir).resolve()
    for split, _ in SPLITS:
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    plan = _plan(out, hours, seed, sentences)
    if text_file is None:
        held_out = {job.text for job in plan if job.split != "train"}
        _write_lm_text(out / LM_TEXT_FILE, generate_sentences(LM_TEXT_SENTENCES, seed + 1), held_out)

    start = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        lengths = list(
            progress(pool.map(_synthesize, plan, chunksize=4), total=len(plan), desc="synthesizing", unit="utt")
        )
    elapsed = time.perf_counter() - start

    summary: dict = {"splits": {}, "jobs": jobs}
    for split, _ in SPLITS:
        utts = [
            Utterance(
                id=job.id,
                audio=job.path,
                duration=n / audio.TARGET_RATE,
                text=job.text,
                speaker=job.voice,
                sample_rate=audio.TARGET_RATE,
                extra={
                    "voice": job.voice,
                    "sentence": job.sentence,
                    "snr_db": job.snr_db,
                    "noise": job.noise,
                    "speed": job.speed,
                    "rate_wpm": job.rate,
                    "pitch": job.pitch,
                },
            )
            for job, n in zip(plan, lengths)
            if job.split == split
        ]
        write_manifest(out / f"{split}.jsonl", utts)
        summary["splits"][split] = {
            "utterances": len(utts),
            "hours": sum(u.duration for u in utts) / 3600,
            "voices": len({u.speaker for u in utts}),
            "sentences": len({u.extra["sentence"] for u in utts}),
        }
    summary["hours"] = sum(s["hours"] for s in summary["splits"].values())
    summary["elapsed_s"] = elapsed
    summary["x_real_time"] = summary["hours"] * 3600 / elapsed
    return summary
