import json
import subprocess
import sys

import numpy as np
import pytest

from dasr.data import audio
from dasr.data.manifest import Utterance, export_kaldi, import_kaldi, import_librispeech, read_manifest, write_manifest
from dasr.errors import DataError


def test_jsonl_round_trip(tmp_path):
    utts = [
        Utterance("a", "/x/a.wav", 1.5, "hello world", "s1"),
        Utterance("b", "/x/b.flac", 0.5, "naïve text", "s2", 8000, start=0.1, end=0.6, extra={"voice": "en-us"}),
    ]
    write_manifest(tmp_path / "m.jsonl", utts)
    assert read_manifest(tmp_path / "m.jsonl") == utts


def test_malformed_manifest_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "audio": "x", "duration": 1, "text": "hi"}\n{not json\n')
    with pytest.raises(DataError, match=r"m.jsonl:2"):
        read_manifest(path)


def _kaldi_dir(tmp_path, make_wav, wav_scp_extra="", text_extra=b""):
    d = tmp_path / "kaldi"
    d.mkdir()
    a = make_wav("wavs/a.wav", 1.0)
    b = make_wav("wavs/b.flac", 2.0, rate=22050, channels=2)
    (d / "wav.scp").write_text(f"a {a}\nb {b}\n{wav_scp_extra}")
    (d / "text").write_bytes(b"a call mom\nb set an alarm\n" + text_extra)
    (d / "utt2spk").write_text("a s1\nb s2\n")
    return d


def test_kaldi_import_export_round_trip(tmp_path, make_wav):
    d = _kaldi_dir(tmp_path, make_wav)
    utts, rejections = import_kaldi(d)
    assert not rejections
    assert [(u.id, u.text, u.speaker, u.sample_rate) for u in utts] == [
        ("a", "call mom", "s1", 16000),
        ("b", "set an alarm", "s2", 22050),
    ]
    assert utts[1].duration == pytest.approx(2.0, abs=1e-3)
    export_kaldi(utts, tmp_path / "out")
    again, rejections = import_kaldi(tmp_path / "out")
    assert not rejections and again == utts
    assert (tmp_path / "out" / "spk2utt").read_text() == "s1 a\ns2 b\n"


def test_kaldi_segments(tmp_path, make_wav):
    d = _kaldi_dir(tmp_path, make_wav)
    (d / "segments").write_text("a-1 a 0.0 0.4\na-2 a 0.5 1.0\nbad a 0.9 0.2\nlate a 0.5 9.0\n")
    (d / "text").write_text("a-1 call\na-2 mom\nbad x\nlate y\n")
    utts, rejections = import_kaldi(d)
    assert [(u.id, u.start, u.end, round(u.duration, 3)) for u in utts] == [
        ("a-1", 0.0, 0.4, 0.4),
        ("a-2", 0.5, 1.0, 0.5),
    ]
    assert sorted(r.id for r in rejections.items) == ["bad", "late"]
    samples = audio.load(utts[1].audio, utts[1].start, utts[1].end)
    assert len(samples) == 8000
    export_kaldi(utts, tmp_path / "out")
    again, _ = import_kaldi(tmp_path / "out")
    assert [(u.id, u.start, u.end) for u in again] == [("a-1", 0.0, 0.4), ("a-2", 0.5, 1.0)]


def test_kaldi_bad_entries_are_rejected_with_reasons(tmp_path, make_wav):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    empty = tmp_path / "empty.wav"
    audio.write(empty, np.zeros(0, np.float32))
    low = make_wav("low.wav", 1.0, rate=4000)
    d = _kaldi_dir(
        tmp_path,
        make_wav,
        wav_scp_extra=f"c {tmp_path}/missing.wav\nd {corrupt}\ne {empty}\nf {low}\ng sox {low} -t wav - |\nh {low}\n",
        text_extra=b"c one\nd two\ne three\nf four\ng five\nh \na call again\ni \xff\xfe bad\n",
    )
    utts, rejections = import_kaldi(d)
    assert [u.id for u in utts] == ["a", "b"]
    reasons = {r.id: r.reason for r in rejections.items}
    assert reasons["c"].startswith("missing audio file")
    assert reasons["d"].startswith("corrupt audio")
    assert reasons["e"].startswith(("zero-length audio", "corrupt audio"))
    assert reasons["f"].startswith("unexpected sample rate")
    assert reasons["g"].startswith("shell pipe not allowed")
    assert reasons["h"].startswith("empty transcript")
    assert "duplicate id" in reasons["a"]
    non_utf8 = [r for r in rejections.items if r.id is None]
    assert non_utf8 and non_utf8[0].reason.startswith("unreadable transcript") and non_utf8[0].line == 10
    assert all(r.file.endswith(("wav.scp", "text")) for r in rejections.items)


def test_kaldi_pipe_runs_only_when_allowed(tmp_path, make_wav):
    src = make_wav("src.wav", 1.0)
    marker = tmp_path / "ran"
    d = _kaldi_dir(tmp_path, make_wav, wav_scp_extra=f"p touch {marker}; cat {src} |\n", text_extra=b"p piped\n")
    utts, rejections = import_kaldi(d)
    assert "p" not in [u.id for u in utts] and not marker.exists()
    utts, rejections = import_kaldi(d, allow_pipes=True)
    assert "p" in [u.id for u in utts] and marker.exists()
    piped = next(u for u in utts if u.id == "p")
    assert len(audio.load(piped.audio, allow_pipes=True)) == 16000


def test_librispeech_import(tmp_path, make_wav):
    root = tmp_path / "LibriSpeech" / "dev"
    for spk, chap in (("19", "198"), ("26", "495")):
        d = root / spk / chap
        lines = []
        for k in range(2):
            uid = f"{spk}-{chap}-{k:04d}"
            make_wav(f"LibriSpeech/dev/{spk}/{chap}/{uid}.flac", 0.5 + k)
            lines.append(f"{uid} SOME TEXT {k}")
        lines.append(f"{spk}-{chap}-0009 NO AUDIO")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    utts, rejections = import_librispeech(tmp_path / "LibriSpeech")
    assert [u.id for u in utts] == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    assert utts[1].speaker == "19" and utts[1].duration == pytest.approx(1.5, abs=1e-3)
    assert utts[0].text == "SOME TEXT 0"
    assert sorted(r.id for r in rejections.items) == ["19-198-0009", "26-495-0009"]


def _dasr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dasr", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_import_writes_rejections_and_fails_only_when_nothing_usable(tmp_path, make_wav):
    d = _kaldi_dir(tmp_path, make_wav, wav_scp_extra=f"c {tmp_path}/missing.wav\n", text_extra=b"c one\n")
    out = tmp_path / "m" / "train.jsonl"
    done = _dasr("corpus", "import-kaldi", str(d), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(read_manifest(out)) == 2
    rejected = [json.loads(line) for line in open(out.parent / "rejected.jsonl")]
    assert rejected[0]["id"] == "c" and rejected[0]["reason"].startswith("missing audio file")
    strict = _dasr("corpus", "import-kaldi", str(d), "--out", str(out), "--strict")
    assert strict.returncode != 0 and "--strict" in strict.stderr and "Traceback" not in strict.stderr
    (d / "wav.scp").write_text(f"a {tmp_path}/nothing.wav\nb {tmp_path}/nothing2.wav\n")
    failed = _dasr("corpus", "import-kaldi", str(d), "--out", str(out))
    assert failed.returncode != 0 and "no usable utterances" in failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) <= 2
