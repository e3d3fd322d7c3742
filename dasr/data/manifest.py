"""Utterance records, JSONL manifests, Kaldi data dirs and LibriSpeech-style trees.

Importers never stop at a bad entry: they skip it, record a :class:`Rejection` naming the
file, line and reason, and carry on. The caller decides whether what remains is enough.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dasr.data import audio
from dasr.errors import DataError


@dataclass
class Utterance:
    """One utterance: a whole audio file, or the [start, end) seconds of one."""

    id: str
    audio: str
    duration: float
    text: str
    speaker: str = ""
    sample_rate: int = 16000
    start: float | None = None
    end: float | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if not d["extra"]:
            del d["extra"]
        for key in ("start", "end"):
            if d[key] is None:
                del d[key]
        return json.dumps(d, ensure_ascii=False)


@dataclass
class Rejection:
    """A skipped input entry and why it was skipped."""

    file: str
    line: int | None
    id: str | None
    reason: str


class RejectionLog:
    """Collects rejections; written into a data dir's rejected.jsonl and summarised by reason.

    Each stage that rejects entries (``import``, ``features``) writes its records with a ``stage``
    and the ``manifest`` they concern; a stage never removes what other stages recorded.
    """

    def __init__(self) -> None:
        self.items: list[Rejection] = []

    def add(self, file: str | os.PathLike, line: int | None, utt_id: str | None, reason: str) -> None:
        self.items.append(Rejection(str(file), line, utt_id, reason))

    def extend(self, other: RejectionLog) -> None:
        self.items.extend(other.items)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        """One line per kind of reason, e.g. '3 missing audio file'."""
        kinds = Counter(r.reason.split(":")[0] for r in self.items)
        return ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "none"

    def write(self, path: str | os.PathLike, stage: str, manifest: str) -> None:
        """Record these rejections in ``path`` as what ``stage`` rejected of ``manifest`` (a file name).

        Replaces the records an earlier run of the same stage wrote for the same manifest (a rerun
        does not count twice) and keeps every other record. The file is replaced atomically.
        """
        path = Path(path)
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict) or (record.get("stage"), record.get("manifest")) != (stage, manifest):
                    kept.append(line)
        new = [
            json.dumps({"stage": stage, "manifest": manifest, **dataclasses.asdict(r)}, ensure_ascii=False)
            for r in self.items
        ]
        if not kept and not new:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept + new), encoding="utf-8")
        os.replace(tmp, path)


_FIELDS = {f.name for f in dataclasses.fields(Utterance)}


def write_manifest(path: str | os.PathLike, utts: Iterable[Utterance]) -> None:
    """Write utterances as JSONL, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for u in utts:
            f.write(u.to_json() + "\n")
    os.replace(tmp, path)


def iter_manifest(path: str | os.PathLike, rejections: RejectionLog | None = None) -> Iterator[Utterance]:
    """Yield the utterances of a JSONL manifest.

    A malformed line raises :class:`DataError` naming file and line, unless ``rejections`` is
    given, in which case it is recorded there and skipped.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"manifest {path} does not exist")
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except OSError as e:
        raise DataError(f"cannot read manifest {path}: {e.strerror}") from None
    for lineno, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw.decode("utf-8"))
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            unknown = set(d) - _FIELDS
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            utt = Utterance(**d)
            if not isinstance(utt.id, str) or not isinstance(utt.audio, str) or not isinstance(utt.text, str):
                raise ValueError("id, audio and text must be strings")
            utt.duration = float(utt.duration)
            utt.sample_rate = int(utt.sample_rate)
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            reason = f"malformed manifest line: {e}"
            if rejections is None:
                raise DataError(f"{path}:{lineno}: {reason}") from None
            rejections.add(path, lineno, None, reason)
            continue
        yield utt


def read_manifest(path: str | os.PathLike, rejections: RejectionLog | None = None) -> list[Utterance]:
    """Read a JSONL manifest into a list (see :func:`iter_manifest`)."""
    return list(iter_manifest(path, rejections))


def _read_table(path: Path, rejections: RejectionLog, min_fields: int = 2) -> dict[str, tuple[int, str]]:
    """Read a Kaldi 'key rest-of-line' table: key -> (line number, rest).

    Non-UTF-8 lines, lines with too few fields and duplicate keys are rejected.
    """
    table: dict[str, tuple[int, str]] = {}
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            rejections.add(path, lineno, None, "unreadable transcript: line is not valid UTF-8")
            continue
        if not line:
            continue
        parts = line.split(maxsplit=1)
        key = parts[0]
        rest = parts[1].strip() if len(parts) > 1 else ""
        if len(parts) < min_fields or (min_fields > 1 and not rest):
            reason = "empty transcript" if path.name == "text" else f"line has fewer than {min_fields} fields"
            rejections.add(path, lineno, key, reason)
            continue
        if key in table:
            rejections.add(path, lineno, key, f"duplicate id: first seen on line {table[key][0]}")
            continue
        table[key] = (lineno, rest)
    return table


def _is_pipe(entry: str) -> bool:
    return entry.rstrip().endswith("|")


def _read_segments(path: Path, rejections: RejectionLog) -> dict[str, tuple[str, float | None, float | None]]:
    """A Kaldi ``segments`` file: utterance -> (recording, start, end); bad lines go to ``rejections``."""
    segments: dict[str, tuple[str, float | None, float | None]] = {}
    for key, (lineno, rest) in _read_table(path, rejections).items():
        fields = rest.split()
        try:
            rec, begin, finish = fields[0], float(fields[1]), float(fields[2])
            if not 0 <= begin < finish:
                raise ValueError
        except (ValueError, IndexError):
            reason = f"bad segment: expected 'rec start end' with 0 <= start < end, got {rest!r}"
            rejections.add(path, lineno, key, reason)
            continue
        segments[key] = (rec, begin, finish)
    return segments


def _probe_once(cache: dict[str, audio.AudioInfo | str], rec: str, entry: str, allow_pipes: bool):
    """The recording's AudioInfo, or why it cannot be read; each recording is opened once."""
    if rec not in cache:
        try:
            cache[rec] = audio.probe(entry, allow_pipes=allow_pipes)
        except DataError as e:
            cache[rec] = str(e)
    return cache[rec]


def import_kaldi(kaldi_dir: str | os.PathLike, allow_pipes: bool = False) -> tuple[list[Utterance], RejectionLog]:
    """Import a Kaldi data dir (wav.scp, text, utt2spk, optional segments).

    Every utterance's audio is opened to validate it and to measure its duration. A wav.scp
    entry that is a shell pipe (``cmd ... |``) is rejected unless ``allow_pipes`` is set.
    """
    kaldi_dir = Path(kaldi_dir)
    rejections = RejectionLog()
    for name in ("wav.scp", "text"):
        if not (kaldi_dir / name).is_file():
            raise DataError(f"{kaldi_dir} is not a Kaldi data dir: {name} is missing")
    wavs = _read_table(kaldi_dir / "wav.scp", rejections)
    texts = _read_table(kaldi_dir / "text", rejections)
    spk = _read_table(kaldi_dir / "utt2spk", rejections) if (kaldi_dir / "utt2spk").is_file() else {}
    segments_path = kaldi_dir / "segments"
    if segments_path.is_file():
        segments = _read_segments(segments_path, rejections)
    else:
        segments = {k: (k, None, None) for k in wavs}

    utts: list[Utterance] = []
    recording_info: dict[str, audio.AudioInfo | str] = {}
    for utt_id, (rec, start, end) in segments.items():
        if utt_id not in texts:
            rejections.add(kaldi_dir / "text", None, utt_id, "empty transcript: no line in text")
            continue
        text_line, text = texts[utt_id]
        if rec not in wavs:
            rejections.add(kaldi_dir / "wav.scp", None, utt_id, f"missing audio file: recording {rec} not in wav.scp")
            continue
        wav_line, entry = wavs[rec]
        if _is_pipe(entry) and not allow_pipes:
            reason = "shell pipe not allowed: pass --allow-pipes to run it"
            rejections.add(kaldi_dir / "wav.scp", wav_line, utt_id, reason)
            continue
        if not _is_pipe(entry) and not os.path.isabs(entry):
            entry = str((kaldi_dir / entry).resolve()) if (kaldi_dir / entry).exists() else entry
        info = _probe_once(recording_info, rec, entry, allow_pipes)
        if isinstance(info, str):
            rejections.add(kaldi_dir / "wav.scp", wav_line, utt_id, info)
            continue
        if start is not None and end is not None and end > info.duration + 0.01:
            rejections.add(
                segments_path, None, utt_id, f"bad segment: end {end:.2f}s is past the recording's {info.duration:.2f}s"
            )
            continue
        duration = info.duration if start is None or end is None else end - start
        utts.append(
            Utterance(
                id=utt_id,
                audio=entry,
                duration=round(duration, 4),
                text=text,
                speaker=spk.get(utt_id, (0, utt_id))[1],
                sample_rate=info.sample_rate,
                start=start,
                end=end,
            )
        )
    return utts, rejections


def export_kaldi(utts: Iterable[Utterance], out_dir: str | os.PathLike) -> None:
    """Write utterances as a Kaldi data dir: wav.scp, text, utt2spk, spk2utt, segments if needed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.id)
    segmented = any(u.start is not None for u in utts)
    recordings: dict[str, str] = {}
    spk2utt: dict[str, list[str]] = {}
    with open(out / "text", "w", encoding="utf-8") as text, open(out / "utt2spk", "w", encoding="utf-8") as u2s:
        for u in utts:
            text.write(f"{u.id} {u.text}\n")
            speaker = u.speaker or u.id
            u2s.write(f"{u.id} {speaker}\n")
            spk2utt.setdefault(speaker, []).append(u.id)
    with open(out / "spk2utt", "w", encoding="utf-8") as f:
        for speaker in sorted(spk2utt):
            f.write(f"{speaker} {' '.join(spk2utt[speaker])}\n")
    if segmented:
        with open(out / "segments", "w", encoding="utf-8") as f:
            for u in utts:
                rec = recordings.setdefault(u.audio, _recording_id(u.audio, len(recordings)))
                start = u.start if u.start is not None else 0.0
                end = u.end if u.end is not None else start + u.duration
                f.write(f"{u.id} {rec} {start:.4f} {end:.4f}\n")
    else:
        recordings = {u.audio: u.id for u in utts}
    with open(out / "wav.scp", "w", encoding="utf-8") as f:
        for path, rec in sorted(recordings.items(), key=lambda kv: kv[1]):
            f.write(f"{rec} {path}\n")


def _recording_id(path: str, index: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path.rstrip("| ")).stem) or "rec"
    return f"{stem}-{index:06d}"


def import_librispeech(root: str | os.PathLike) -> tuple[list[Utterance], RejectionLog]:
    """Import a LibriSpeech-style tree: ``*.trans.txt`` files listing ``ID TEXT`` beside ``ID.flac``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    rejections = RejectionLog()
    utts: list[Utterance] = []
    seen: dict[str, str] = {}
    trans_files = sorted(root.rglob("*.trans.txt"))
    if not trans_files:
        raise DataError(f"no *.trans.txt transcript files under {root}")
    for trans in trans_files:
        for utt_id, (lineno, text) in _read_table(trans, rejections).items():
            if utt_id in seen:
                rejections.add(trans, lineno, utt_id, f"duplicate id: also in {seen[utt_id]}")
                continue
            seen[utt_id] = str(trans)
            candidates = [trans.parent / f"{utt_id}{ext}" for ext in (".flac", ".wav", ".ogg")]
            path = next((p for p in candidates if p.exists()), candidates[0])
            try:
                info = audio.probe(str(path))
            except DataError as e:
                rejections.add(trans, lineno, utt_id, str(e))
                continue
            speaker = utt_id.split("-")[0]
            utts.append(
                Utterance(
                    id=utt_id,
                    audio=str(path.resolve()),
                    duration=round(info.duration, 4),
                    text=text,
                    speaker=speaker,
                    sample_rate=info.sample_rate,
                )
            )
    return utts, rejections
