"""lhotse manifests in and out: what icefall, k2 and NeMo recipes prepared becomes dasr utterances, and back.

lhotse describes audio as recordings (files, with channels) and supervisions (a time span of one
recording, with a transcript); a cut bundles a span of a recording with its supervisions. A dasr
:class:`~dasr.data.manifest.Utterance` is one supervision: the file (or shell pipe) it is in, its
[start, end) seconds (none when it is the whole file) and its text. dasr reads every channel of a
file and mixes them, so a supervision may select a channel only where that channel is a file of
its own. What dasr cannot read is rejected with a reason, as the other importers do:

- ``missing audio file``, ``corrupt audio``, ``shell pipe not allowed`` (from :func:`audio.probe`);
- ``empty transcript``, ``duplicate id``, ``bad segment`` (outside its recording);
- ``missing recording`` (a supervision names a recording the recordings manifest lacks);
- ``unsupported audio source`` (url, memory, shar), ``unsupported transform`` (speed, volume...),
  ``unsupported channel selection``, ``unsupported cut`` (mixed or padded cuts).

Times keep lhotse's start and duration; dasr's end is their sum, to the microsecond.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from dasr.data import audio
from dasr.data.manifest import RejectionLog, Utterance, _recording_id
from dasr.errors import DataError
from dasr.extras import require

require("lhotse", "lhotse", "reading and writing lhotse manifests")

from lhotse import (  # noqa: E402
    AudioSource,
    CutSet,
    Recording,
    RecordingSet,
    SupervisionSegment,
    SupervisionSet,
    load_manifest,
    validate_recordings_and_supervisions,
)
from lhotse.cut.data import DataCut  # noqa: E402

WHOLE_FILE_TOLERANCE_S = 1e-3  # a supervision this close to its recording's length is the whole file
RECORDINGS_FILE = "recordings.jsonl.gz"
SUPERVISIONS_FILE = "supervisions.jsonl.gz"


class _Rejected(Exception):
    """One supervision dasr cannot use; the message is the rejection reason."""


def _load(path: str | os.PathLike, kinds: tuple[type, ...]):
    try:
        manifest = load_manifest(path)
    except Exception as e:  # lhotse raises many kinds for a file that is not its manifest
        raise DataError(f"cannot read lhotse manifest {path}: {e}") from None
    if not isinstance(manifest, kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"{path} holds a lhotse {type(manifest).__name__}, expected a {wanted}")
    return manifest


def import_lhotse(
    manifest: str | os.PathLike, supervisions: str | os.PathLike | None = None, allow_pipes: bool = False
) -> tuple[list[Utterance], RejectionLog]:
    """Utterances of a lhotse RecordingSet + SupervisionSet, or of one CutSet (``supervisions`` None).

    Every audio file is opened to validate it, as :func:`dasr.data.manifest.import_kaldi` does.
    A lhotse ``command`` source becomes a dasr shell pipe, run only with ``allow_pipes``.
    """
    if supervisions is None:
        cuts = _load(manifest, (CutSet, RecordingSet))
        if isinstance(cuts, RecordingSet):
            raise DataError(f"{manifest} holds recordings only: give the supervisions manifest too")
        return _import_pairs(_cut_pairs(cuts), manifest, allow_pipes)
    recordings = _load(manifest, (RecordingSet,))
    sups = _load(supervisions, (SupervisionSet,))
    by_id = {r.id: r for r in recordings}
    return _import_pairs(((by_id.get(s.recording_id), s) for s in sups), supervisions, allow_pipes)


def _cut_pairs(cuts: CutSet) -> Iterator[tuple[Recording | None, SupervisionSegment | str]]:
    """(recording, supervision in recording time) per supervision of each cut; a reason for cuts dasr cannot use."""
    for cut in cuts:
        if not isinstance(cut, DataCut):
            yield None, f"unsupported cut: {cut.id} is a {type(cut).__name__} (mixed or padded audio)"
        elif not cut.has_recording:
            yield None, f"unsupported cut: {cut.id} has no recording (features only)"
        else:
            for sup in cut.supervisions:
                yield cut.recording, sup.with_offset(cut.start)


def _import_pairs(
    pairs: Iterable[tuple[Recording | None, SupervisionSegment | str]], where: str | os.PathLike, allow_pipes: bool
) -> tuple[list[Utterance], RejectionLog]:
    rejections = RejectionLog()
    utts: list[Utterance] = []
    seen: set[str] = set()
    probed: dict[str, audio.AudioInfo | str] = {}
    for rec, sup in pairs:
        if isinstance(sup, str):
            rejections.add(where, None, None, sup)
            continue
        try:
            if sup.id in seen:
                raise _Rejected(f"duplicate id: supervision {sup.id} appears twice")
            seen.add(sup.id)
            utts.append(_utterance(rec, sup, probed, allow_pipes))
        except _Rejected as e:
            rejections.add(where, None, sup.id, str(e))
    return utts, rejections


def _utterance(
    rec: Recording | None, sup: SupervisionSegment, probed: dict[str, audio.AudioInfo | str], allow_pipes: bool
) -> Utterance:
    if rec is None:
        raise _Rejected(f"missing recording: {sup.recording_id} is not in the recordings manifest")
    if not (sup.text or "").strip():
        raise _Rejected("empty transcript")
    if rec.transforms:
        names = ", ".join(t["name"] if isinstance(t, dict) else type(t).__name__ for t in rec.transforms)
        raise _Rejected(
            f"unsupported transform: recording {rec.id} is transformed ({names}); dasr reads files as they are"
        )
    entry = _audio_entry(rec, sup)
    if entry not in probed:
        try:
            probed[entry] = audio.probe(entry, allow_pipes=allow_pipes)
        except DataError as e:
            probed[entry] = str(e)
    info = probed[entry]
    if isinstance(info, str):
        raise _Rejected(info)
    if sup.start < 0 or sup.duration <= 0 or sup.end > info.duration + WHOLE_FILE_TOLERANCE_S:
        raise _Rejected(
            f"bad segment: [{sup.start:.4f}, {sup.end:.4f}) s is outside recording {rec.id} of {info.duration:.4f} s"
        )
    whole = sup.start == 0 and abs(sup.duration - info.duration) <= WHOLE_FILE_TOLERANCE_S
    return Utterance(
        id=sup.id,
        audio=entry,
        duration=sup.duration,
        text=sup.text.strip(),
        speaker=sup.speaker or "",
        sample_rate=info.sample_rate,
        start=None if whole else sup.start,
        end=None if whole else round(sup.start + sup.duration, 6),
        extra=dict(sup.custom or {}),
    )


def _audio_entry(rec: Recording, sup: SupervisionSegment) -> str:
    """The dasr audio entry (path or 'command |') holding exactly the supervision's channels."""
    wanted = set(sup.channel) if isinstance(sup.channel, list) else {sup.channel}
    sources = [s for s in rec.sources if wanted & set(s.channels)]
    if len(sources) != 1 or set(sources[0].channels) != wanted:
        raise _Rejected(
            f"unsupported channel selection: supervision on channel(s) {sorted(wanted)} of recording {rec.id}, "
            f"whose files hold {[s.channels for s in rec.sources]}; dasr mixes all channels of one file"
        )
    source = sources[0]
    if source.type == "file":
        path = Path(str(source.source))
        return str(path.resolve()) if path.exists() else str(path)
    if source.type == "command":
        return f"{source.source} |"
    raise _Rejected(
        f"unsupported audio source: recording {rec.id} is a {source.type!r} source (dasr reads files and commands)"
    )


def export_lhotse(
    utts: Iterable[Utterance], out_dir: str | os.PathLike, allow_pipes: bool = False
) -> tuple[Path, Path]:
    """Write ``recordings.jsonl.gz`` and ``supervisions.jsonl.gz`` that lhotse loads; return their paths.

    Utterances of one file share a recording (named as the Kaldi export names them). Each file is
    opened for its length and channels; a shell pipe is run for that only with ``allow_pipes``.
    """
    utts = sorted(utts, key=lambda u: u.id)
    rec_ids = _recording_ids(utts)
    recordings: dict[str, Recording] = {}
    for u in utts:
        if u.audio not in recordings:
            recordings[u.audio] = _recording(rec_ids[u.audio], u, allow_pipes)
    sups = [_supervision(u, recordings[u.audio]) for u in utts]
    recording_set = RecordingSet.from_recordings(recordings.values())
    supervision_set = SupervisionSet.from_segments(sups)
    try:
        validate_recordings_and_supervisions(recording_set, supervision_set)
    except (AssertionError, ValueError) as e:  # lhotse validates with assert
        raise DataError(f"lhotse refuses the export: {e}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recording_set.to_file(out / RECORDINGS_FILE)
    supervision_set.to_file(out / SUPERVISIONS_FILE)
    return out / RECORDINGS_FILE, out / SUPERVISIONS_FILE


def _recording_ids(utts: list[Utterance]) -> dict[str, str]:
    """Audio entry -> recording id: the utterance's id for a file it has to itself, as the Kaldi export names them."""
    users = Counter(u.audio for u in utts)
    ids: dict[str, str] = {}
    for u in utts:
        if u.audio not in ids:
            alone = users[u.audio] == 1 and u.start is None
            ids[u.audio] = u.id if alone else _recording_id(u.audio, len(ids))
    return ids


def _recording(rec_id: str, u: Utterance, allow_pipes: bool) -> Recording:
    try:
        info = audio.probe(u.audio, allow_pipes=allow_pipes)
    except DataError as e:
        raise DataError(f"cannot export utterance {u.id}: {e}") from None
    if audio.is_pipe(u.audio):
        source = AudioSource(type="command", channels=list(range(info.channels)), source=u.audio.rstrip()[:-1].strip())
    else:
        source = AudioSource(type="file", channels=list(range(info.channels)), source=u.audio)
    return Recording(
        id=rec_id,
        sources=[source],
        sampling_rate=info.sample_rate,
        num_samples=info.num_samples,
        duration=info.duration,
        channel_ids=list(range(info.channels)),
    )


def _supervision(u: Utterance, rec: Recording) -> SupervisionSegment:
    return SupervisionSegment(
        id=u.id,
        recording_id=rec.id,
        start=u.start or 0.0,
        duration=u.duration,
        channel=rec.channel_ids[0] if len(rec.channel_ids) == 1 else list(rec.channel_ids),
        text=u.text,
        speaker=u.speaker or None,
        custom=dict(u.extra) or None,
    )
