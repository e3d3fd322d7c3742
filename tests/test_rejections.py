"""Rejections survive every stage: `dasr corpus import-kaldi` then `dasr features` keep each other's records."""

import json
import subprocess
import sys

from dasr.data.manifest import RejectionLog


def _dasr(*args):
    return subprocess.run([sys.executable, "-m", "dasr", *map(str, args)], capture_output=True, text=True, timeout=120)


def _records(data):
    return [json.loads(line) for line in (data / "rejected.jsonl").read_text().splitlines()]


def _kaldi_dir_with_five_bad_entries(tmp_path, make_wav):
    """Three good utterances, one that only the features' CTC length check rejects, and five bad entries."""
    d = tmp_path / "kaldi"
    d.mkdir()
    good = [make_wav(f"wavs/{k}.wav", 1.0, seed=k) for k in range(3)]
    short = make_wav("wavs/short.wav", 0.1)
    corrupt = tmp_path / "wavs" / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (d / "wav.scp").write_text(
        "".join(f"g{k} {path}\n" for k, path in enumerate(good))
        + f"short {short}\n"
        + f"missing {tmp_path}/nowhere.wav\n"  # 1: missing file
        + f"empty {good[0]}\n"  # 2: empty transcript
        + f"corrupt {corrupt}\n"  # 3: corrupt audio
        + f"pipe sox {good[0]} -t wav - |\n"  # 4: shell pipe (not allowed)
        + f"g0 {good[1]}\n"  # 5: duplicate id
    )
    (d / "text").write_text(
        "g0 call mom\ng1 set an alarm\ng2 play some music\nshort turn on all the lights in the kitchen please\n"
        "missing one\nempty \ncorrupt three\npipe four\n"
    )
    return d


def test_import_then_features_keeps_every_stage_record(tmp_path, make_wav):
    kaldi = _kaldi_dir_with_five_bad_entries(tmp_path, make_wav)
    data = tmp_path / "data"
    imported = _dasr("corpus", "import-kaldi", kaldi, "--out", data / "train.jsonl")
    assert imported.returncode == 0, imported.stderr
    after_import = _records(data)
    assert {r["id"] for r in after_import} == {"corrupt", "empty", "g0", "missing", "pipe"}
    assert len(after_import) == 6  # the empty transcript is reported twice: empty line, then no text for its audio
    assert {(r["stage"], r["manifest"]) for r in after_import} == {("import", "train.jsonl")}

    for _ in range(2):  # a rerun replaces its own records, never the import's, never doubles
        features = _dasr("features", data, "--jobs", "1")
        assert features.returncode == 0, features.stderr
        records = _records(data)
        assert records[:6] == after_import
        assert [(r["stage"], r["manifest"], r["id"]) for r in records[6:]] == [("features", "train.jsonl", "short")]
        assert records[6]["reason"].startswith("too short for transcript")
        assert "rejected entries: 7" in features.stdout

    reimported = _dasr("corpus", "import-kaldi", kaldi, "--out", data / "train.jsonl")
    assert reimported.returncode == 0, reimported.stderr
    assert sorted((r["stage"], r["id"]) for r in _records(data)) == sorted(
        [("import", r["id"]) for r in after_import] + [("features", "short")]
    )


def test_a_stage_replaces_only_its_own_records_of_the_same_manifest(tmp_path):
    path = tmp_path / "rejected.jsonl"
    path.write_text('{"file": "old.scp", "line": 1, "id": "x", "reason": "from a version without stages"}\nnot json\n')
    train, dev = RejectionLog(), RejectionLog()
    train.add("train.jsonl", 3, "a", "corrupt audio: junk")
    dev.add("dev.jsonl", 1, "b", "missing audio file")
    train.write(path, "features", "train.jsonl")
    dev.write(path, "features", "dev.jsonl")
    RejectionLog().write(path, "features", "train.jsonl")  # a clean rerun of train clears train's records
    lines = path.read_text().splitlines()
    assert lines[:2] == [
        '{"file": "old.scp", "line": 1, "id": "x", "reason": "from a version without stages"}',
        "not json",
    ]
    assert [json.loads(line)["id"] for line in lines[2:]] == ["b"]
    RejectionLog().write(tmp_path / "none.jsonl", "import", "train.jsonl")
    assert not (tmp_path / "none.jsonl").exists()
