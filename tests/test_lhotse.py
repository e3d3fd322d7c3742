"""lhotse interop checked against lhotse itself: manifests lhotse writes import, manifests dasr writes load in lhotse.

The audio is the committed espeak speech (tests/data/speech) plus tones written here; every
comparison of audio reads the same span once through lhotse and once through dasr.
"""

import dataclasses
import faulthandler
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from lhotse import (
    AudioSource,
    CutSet,
    Recording,
    RecordingSet,
    SupervisionSegment,
    SupervisionSet,
    load_manifest,
    validate_recordings_and_supervisions,
)

from dasr.data import audio
from dasr.data.lhotse_io import export_lhotse, import_lhotse
from dasr.data.manifest import Utterance, read_manifest, write_manifest
from dasr.errors import DataError

SPEECH = Path(__file__).parent / "data" / "speech"
SEGMENTS = [("seg-1", "train-000002", 0.25, 0.5), ("seg-2", "train-000002", 0.8, 0.45)]  # id, recording, start, dur


@pytest.fixture(autouse=True)
def _time_limit():
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _dasr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dasr", *args], capture_output=True, text=True, timeout=120)


def _transcripts() -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in (SPEECH / "transcripts.tsv").read_text().splitlines()]


@pytest.fixture
def speech_lhotse(tmp_path):
    """The 8 speech files as lhotse writes them: whole-file supervisions plus two segments of one file."""
    recordings = RecordingSet.from_recordings(
        Recording.from_file(SPEECH / f"{utt_id}.flac") for utt_id, _, _ in _transcripts()
    )
    sups = [
        SupervisionSegment(utt_id, utt_id, 0.0, recordings[utt_id].duration, text=text, speaker=speaker)
        for utt_id, speaker, text in _transcripts()
    ]
    sups += [
        SupervisionSegment(sid, rec, start, dur, text="open the", speaker="seg-speaker", custom={"part": i})
        for i, (sid, rec, start, dur) in enumerate(SEGMENTS)
    ]
    supervisions = SupervisionSet.from_segments(sups)
    recordings.to_file(tmp_path / "recordings.jsonl.gz")
    supervisions.to_file(tmp_path / "supervisions.jsonl.gz")
    return tmp_path / "recordings.jsonl.gz", tmp_path / "supervisions.jsonl.gz"


def _lhotse_audio(cut) -> np.ndarray:
    """What lhotse reads for a cut, mixed to mono as dasr mixes it."""
    return cut.load_audio().mean(axis=0)


def test_import_recordings_and_supervisions(speech_lhotse, tmp_path):
    rec_path, sup_path = speech_lhotse
    out = tmp_path / "data" / "train.jsonl"
    done = _dasr("corpus", "import-lhotse", str(rec_path), str(sup_path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrote 10 utterances" in done.stdout and "rejected 0" in done.stdout
    utts = {u.id: u for u in read_manifest(out)}
    assert len(utts) == 10
    for utt_id, speaker, text in _transcripts():
        u, info = utts[utt_id], soundfile.info(str(SPEECH / f"{utt_id}.flac"))
        assert (u.text, u.speaker, u.sample_rate, u.start, u.end) == (text, speaker, 16000, None, None)
        assert u.duration == info.frames / info.samplerate
        assert Path(u.audio) == (SPEECH / f"{utt_id}.flac").resolve()
    assert [(utts[s].start, utts[s].end, utts[s].duration, utts[s].extra) for s, *_ in SEGMENTS] == [
        (0.25, 0.75, 0.5, {"part": 0}),
        (0.8, 1.25, 0.45, {"part": 1}),
    ]
    # the same samples through lhotse and through dasr, segment by segment
    cuts = CutSet.from_manifests(load_manifest(rec_path), load_manifest(sup_path)).trim_to_supervisions(
        keep_overlapping=False
    )
    for cut in cuts:
        u = utts[cut.supervisions[0].id]
        expected = _lhotse_audio(cut)
        got = audio.load(u.audio, u.start, u.end)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_cutset_import_equals_recordings_import(speech_lhotse, tmp_path):
    rec_path, sup_path = speech_lhotse
    from_sets, rejections = import_lhotse(rec_path, sup_path)
    assert not rejections
    # cuts that start where their supervision starts: supervision times are relative to the cut
    cuts = CutSet.from_manifests(load_manifest(rec_path), load_manifest(sup_path)).trim_to_supervisions(
        keep_overlapping=False
    )
    assert sorted(c.start for c in cuts if c.supervisions[0].id == "seg-2") == [0.8]
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    out = tmp_path / "data" / "cuts.jsonl"
    done = _dasr("corpus", "import-lhotse", str(tmp_path / "cuts.jsonl.gz"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(read_manifest(out), key=lambda u: u.id) == sorted(from_sets, key=lambda u: u.id)


def _recording(rec_id: str, path: str) -> Recording:
    return Recording.from_file(path, recording_id=rec_id)


def test_bad_entries_are_rejected_with_reasons(tmp_path, make_wav):
    speech = str(SPEECH / "train-000000.flac")
    gone = tmp_path / "gone.flac"
    shutil.copy(speech, gone)
    stereo = make_wav("stereo.wav", 1.0, channels=2)
    left, right = make_wav("left.wav", 1.0, seed=1), make_wav("right.wav", 1.0, seed=2)
    recordings = [
        _recording("speech", speech),
        _recording("gone", str(gone)),
        _recording("stereo", stereo),
        _recording("fast", speech).perturb_speed(1.1, affix_id=False),
        Recording("web", [AudioSource("url", [0], "https://example.invalid/a.flac")], 16000, 16000, 1.0),
        Recording("piped", [AudioSource("command", [0], f"cat {speech}")], 16000, 27477, 27477 / 16000),
        Recording(
            "two-files", [AudioSource("file", [0], left), AudioSource("file", [1], right)], 16000, 16000, 1.0, [0, 1]
        ),
    ]
    gone.unlink()

    def sup(sid, rec, start=0.0, duration=1.0, text="call mom", channel=0):
        return SupervisionSegment(sid, rec, start, duration, channel=channel, text=text)

    sups = [
        sup("ok", "speech"),
        sup("ok", "speech", start=0.5),
        sup("missing-file", "gone"),
        sup("blank", "speech", text="  "),
        sup("no-text", "speech", text=None),
        sup("unknown-recording", "nope"),
        sup("past-end", "speech", start=1.5, duration=1.0),
        sup("one-of-two-channels", "stereo", channel=1),
        sup("both-channels", "stereo", channel=[0, 1]),
        sup("right-file", "two-files", channel=1),
        sup("both-files", "two-files", channel=[0, 1]),
        sup("speed", "fast", duration=0.5),
        sup("url", "web"),
        sup("pipe", "piped"),
    ]
    RecordingSet.from_recordings(recordings).to_file(tmp_path / "recs.jsonl")
    SupervisionSet.from_segments(sups).to_file(tmp_path / "sups.jsonl")
    utts, rejections = import_lhotse(tmp_path / "recs.jsonl", tmp_path / "sups.jsonl")
    assert {u.id: u.audio for u in utts} == {
        "ok": str(Path(speech).resolve()),
        "both-channels": stereo,
        "right-file": right,
    }
    assert {r.id: r.reason.split(":")[0] for r in rejections.items} == {
        "ok": "duplicate id",
        "missing-file": "missing audio file",
        "blank": "empty transcript",
        "no-text": "empty transcript",
        "unknown-recording": "missing recording",
        "past-end": "bad segment",
        "one-of-two-channels": "unsupported channel selection",
        "both-files": "unsupported channel selection",
        "speed": "unsupported transform",
        "url": "unsupported audio source",
        "pipe": "shell pipe not allowed",
    }
    assert all(r.file == str(tmp_path / "sups.jsonl") for r in rejections.items)
    # a command source runs as a dasr shell pipe when allowed, and reads the same audio as the file
    utts, _ = import_lhotse(tmp_path / "recs.jsonl", tmp_path / "sups.jsonl", allow_pipes=True)
    pipe = next(u for u in utts if u.id == "pipe")
    assert pipe.audio == f"cat {speech} |"
    np.testing.assert_array_equal(audio.load(pipe.audio, allow_pipes=True), audio.load(speech))


def test_cli_writes_rejections_and_refuses_wrong_manifests(speech_lhotse, tmp_path):
    rec_path, sup_path = speech_lhotse
    cuts = CutSet.from_manifests(load_manifest(rec_path), load_manifest(sup_path))
    first = next(c for c in cuts if c.recording_id == "train-000000")
    padded = first.pad(duration=first.duration + 1.0)  # a MixedCut: audio plus padding
    CutSet.from_cuts([padded, *(c for c in cuts if c is not first)]).to_file(tmp_path / "cuts.jsonl.gz")
    out = tmp_path / "data" / "train.jsonl"
    done = _dasr("corpus", "import-lhotse", str(tmp_path / "cuts.jsonl.gz"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rejected = [json.loads(line) for line in (out.parent / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"].split(":")[0] for r in rejected] == ["unsupported cut"]
    everything = {utt_id for utt_id, _, _ in _transcripts()} | {sid for sid, *_ in SEGMENTS}
    assert {u.id for u in read_manifest(out)} == everything - {"train-000000"}
    done = _dasr("corpus", "import-lhotse", str(tmp_path / "cuts.jsonl.gz"), "--out", str(out), "--strict")
    assert done.returncode != 0 and "--strict" in done.stderr
    done = _dasr("corpus", "import-lhotse", str(rec_path), "--out", str(out))
    assert done.returncode != 0 and "recordings only" in done.stderr
    done = _dasr("corpus", "import-lhotse", str(sup_path), str(rec_path), "--out", str(out))
    assert done.returncode != 0 and "expected a RecordingSet" in done.stderr


@pytest.fixture
def dasr_manifest(tmp_path, make_wav):
    """A dasr manifest: the speech files, two segments of one, and a stereo 22.05 kHz tone with extras."""
    utts = [
        Utterance(utt_id, str(SPEECH / f"{utt_id}.flac"), audio.probe(str(SPEECH / f"{utt_id}.flac")).duration, text)
        for utt_id, _, text in _transcripts()
    ]
    utts[0].speaker = "alice"
    utts += [
        Utterance(sid, str(SPEECH / f"{rec}.flac"), dur, "open the", "bob", 16000, start, start + dur)
        for sid, rec, start, dur in SEGMENTS
    ]
    stereo = make_wav("stereo.flac", 1.5, rate=22050, channels=2)
    utts.append(Utterance("stereo", stereo, 1.5, "play some music", "carol", 22050, extra={"voice": "en-us"}))
    write_manifest(tmp_path / "train.jsonl", utts)
    return tmp_path / "train.jsonl"


def test_export_loads_in_lhotse_and_reads_the_same_audio(dasr_manifest, tmp_path):
    out = tmp_path / "lhotse"
    done = _dasr("corpus", "export-lhotse", str(dasr_manifest), "--out", str(out))
    assert done.returncode == 0, done.stderr
    recordings = load_manifest(out / "recordings.jsonl.gz")
    supervisions = load_manifest(out / "supervisions.jsonl.gz")
    assert isinstance(recordings, RecordingSet) and isinstance(supervisions, SupervisionSet)
    validate_recordings_and_supervisions(recordings, supervisions, read_data=True)
    assert len(recordings) == 9  # the 8 speech files (train-000002 also holds both segments) and the tone
    for rec in recordings:
        theirs = Recording.from_file(rec.sources[0].source)  # lhotse's own reading of the file
        assert dataclasses.replace(rec, id=theirs.id) == theirs
    utts = {u.id: u for u in read_manifest(dasr_manifest)}
    by_id = {s.id: s for s in supervisions}
    assert set(by_id) == set(utts)
    assert (by_id["seg-2"].start, by_id["seg-2"].duration, by_id["seg-2"].recording_id) == (
        0.8,
        0.45,
        by_id["train-000002"].recording_id,
    )
    assert by_id["stereo"].channel == [0, 1] and by_id["stereo"].custom == {"voice": "en-us"}
    assert by_id["train-000000"].speaker == "alice" and by_id["train-000001"].speaker is None
    cuts = CutSet.from_manifests(recordings, supervisions).trim_to_supervisions(keep_overlapping=False)
    for cut in cuts:
        u = utts[cut.supervisions[0].id]
        expected = _lhotse_audio(cut)
        got = audio.load(u.audio, u.start, u.end, target_rate=u.sample_rate)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_round_trip_dasr_lhotse_dasr(dasr_manifest, tmp_path):
    utts = read_manifest(dasr_manifest)
    recordings, supervisions = export_lhotse(utts, tmp_path / "lhotse")
    again, rejections = import_lhotse(recordings, supervisions)
    assert not rejections
    for u in utts:
        u.audio = str(Path(u.audio).resolve())
    assert sorted(again, key=lambda u: u.id) == sorted(utts, key=lambda u: u.id)
    # and through lhotse's cuts: one per recording (a MultiCut for the stereo file)
    cuts = CutSet.from_manifests(load_manifest(recordings), load_manifest(supervisions))
    assert sorted(type(c).__name__ for c in cuts) == ["MonoCut"] * 8 + ["MultiCut"]
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    via_cuts, rejections = import_lhotse(tmp_path / "cuts.jsonl.gz")
    assert not rejections
    assert sorted(via_cuts, key=lambda u: u.id) == sorted(utts, key=lambda u: u.id)


def test_export_refuses_missing_audio_and_segments_past_the_file(tmp_path):
    speech = str(SPEECH / "train-000000.flac")
    with pytest.raises(DataError, match=r"cannot export utterance a: missing audio file"):
        export_lhotse([Utterance("a", str(tmp_path / "gone.flac"), 1.0, "call mom")], tmp_path / "out")
    with pytest.raises(DataError, match=r"lhotse refuses the export: Supervision late: exceeded the bounds"):
        export_lhotse([Utterance("late", speech, 1.0, "call mom", start=1.5, end=2.5)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
