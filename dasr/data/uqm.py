"""`dasr corpus prepare uqm`: real human speech from the voice-over of The Ur-Quan Masters.

Debian's ``uqm-voice`` (non-free, games) holds 2,218 Ogg clips (mono, 11,025 Hz, 11.4 h) that
actors spoke for 27 characters, in ``addons/uqm-0.8.0-voice.uqm`` (a zip) under
``3dovoice/<name>/``, with ``<name>.ts`` (subtitle page durations) and, for 6 characters, a
``<name>.txt`` that replaces the game text to match the recordings. ``uqm-content`` holds the
others' text in ``packages/uqm-0.8.0-content.uqm`` under ``base/comm/<name>/<name>.txt``. The
text format, its continuations, pages and markup are described in :mod:`dasr.data.uqm_text`.
Licence: CC BY-NC-SA 2.5 (non-commercial), printed and copied into the data dir.

Output (the manifest format of :mod:`dasr.data.manifest`)::

    DATA/audio/<split>/<character>/<clip>[_NN].flac   16 kHz mono
    DATA/{train,dev,test}.jsonl, DATA/rejected.jsonl, DATA/LICENSE-uqm.txt

Utterances: whole clips up to ``MAX_S`` seconds whose text is certain; longer clips are cut at
pauses near their page boundaries (:mod:`dasr.data.cuts`), so every utterance's text is the
exact text of whole pages. What is dropped (uncertain pages, pages longer than ``MAX_S`` with no
usable boundary, clips without text, blocks whose clip is absent) goes to rejected.jsonl.

Speakers are characters. ``TEST`` and ``DEV`` characters (fixed, documented in docs/DESIGN.md)
are never heard in training; characters the game voiced with the same actor in the same role
(Commander Hayes: ``commander`` and ``starbase``; the Yehat: ``yehat`` and ``yehatrebels``) are
one speaker. ``PROCESSED`` voices (pitch-shifted, vocoded or robotic effects) stay in train only,
flagged ``extra.processed``; ``drop_processed`` rejects them instead.
"""

from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import os
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile

from dasr.data import audio, ctc_align, cuts
from dasr.data.debfetch import DebCache
from dasr.data.features import FRAME_SHIFT_S, fbank
from dasr.data.manifest import RejectionLog, Utterance, write_manifest
from dasr.data.tokenizer import Tokenizer
from dasr.data.uqm_text import ClipText, clip_texts, read_blocks, read_timestamps, spoken
from dasr.errors import DataError
from dasr.progress import progress

log = logging.getLogger(__name__)

PACKAGES = ("uqm-voice", "uqm-content")
SYSTEM_DIR = Path("/usr/share/games/uqm/content")
LICENSE = (
    "The Ur-Quan Masters voice-over and dialogue text (Debian uqm-voice, uqm-content): (C) 1992, 1993, 2002 "
    "Toys for Bob, Inc. or their respective creators; licensed CC BY-NC-SA 2.5 "
    "(https://creativecommons.org/licenses/by-nc-sa/2.5/): non-commercial use only, attribute, share alike."
)
MAX_S = 20.0
MIN_ALIGNMENT_SCORE = -2.0
TEST = ("syreen", "commander")
DEV = ("vux", "supox")
SAME_SPEAKER = {"starbase": "commander", "yehatrebels": "yehat"}
PROCESSED = ("chmmr", "kohrah", "mycon", "orz", "probe", "slylandro", "talkingpet", "urquan", "zoqfotpik")
SPLITS = ("train", "dev", "test")


class FirstModel(Protocol):
    """What cutting at words needs of a trained model (:class:`dasr.decode.recognizer.Recognizer` is one)."""

    tokenizer: Tokenizer
    subsampling: int  # input frames per output frame

    def fbank_log_probs(self, feats: np.ndarray) -> tuple[Any, Any]:
        """Raw fbank (T, 80) of one utterance -> (1, T', V) log-probs and (1,) lengths (torch tensors)."""
        ...


@dataclass(frozen=True)
class Alignment:
    """What cuts pages too long to keep whole at words: a first model, and the lowest score a piece may have.

    ``load(exp)`` opens the model in each cutting process; it must be picklable (a module-level
    function or class, e.g. ``Recognizer``): the data layer does not import the decoding one.
    """

    exp: str
    load: Callable[[str], FirstModel]
    min_score: float = MIN_ALIGNMENT_SCORE


@dataclass(frozen=True)
class _Job:
    """One clip to cut and write: its text, page timings and where its audio lives."""

    zip_path: str
    member: str
    text: ClipText
    durations_ms: tuple[int, ...]
    speaker: str
    split: str
    out_dir: str
    max_s: float
    alignment: Alignment | None = None  # what cuts pages too long to keep whole, if anything


def speaker_of(character: str) -> str:
    return SAME_SPEAKER.get(character, character)


def split_of(character: str) -> str:
    speaker = speaker_of(character)
    return "test" if speaker in TEST else "dev" if speaker in DEV else "train"


def find_archives(source: Path) -> tuple[Path, Path]:
    """The voice and content zips (``*.uqm``) under ``source``, told apart by what they hold."""
    voice = content = None
    for path in sorted(source.rglob("*.uqm")):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            raise DataError(f"{path} is not a zip archive") from None
        if any(n.startswith("3dovoice/") and n.endswith(".ogg") for n in names):
            voice = path
        elif any(n.startswith("base/comm/") for n in names):
            content = path
    if voice is None or content is None:
        missing = " and ".join(p for p, found in zip(PACKAGES, (voice, content)) if found is None)
        raise DataError(f"no {missing} archive (*.uqm) under {source}")
    return voice, content


def locate(source: str | os.PathLike | None, cache: Path) -> tuple[Path, Path]:
    """The archives: under ``source`` if given (``.uqm`` files or the packages' ``.deb`` files), else
    the installed game's, else fetched with :class:`DebCache` into ``cache``."""
    if source is not None:
        source = Path(source)
        debs = sorted(source.glob("uqm-*.deb"))
        if debs and not list(source.rglob("*.uqm")):
            deb_cache = DebCache(cache)
            for deb in debs:
                deb_cache.unpack(deb)
            return find_archives(deb_cache.root)
        return find_archives(source)
    if (SYSTEM_DIR / "addons").is_dir() and (SYSTEM_DIR / "packages").is_dir():
        try:
            return find_archives(SYSTEM_DIR)
        except DataError:
            pass
    return find_archives(DebCache(cache).fetch(list(PACKAGES)))


def read_texts(voice: Path, content: Path, rejections: RejectionLog) -> tuple[list[ClipText], dict, dict]:
    """Every clip's text and page timings, and which zip member holds each clip.

    The voice add-on's own ``<name>.txt`` wins over the content package's (it matches the
    recordings). Returns (texts, timings by (character, block id), clip member by (character, clip)).
    """
    voice_zip, content_zip = zipfile.ZipFile(voice), zipfile.ZipFile(content)
    voice_names, content_names = set(voice_zip.namelist()), set(content_zip.namelist())
    characters = sorted({n.split("/")[1] for n in voice_names if n.startswith("3dovoice/") and n.endswith(".ts")})
    texts: list[ClipText] = []
    timings: dict[tuple[str, str], list[int]] = {}
    members = {(n.split("/")[1], n.split("/")[-1]): n for n in voice_names if n.endswith(".ogg")}
    for name in characters:
        own, base = f"3dovoice/{name}/{name}.txt", f"base/comm/{name}/{name}.txt"
        if own not in voice_names and base not in content_names:
            rejections.add(content, None, name, f"no transcript: neither {own} nor {base} exists")
            continue
        raw = voice_zip.read(own) if own in voice_names else content_zip.read(base)
        texts += clip_texts(name, read_blocks(raw.decode("latin-1")))
        ts = voice_zip.read(f"3dovoice/{name}/{name}.ts").decode("latin-1")
        timings.update({(name, block): ms for block, ms in read_timestamps(ts).items()})
    return texts, timings, members


def plan_jobs(
    voice: Path,
    content: Path,
    out_dir: Path,
    drop_processed: bool,
    rejections: RejectionLog,
    max_s: float = MAX_S,
    alignment: Alignment | None = None,
) -> tuple[list[_Job], int]:
    """One job per clip that has text, and the number of clips; clips and text blocks that cannot be
    used are rejected."""
    texts, timings, members = read_texts(voice, content, rejections)
    jobs: list = []
    seen: dict[tuple[str, str], ClipText] = {}
    for text in texts:
        key = (text.character, text.clip)
        if key not in members:
            rejections.add(
                voice, None, f"{text.character}:{text.ids[0]}", f"text without audio: {text.clip} is not in uqm-voice"
            )
            continue
        if key in seen:
            if seen[key].pages != text.pages:
                rejections.add(voice, None, text.clip, f"ambiguous text: blocks {seen[key].ids[0]}, {text.ids[0]}")
            continue
        seen[key] = text
        if drop_processed and text.character in PROCESSED:
            rejections.add(voice, None, text.clip, f"processed voice: {text.character}")
            continue
        split = split_of(text.character)
        ms = tuple(timings.get((text.character, text.ids[0]), []))
        speaker = speaker_of(text.character)
        jobs.append(_Job(str(voice), members[key], text, ms, speaker, split, str(out_dir), max_s, alignment))
    for key, member in sorted(members.items()):
        if key not in seen:
            rejections.add(voice, None, key[1], f"no transcript: no text block names {member}")
    return jobs, len(members)


def _boundaries(job: _Job, samples: np.ndarray, rate: int) -> list[float | None]:
    """Each page's start (but the first) moved to a pause, or None: no timing, or no pause near it."""
    pages = len(job.text.pages)
    if len(job.durations_ms) < pages - 1:
        return [None] * (pages - 1)
    nominal = np.cumsum(job.durations_ms[: pages - 1]) / 1000.0
    quiet = cuts.pauses(samples, rate)
    out: list[float | None] = []
    last = 0.0
    for t in nominal:
        snapped = cuts.snap(float(t), quiet)
        ok = snapped is not None and last + cuts.MIN_PAUSE_S < snapped < len(samples) / rate - cuts.MIN_PAUSE_S
        out.append(snapped if ok else None)
        last = snapped if ok and snapped is not None else last
    return out


def _cut(job: _Job) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Cut one clip, write its segments as 16 kHz FLAC; return the utterances and (id, reason) rejections."""
    with zipfile.ZipFile(job.zip_path) as archive:
        data = archive.read(job.member)
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as e:
        return [], [(job.text.clip, f"corrupt audio: {job.member}: {e}")]
    samples = samples.mean(axis=1)
    texts, reasons = zip(*(spoken(page) for page in job.text.pages))
    reasons = tuple("name inserted by the game" if k in job.text.slot_pages else r for k, r in enumerate(reasons))
    certain = [r is None for r in reasons]
    duration = len(samples) / rate
    if len(certain) == 1 or (all(certain) and duration <= job.max_s):
        segments, dropped = cuts.plan(duration, [None] * (len(certain) - 1), certain, job.max_s)
    else:
        segments, dropped = cuts.plan(duration, _boundaries(job, samples, rate), certain, job.max_s)
    pieces = [_Piece(seg, " ".join(texts[seg.first : seg.last + 1])) for seg in segments]
    losses = []
    for seg, kind in dropped:
        if kind == "too long" and job.alignment:
            aligned, not_aligned = _align(job, samples, rate, seg, " ".join(texts[seg.first : seg.last + 1]))
            pieces += aligned
            losses += [(seg, reason) for reason in not_aligned]
        elif kind == "too long":
            losses.append((seg, f"too long: over {job.max_s:g} s without a usable page boundary"))
        else:
            why = next(r for r in reasons[seg.first : seg.last + 1] if r)
            losses.append((seg, f"{kind}: {why}"))
    pieces.sort(key=lambda piece: piece.start)
    stem = Path(job.text.clip).stem
    many = len(pieces) + len(losses) > 1
    rejected = [
        (
            job.text.clip,
            f"{reason}, pages {seg.first + 1}-{seg.last + 1} of {len(certain)}" if many else f"{reason}, {job.member}",
        )
        for seg, reason in losses
    ]
    return [
        _write(job, samples, rate, piece, f"{stem}_{k:02d}" if many else stem, many) for k, piece in enumerate(pieces)
    ], rejected


@dataclass(frozen=True)
class _Piece:
    """One utterance to write: a span of a clip's pages, and its text (all the pages', or the aligned words')."""

    pages: cuts.Segment
    text: str
    start_s: float | None = None  # set when alignment cut the pages: where this piece lies in the clip
    end_s: float | None = None
    alignment_score: float | None = None

    @property
    def start(self) -> float:
        return self.pages.start if self.start_s is None else self.start_s

    @property
    def end(self) -> float:
        return self.pages.end if self.end_s is None else self.end_s


def _write(job: _Job, samples: np.ndarray, rate: int, piece: _Piece, utt_id: str, many: bool) -> Utterance:
    """Write ``piece`` of the clip as 16 kHz FLAC; its utterance."""
    target = Path(job.out_dir) / "audio" / job.split / job.text.character
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{utt_id}.flac"
    audio.write(
        path, audio.resample(_span(samples, rate, piece.start, piece.end), rate, audio.TARGET_RATE), audio.TARGET_RATE
    )
    extra: dict[str, object] = {
        "character": job.text.character,
        "clip": job.text.clip,
        "pages": [piece.pages.first + 1, piece.pages.last + 1],
    }
    if many:
        extra.update(clip_start=round(piece.start, 3), clip_end=round(piece.end, 3))
    if piece.alignment_score is not None:
        extra["alignment_score"] = round(piece.alignment_score, 3)
    if job.text.character in PROCESSED:
        extra["processed"] = True
    return Utterance(utt_id, str(path), round(piece.end - piece.start, 4), piece.text, job.speaker, extra=extra)


def _span(samples: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return samples[int(round(start * rate)) : int(round(end * rate))]


def _align(job: _Job, samples: np.ndarray, rate: int, pages: cuts.Segment, text: str) -> tuple[list[_Piece], list[str]]:
    """Pages too long to keep whole, cut at words by the ``--align-with`` model (:mod:`dasr.data.ctc_align`).

    Returns the pieces kept, and the reasons of those dropped: no alignment, no pause between
    aligned words that keeps a piece short enough, or a score below the alignment's minimum.
    """
    assert job.alignment is not None
    recognizer = _first_model(job.alignment.load, job.alignment.exp)
    span = audio.resample(_span(samples, rate, pages.start, pages.end), rate, audio.TARGET_RATE)
    log_probs, lengths = recognizer.fbank_log_probs(fbank(span))
    try:
        words = ctc_align.align_words(log_probs[0, : int(lengths[0])].numpy(), text, recognizer.tokenizer)
    except ValueError as e:
        return [], [f"not aligned: {e}"]
    quiet = cuts.pauses(_span(samples, rate, pages.start, pages.end), rate)
    frame_s = FRAME_SHIFT_S * recognizer.subsampling
    cut = ctc_align.cut_at_words(words, frame_s, pages.end - pages.start, job.max_s, quiet)
    if cut is None:
        return [], [f"too long: over {job.max_s:g} s without a pause between aligned words"]
    kept, reasons = [], []
    for p in cut:
        start, end = pages.start + p.start, pages.start + p.end
        if p.score < job.alignment.min_score:
            reasons.append(
                f"uncertain alignment: score {p.score:.2f} below {job.alignment.min_score:g} at {start:.1f}-{end:.1f} s"
            )
        else:
            kept.append(_Piece(pages, " ".join(w.word for w in words[p.first : p.last]), start, end, p.score))
    return kept, reasons


@functools.lru_cache(maxsize=1)
def _first_model(load: Callable[[str], FirstModel], exp: str) -> FirstModel:
    """The model that cuts at words, loaded once per cutting process, on one thread."""
    import torch

    torch.set_num_threads(1)
    return load(exp)


def prepare_uqm(
    out_dir: str | os.PathLike,
    source: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    jobs: int | None = None,
    drop_processed: bool = False,
    max_s: float = MAX_S,
    alignment: Alignment | None = None,
) -> dict:
    """Build train/dev/test manifests of The Ur-Quan Masters' voice-over (see the module docstring).

    Args:
        out_dir: the data dir to write.
        source: a dir with the two ``.uqm`` archives or the two ``.deb`` packages; default: the
            installed game's, else Debian's packages fetched into ``cache``.
        cache: the private apt cache (default ``out_dir/deb-cache``).
        jobs: processes cutting clips (default: all cores).
        drop_processed: reject the PROCESSED voices instead of keeping them in train.
        max_s: the longest utterance in seconds.
        alignment: a first model: pages longer than ``max_s`` with no usable page boundary are cut
            at words by its CTC alignment, not rejected; pieces whose units score lower on average
            (mean log-probability) than its ``min_score`` are rejected (the default suits the real
            recipe's demo model, docs/DESIGN.md).

    Returns:
        A summary: clips, kept clips (whole and cut), rejections by reason, and per split the
        utterances, hours and speakers.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(LICENSE)
    (out / "LICENSE-uqm.txt").write_text(LICENSE + "\n")
    voice, content = locate(source, Path(cache) if cache else out / "deb-cache")
    rejections = RejectionLog()
    plan, clips = plan_jobs(voice, content, out, drop_processed, rejections, max_s, alignment)
    jobs = jobs or os.cpu_count() or 1
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(progress(pool.map(_cut, plan, chunksize=8), total=len(plan), desc="cutting clips", unit="clip"))
    by_split: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for job, (utts, rejected) in zip(plan, results):
        by_split[job.split] += utts
        for clip, reason in rejected:
            rejections.add(f"{voice}:{job.member}", None, clip, reason)
    for split, utts in by_split.items():
        write_manifest(out / f"{split}.jsonl", utts)
    rejections.write(out / "rejected.jsonl", "import", "uqm")
    return _summary(clips, results, rejections, by_split)


def _summary(clips: int, results: list, rejections: RejectionLog, by_split: dict[str, list[Utterance]]) -> dict:
    kept = [utts for utts, _ in results if utts]
    return {
        "clips": clips,
        "clips_kept": len(kept),
        "clips_cut": sum(1 for utts in kept if "clip_start" in utts[0].extra),
        "rejected": dict(Counter(r.reason.split(":")[0] for r in rejections.items).most_common()),
        "splits": {
            split: {
                "utterances": len(utts),
                "hours": round(sum(u.duration for u in utts) / 3600, 3),
                "speakers": sorted({u.speaker for u in utts}),
            }
            for split, utts in by_split.items()
        },
    }
