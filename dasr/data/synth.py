"""The embedded demo corpus: sentences spoken by espeak-ng, flite and festival voices, with speaker and channel variety.

``synthesize_corpus(out_dir, hours=1.0, engines=("espeak", "flite", "festival"), augment=True)``
writes a data dir::

    out_dir/audio/{train,dev,test}/<id>.flac    16 kHz mono
    out_dir/{train,dev,test}.jsonl              Utterance manifests
    out_dir/lm_text.txt                         more in-domain sentences for the LM, none from dev/test

Engines (:mod:`dasr.data.tts`): each utterance first draws an engine uniformly from ``engines``,
then one of the split's voices of that engine, so the few natural (flite, festival) voices
are not drowned by espeak-ng's 128.

Split policy: a *voice* is a base voice plus a variant, and voices form a grid of base voices x
variants whose diagonals ``(base + variant + seed) % 8 == 0`` are test voices and ``== 1``
dev voices. Train never hears a test or dev voice, yet every base voice and every variant of
test is also heard in train with other partners.

- espeak-ng: base voices are accents, variants are espeak-ng's voice variants (``en-gb+f3``).
- flite and festival: base voices are the 7 natural voices, variants are 8 vocal-tract sizes,
  pitch and formants shifted together by ``NATURAL_SHIFTS`` semitones (``flite:slt-2.5st``).
  Why not hold whole natural voices out: they come from only 5 people (kal and slt twice);
  keeping one person for test and one for dev would leave 3 in training, and what carries over
  to real people is the number of people heard. The check of unheard *people* is the real
  recordings of ``dasr bench real-speech``, never heard in any form; the synthetic dev and test
  sets check unheard speaker variants, as for espeak-ng.

Sentences are split the same way: test, dev and train sentence sets are disjoint (babble noise,
too, is made from the split's own sentences and voices). ``train_text`` adds sentences to train
only (each spoken ``TRAIN_TEXT_REPEATS`` times by different voices), never to dev or test: the
way to put a check set's sentences into the training text without its audio.

Every utterance gets its voice's variant and, for half of them, noise (espeak-ng voices also a
random rate, pitch and speed); with ``augment_audio`` each *train* utterance gets the speaker and
channel variety of :mod:`dasr.data.augment` instead (pitch/formant jitter, tempo, room, noise,
telephone). Dev and test stay as they were, so that the synthetic test measures what it always
measured (unheard voices and sentences); what the variety buys on real people is measured by
`dasr bench real-speech`. Everything random is drawn up front from ``seed``, and each utterance's
noise from its own numpy Generator, so the same seed gives the same manifests and the same
audio bytes, whatever the number of ``jobs``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dasr.data import audio, augment, tts, tts_more
from dasr.data.manifest import Utterance, write_manifest
from dasr.data.sentences import generate_sentences
from dasr.data.text import normalize
from dasr.errors import DasrError
from dasr.progress import progress

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt3", "linda")
NATURAL = tuple(f"{engine}:{name}" for engine, names in tts.NATURAL_VOICES.items() for name in names)
NATURAL_SHIFTS = (-5.0, -3.75, -2.5, -1.25, 0.0, 1.25, 2.5, 3.75)  # semitones: the natural voices' variants
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
GRID = 8  # a voice (base i, variant j) is test when (i + j + seed) % GRID == 0, dev when == 1
_GRID_SPLIT = {0: "test", 1: "dev"}
DEFAULT_ENGINES = ("espeak",)
TRAIN_TEXT_REPEATS = 3
_NATURAL_NAME = re.compile(r"(?P<base>[a-z]+:[\w-]+?)(?P<shift>[+-][\d.]+)st")

RATE_WPM = (140, 185)  # espeak-ng -s
PITCH = (30, 70)  # espeak-ng -p
SPEEDS = tuple(round(0.90 + 0.02 * i, 2) for i in range(11))  # 0.90 ... 1.10, espeak-ng only
BABBLE_TALKERS = (3, 6)
PEAK = 0.9
LM_TEXT_FILE = "lm_text.txt"  # extra LM text written beside the manifests
LM_TEXT_SENTENCES = 100_000
SECONDS_PER_CHAR_AT_1_WPM = 11.3  # measured: espeak speaks ~wpm/11.3 characters a second
SECONDS_PER_CHAR_NATURAL = 0.075  # measured on flite and festival voices


@dataclass(frozen=True)
class _Job:
    """Everything needed to make one utterance's audio, drawn in the parent process."""

    id: str
    split: str
    path: str
    text: str
    sentence: str
    voice: str  # the speaker: an espeak-ng voice name, or ENGINE:NAME<shift>st for a natural voice
    rate: int | None  # espeak-ng only
    pitch: int | None
    speed: float | None
    aug: augment.Augmentation
    babble: tuple[tuple[str, str], ...]


def _grid(bases: tuple[str, ...], variants: tuple, split: str, seed: int) -> list[tuple[str, Any]]:
    """The (base, variant) cells of the voice grid that belong to ``split``."""
    return [
        (base, variant)
        for i, base in enumerate(bases)
        for j, variant in enumerate(variants)
        if _GRID_SPLIT.get((i + j + seed) % GRID, "train") == split
    ]


def _natural_name(base: str, shift: float) -> str:
    return f"{base}{shift:+g}st"


def voices(split: str, seed: int = 0, engines: tuple[str, ...] = DEFAULT_ENGINES) -> list[str]:
    """The voice names of one split for a given seed: espeak-ng ``accent+variant``, natural ``engine:name±Nst``."""
    out = []
    if "espeak" in engines:
        out += [
            accent + (f"+{variant}" if variant else "") for accent, variant in _grid(ACCENTS, VARIANTS, split, seed)
        ]
    out += [
        _natural_name(base, shift)
        for base, shift in _grid(NATURAL, NATURAL_SHIFTS, split, seed)
        if base.partition(":")[0] in engines
    ]
    return out


def _parse_voice(voice: str) -> tuple[str, float]:
    """A speaker name -> (the tts voice ``engine:name``, its semitone shift)."""
    natural = _NATURAL_NAME.fullmatch(voice)
    if natural is None:
        return f"espeak:{voice}", 0.0
    return natural["base"], float(natural["shift"])


def _engine(voice: str) -> str:
    return _parse_voice(voice)[0].partition(":")[0]


def read_sentences(path: str | os.PathLike) -> list[str]:
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


def _planned_seconds(text: str, rate: int | None, speed: float | None, aug: augment.Augmentation) -> float:
    """A duration estimate, to plan how many utterances make the requested hours."""
    per_char = SECONDS_PER_CHAR_AT_1_WPM / rate / speed if rate and speed else SECONDS_PER_CHAR_NATURAL
    return per_char * len(text) / aug.tempo


def _draw_augmentation(rng: random.Random, shift: float, variety: bool) -> augment.Augmentation:
    """The voice's vocal-tract shift, with ``variety`` the speaker and channel draw, else only the noise draw."""
    if variety:
        return augment.draw(rng, shift)
    noisy = rng.random() < augment.NOISE_FRACTION
    return augment.Augmentation(
        semitones=shift,
        noise=rng.choice(augment.NOISE_KINDS) if noisy else None,
        snr_db=round(rng.uniform(*augment.SNR_DB), 1) if noisy else None,
        noise_seed=rng.getrandbits(63),
    )


def _plan(
    out_dir: Path,
    hours: float,
    seed: int,
    sentences: list[str],
    engines: tuple[str, ...],
    use_augment: bool,
    train_text: list[str],
) -> list[_Job]:
    """Draw every utterance's sentence, voice, espeak-ng settings and augmentation."""
    rng = random.Random(seed)
    by_split = _split_sentences(sentences, rng)
    extra = [(f"t{i:06d}", text) for i, text in enumerate(train_text) for _ in range(TRAIN_TEXT_REPEATS)]
    jobs = []
    for split, fraction in SPLITS:
        pool = by_split[split]
        queue = extra if split == "train" else []
        by_engine = {e: [v for v in voices(split, seed, engines) if _engine(v) == e] for e in engines}
        split_voices = [v for vs in by_engine.values() for v in vs]
        target_s, planned_s, index = hours * 3600 * fraction, 0.0, 0
        while planned_s < target_s or index < max(1, len(queue)):
            sentence_id, text = queue[index] if index < len(queue) else pool[(index - len(queue)) % len(pool)]
            engine = rng.choice(engines)
            voice = rng.choice(by_engine[engine])
            rate = speed = pitch = None
            if engine == "espeak":
                rate, speed, pitch = rng.randint(*RATE_WPM), rng.choice(SPEEDS), rng.randint(*PITCH)
            aug = _draw_augmentation(rng, _parse_voice(voice)[1], use_augment and split == "train")
            babble: tuple[tuple[str, str], ...] = ()
            if aug.noise == "babble":
                talkers = rng.randint(*BABBLE_TALKERS)
                babble = tuple((rng.choice(pool)[1], rng.choice(split_voices)) for _ in range(talkers))
            utt_id = f"{split}-{index:06d}"
            jobs.append(
                _Job(
                    id=utt_id,
                    split=split,
                    path=str(out_dir / "audio" / split / f"{utt_id}.flac"),
                    text=text,
                    sentence=sentence_id,
                    voice=voice,
                    rate=rate,
                    pitch=pitch,
                    speed=speed,
                    aug=aug,
                    babble=babble,
                )
            )
            planned_s += _planned_seconds(text, rate, speed, aug)
            index += 1
    return jobs


def _voice_audio(voice: str, text: str, rate: int | None = None, pitch: int | None = None, speed: float = 1.0):
    """A speaker's speech at 16 kHz: espeak-ng with its rate, pitch and speed; a natural voice unshifted."""
    tts_voice, _ = _parse_voice(voice)
    if not tts_voice.startswith("espeak:"):
        return tts.speak(tts_voice, text)
    samples, rate_hz = tts.espeak(text, tts_voice.partition(":")[2], rate or 160, pitch or 50)
    # Playing the samples as if recorded at rate_hz * speed changes tempo and pitch together.
    return audio.resample(samples, int(round(rate_hz * speed)), audio.TARGET_RATE)


def _babble(job: _Job):
    """The babble source of a job: its other talkers, each looped and shifted at random."""

    def make(length: int, rng: np.random.Generator) -> np.ndarray:
        mix = np.zeros(length)
        for text, voice in job.babble:
            talker = _voice_audio(voice, text)
            mix += np.roll(np.resize(talker, length), rng.integers(length))
        return mix

    return make


def _synthesize(job: _Job) -> int:
    """Make one utterance's FLAC file; return its number of samples."""
    speech = _voice_audio(job.voice, job.text, job.rate, job.pitch, job.speed or 1.0)
    speech = augment.apply(speech, job.aug, _babble(job))
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


def _extra(job: _Job) -> dict:
    """The manifest's ``extra`` of one utterance: voice, sentence, espeak-ng settings, augmentation."""
    out: dict[str, object] = {"voice": job.voice, "engine": _engine(job.voice), "sentence": job.sentence}
    if job.rate is not None:
        out.update(speed=job.speed, rate_wpm=job.rate, pitch=job.pitch)
    return {**out, **job.aug.extra()}


def _checked_request(hours: float, jobs: int | None, engines: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """The process count and the distinct engines of a request, or why it cannot be made."""
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    engines = tuple(dict.fromkeys(engines))
    if not engines:
        raise DasrError("no speech engine given: choose from " + ", ".join(tts.ENGINES))
    return jobs, engines


def _prepare_dir(out: Path, plan: list[_Job], seed: int, lm_text: bool) -> None:
    """The audio dirs, and with ``lm_text`` the grammar's other sentences as LM text (no dev or test one)."""
    for split, _ in SPLITS:
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    if lm_text:
        held_out = {job.text for job in plan if job.split != "train"}
        _write_lm_text(out / LM_TEXT_FILE, generate_sentences(LM_TEXT_SENTENCES, seed + 1), held_out)


def _corpus_sentences(text_file: str | os.PathLike | None, hours: float, seed: int) -> list[str]:
    """The sentences to speak: ``text_file``'s, or enough from the grammar that none repeats."""
    if text_file is None:
        # Mean planned duration is ~3 s; 2 s per sentence leaves enough so that none repeats.
        return generate_sentences(math.ceil(hours * 3600 / 2.0) + 10 * len(SPLITS), seed)
    sentences = read_sentences(text_file)
    if len(sentences) < len(SPLITS):
        raise DasrError(
            f"{text_file} holds {len(sentences)} distinct sentences; at least {len(SPLITS)} are needed (one per split)."
        )
    return sentences


def _write_manifests(out: Path, plan: list[_Job], lengths: list[int]) -> dict:
    """Write each split's manifest of the synthesized utterances; returns the per-split summary."""
    splits = {}
    for split, _ in SPLITS:
        utts = [
            Utterance(
                id=job.id,
                audio=job.path,
                duration=n / audio.TARGET_RATE,
                text=job.text,
                speaker=job.voice,
                sample_rate=audio.TARGET_RATE,
                extra=_extra(job),
            )
            for job, n in zip(plan, lengths)
            if job.split == split
        ]
        write_manifest(out / f"{split}.jsonl", utts)
        splits[split] = {
            "utterances": len(utts),
            "hours": sum(u.duration for u in utts) / 3600,
            "voices": len({u.speaker for u in utts}),
            "sentences": len({u.extra["sentence"] for u in utts}),
        }
    return splits


def synthesize_corpus(
    out_dir: str | os.PathLike,
    hours: float = 1.0,
    seed: int = 0,
    jobs: int | None = None,
    text_file: str | os.PathLike | None = None,
    engines: tuple[str, ...] = DEFAULT_ENGINES,
    augment_audio: bool = False,
    train_text: list[str] | None = None,
    fetch: bool = False,
    deb_cache: str | os.PathLike | None = None,
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
        engines: synthesizers to use, from ``espeak``, ``flite``, ``festival``.
        augment_audio: add the speaker and channel variety of :mod:`dasr.data.augment`.
        train_text: sentences spoken in train only, each ``TRAIN_TEXT_REPEATS`` times.
        fetch: fetch the Debian packages of missing optional engines into ``deb_cache``.
        deb_cache: the private apt cache of the optional engines (default ``out_dir/deb-cache``).

    Returns:
        A summary: ``splits`` (per split: ``utterances``, ``hours``, ``voices``,
        ``sentences``), total ``hours``, ``elapsed_s``, ``x_real_time`` (seconds of audio made
        per second of wall time) and ``jobs``.

    Raises:
        DasrError: an engine is unknown or not installed, or ``text_file`` is unreadable or
            holds fewer sentences than there are splits.
        ValueError: ``hours`` or ``jobs`` is not positive.
    """
    jobs, engines = _checked_request(hours, jobs, engines)
    tts_more.use_cache(Path(deb_cache or Path(out_dir) / "deb-cache").resolve(), engines, fetch)
    tts.check_engines(engines)
    sentences = _corpus_sentences(text_file, hours, seed)
    train_only = list(dict.fromkeys(t for t in map(normalize, train_text or []) if t))
    out = Path(out_dir).resolve()
    plan = _plan(out, hours, seed, sentences, engines, augment_audio, train_only)
    _prepare_dir(out, plan, seed, lm_text=text_file is None)

    start = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        lengths = list(
            progress(pool.map(_synthesize, plan, chunksize=4), total=len(plan), desc="synthesizing", unit="utt")
        )
    elapsed = time.perf_counter() - start

    summary: dict = {"splits": _write_manifests(out, plan, lengths), "jobs": jobs}
    summary.update(engines=list(engines), augment=augment_audio)
    summary["hours"] = sum(s["hours"] for s in summary["splits"].values())
    summary["elapsed_s"] = elapsed
    summary["x_real_time"] = summary["hours"] * 3600 / elapsed
    return summary
