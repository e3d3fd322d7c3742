"""`dasr corpus prepare uqm`/`klettres` on small archives built like Debian's uqm-voice, uqm-content and
klettres-data, from the committed speech fixture (tests/data/speech)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import make_speech_data_dir, train_tiny

from dasr.cli import main
from dasr.data import audio, cuts
from dasr.data.features import compute_features
from dasr.data.klettres import prepare_klettres
from dasr.data.manifest import read_manifest
from dasr.data.uqm import MIN_ALIGNMENT_SCORE, Alignment, prepare_uqm
from dasr.data.uqm_text import clip_texts, read_blocks, read_timestamps, spoken
from dasr.decode.recognizer import Recognizer
from dasr.errors import DataError

SPEECH = Path(__file__).parent / "data" / "speech"
RATE = 11025
GAP_S, LEAD_S = 0.6, 0.3
MAX_S = 4.0


def _sentence(i: int) -> np.ndarray:
    samples, rate = soundfile.read(SPEECH / f"train-{i:06d}.flac", dtype="float32")
    return audio.resample(samples, rate, RATE)


def _clip(sentences: list[int]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Sentences with quiet gaps (faint noise) between them; returns the audio and the gaps (s)."""
    rng = np.random.default_rng(0)
    parts, gaps, t = [np.zeros(int(LEAD_S * RATE))], [], LEAD_S
    for k, i in enumerate(sentences):
        if k:
            parts.append(np.zeros(int(GAP_S * RATE)))
            gaps.append((t, t + GAP_S))
            t += GAP_S
        speech = _sentence(i)
        parts.append(speech)
        t += len(speech) / RATE
    parts.append(np.zeros(int(LEAD_S * RATE)))
    samples = np.concatenate(parts)
    return (samples + rng.normal(0, 1e-4, len(samples))).astype(np.float32), gaps


# The page durations of arilou-000 are off by +0.3 s, as the real ones often are.
ARILOU_TXT = """#(INIT_HELLO)\tarilou-000.ogg
Set an *alarm* for seven.
Call `mom'.
Open the garage door.
Send a message to Anna.

#(confused_by_hello)
You sound as if you know me.

#(SECOND)\tarilou-001.ogg
How is the weather today?
I have 2 ships.
Remind me to buy milk.
(sigh)

#(OUT_TAKES)\tarilou-099.ogg
Not in the voice package.
"""
STARBASE_TXT = (
    "#(NORMAL_HELLO_A0) starbase-000.ogg\r\nOpen the garage\r\n#(NORMAL_HELLO_A1)\r\n door.\r\n\r\n"
    "#(BYE)\tstarbase-001.ogg\r\nCall mom.\r\n"
)
SYREEN_CONTENT_TXT = "#(WELCOME0)\tsyreen-000.ogg\nSomething else entirely.\n\n#(HELLO)\tsyreen-001.ogg\nStop it.\n"
SYREEN_VOICE_TXT = (
    "#(WELCOME0)\tsyreen-000.ogg\nSend a message to \n#(WELCOME1)\nAnna.\n\n"
    "#(HELLO)\tsyreen-001.ogg\nHow is the weather today?\n"
)
ONE_LINE = {
    "vux": (5, "Remind me to buy milk."),
    "chmmr": (6, "What time is it in Paris?"),
    "commander": (7, "Stop the timer."),
}


def _ogg(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


def _durations(sentences: list[int], offset_s: float) -> str:
    """``.ts`` page durations: each page's speech plus the gap after it, shifted by ``offset_s``."""
    ms, t = [], LEAD_S
    for i in sentences[:-1]:
        t += len(_sentence(i)) / RATE + GAP_S
        ms.append(int(round((t + offset_s) * 1000)) - sum(ms))
    return ",".join(map(str, ms))


@pytest.fixture(scope="module")
def uqm_source(tmp_path_factory):
    """A dir holding addons/uqm-0.8.0-voice.uqm and packages/uqm-0.8.0-content.uqm; and the gaps of arilou-000."""
    root = tmp_path_factory.mktemp("uqm-src")
    arilou0, gaps = _clip([0, 1, 2, 3])
    arilou1, _ = _clip([4, 3, 5, 0])
    clips = {
        "arilou": {"arilou-000.ogg": arilou0, "arilou-001.ogg": arilou1, "arilou-002.ogg": _clip([1])[0]},
        "starbase": {"starbase-000.ogg": _clip([2])[0], "starbase-001.ogg": _clip([1])[0]},
        "syreen": {"syreen-000.ogg": _clip([3])[0], "syreen-001.ogg": _clip([4])[0]},
    }
    texts = {"arilou": ARILOU_TXT, "starbase": STARBASE_TXT, "syreen": SYREEN_CONTENT_TXT}
    ts = {
        "arilou": f"#(INIT_HELLO) {_durations([0, 1, 2, 3], 0.3)}\n#(confused_by_hello) \n"
        f"#(SECOND) {_durations([4, 3, 5, 0], -0.2)}\n",
        "starbase": "#(NORMAL_HELLO_A0) \n#(NORMAL_HELLO_A1) \n#(BYE) \n",
        "syreen": "#(WELCOME0) \n#(HELLO) \n",
    }
    for name, (i, line) in ONE_LINE.items():
        clips[name] = {f"{name}-000.ogg": _clip([i])[0]}
        texts[name] = f"#(ONLY)\t{name}-000.ogg\n{line}\n"
        ts[name] = "#(ONLY) \n"
    _write_source(root, clips, texts, ts, {"syreen": SYREEN_VOICE_TXT})
    return root, gaps


def _write_source(root: Path, clips: dict, texts: dict, ts: dict, voice_texts: dict | None = None) -> None:
    """ROOT/addons/uqm-0.8.0-voice.uqm and ROOT/packages/uqm-0.8.0-content.uqm, laid out as Debian's are."""
    (root / "addons").mkdir(parents=True, exist_ok=True)
    (root / "packages").mkdir(exist_ok=True)
    with zipfile.ZipFile(root / "addons" / "uqm-0.8.0-voice.uqm", "w") as voice:
        for name, files in clips.items():
            for file, samples in files.items():
                voice.writestr(f"3dovoice/{name}/{file}", _ogg(samples))
            voice.writestr(f"3dovoice/{name}/{name}.ts", ts[name])
        for name, text in (voice_texts or {}).items():
            voice.writestr(f"3dovoice/{name}/{name}.txt", text)
    with zipfile.ZipFile(root / "packages" / "uqm-0.8.0-content.uqm", "w") as content:
        for name, text in texts.items():
            content.writestr(f"base/comm/{name}/{name}.txt", text)
            content.writestr(f"base/comm/{name}/{name}-000.png", b"")


@pytest.fixture(scope="module")
def prepared(uqm_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("uqm-data")
    summary = prepare_uqm(out, source=uqm_source[0], jobs=1, max_s=MAX_S)
    return out, summary


def test_blocks_continuations_and_pages():
    blocks = read_blocks(STARBASE_TXT)
    assert [(b.id, b.clip) for b in blocks] == [
        ("NORMAL_HELLO_A0", "starbase-000.ogg"),
        ("NORMAL_HELLO_A1", ""),
        ("BYE", "starbase-001.ogg"),
    ]
    texts = clip_texts("starbase", blocks)
    assert [t.pages for t in texts] == [["Open the garage door."], ["Call mom."]]
    assert texts[0].ids == ["NORMAL_HELLO_A0", "NORMAL_HELLO_A1"] and not texts[0].slot_pages  # a silent slot
    syreen = clip_texts("syreen", read_blocks(SYREEN_VOICE_TXT))
    assert syreen[0].pages == ["Send a message to Anna."] and syreen[0].slot_pages == {0}
    arilou = clip_texts("arilou", read_blocks(ARILOU_TXT))
    assert [len(t.pages) for t in arilou] == [4, 4, 1]  # the player's line (lower case) is no continuation
    assert read_timestamps("#(A) 1500,2300\r\n#(B) \n") == {"A": [1500, 2300], "B": []}


@pytest.mark.parametrize(
    ("page", "text", "reason"),
    [
        ("Set an *alarm* for seven.", "set an alarm for seven", None),
        ("We didn't `run out' on the Ur-Quan.", "we didn't run out on the ur quan", None),
        ("I have 2 ships.", "", "digits"),
        ("Hello (sigh) there.", "", "parenthesised aside"),
        ("-<GO KILL YOURSELF!>-", "", "telepathic command"),
        ("How sad. *Sigh*", "", "stand-alone sound effect"),
        ("It costs 5%.", "", "digits"),
        ("And/or.", "", "symbol"),
        ("...", "", "no words"),
    ],
)
def test_spoken_text(page, text, reason):
    assert spoken(page) == (text, reason)


def test_plan_merges_pages_without_a_pause_and_drops_uncertain_ones():
    segments, dropped = cuts.plan(10.0, [2.0, None, 6.0, 8.0], [True, True, True, False, True], max_s=5.0)
    assert segments == [cuts.Segment(0, 0, 0.0, 2.0), cuts.Segment(1, 2, 2.0, 6.0), cuts.Segment(4, 4, 8.0, 10.0)]
    assert dropped == [(cuts.Segment(3, 3, 6.0, 8.0), "uncertain text")]
    segments, dropped = cuts.plan(12.0, [None], [True, True], max_s=5.0)
    assert segments == [] and dropped == [(cuts.Segment(0, 1, 0.0, 12.0), "too long")]


def test_splits_speakers_and_texts(prepared):
    out, summary = prepared
    manifests = {split: read_manifest(out / f"{split}.jsonl") for split in ("train", "dev", "test")}
    speakers = {split: {u.speaker for u in utts} for split, utts in manifests.items()}
    assert speakers == {"train": {"arilou", "chmmr"}, "dev": {"vux"}, "test": {"syreen", "commander"}}
    texts = {u.id: u.text for utts in manifests.values() for u in utts}
    assert texts["starbase-000"] == "open the garage door"  # continuation joined, the name slot silent
    assert texts["syreen-001"] == "how is the weather today"  # the voice add-on's text wins
    assert texts["vux-000"] == "remind me to buy milk"
    chmmr = next(u for u in manifests["train"] if u.speaker == "chmmr")
    assert chmmr.extra["processed"] is True
    assert {u.speaker for u in manifests["test"] if u.extra["character"] == "starbase"} == {"commander"}
    for utts in manifests.values():
        for u in utts:
            info = audio.probe(u.audio)
            assert info.sample_rate == 16000 and abs(info.duration - u.duration) < 0.01 and u.duration <= MAX_S
    assert summary["clips"] == 10 and summary["clips_kept"] == 8


def test_long_clip_cut_in_the_pauses_with_exact_page_texts(prepared, uqm_source):
    out, _ = prepared
    _, gaps = uqm_source
    pieces = sorted(
        (u for u in read_manifest(out / "train.jsonl") if u.extra["clip"] == "arilou-000.ogg"), key=lambda u: u.id
    )
    assert len(pieces) >= 2
    assert (
        " ".join(u.text for u in pieces)
        == "set an alarm for seven call mom open the garage door send a message to anna"
    )
    cuts_s = [u.extra["clip_start"] for u in pieces[1:]]
    assert all(any(a <= t <= b for a, b in gaps) for t in cuts_s), (cuts_s, gaps)
    lines = ["set an alarm for seven", "call mom", "open the garage door", "send a message to anna"]
    for u in pieces:
        first, last = u.extra["pages"]
        assert u.text == " ".join(lines[first - 1 : last])


@pytest.fixture(scope="module")
def first_model(tmp_path_factory):
    """The tiny model trained on the 8 fixture sentences (it reads most of them back): a first model to align with."""
    root = tmp_path_factory.mktemp("first-model")
    train_tiny(make_speech_data_dir(root), root / "exp", steps=150)
    return root / "exp"


def test_pages_too_long_are_cut_at_words_by_a_first_models_alignment(first_model, tmp_path):
    """A one-page clip longer than max_s, with a pause between two words: rejected as too long, unless
    --align-with cuts it. The tiny model aligns poorly (it reads back only the sentences it was trained
    on, as they were), so its pieces score below the real threshold and are rejected; with the
    threshold lowered they are kept, and the cut lies in the pause, with every word on one side."""
    words = "send a message to anna"
    sentence = _sentence(3)
    at = int(1.3 * RATE)
    clip = np.concatenate([sentence[:at], np.zeros(int(0.3 * RATE), np.float32), sentence[at:]])
    _write_source(
        tmp_path / "src",
        {"spathi": {"spathi-000.ogg": clip}},
        {"spathi": f"#(HELLO)\tspathi-000.ogg\n{words}\n"},
        {"spathi": "#(HELLO) \n"},
    )
    max_s = 1.8

    def prepare(name: str, alignment: Alignment | None = None) -> tuple[dict, list, list[dict]]:
        summary = prepare_uqm(tmp_path / name, source=tmp_path / "src", jobs=1, max_s=max_s, alignment=alignment)
        log = tmp_path / name / "rejected.jsonl"
        rejected = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return summary, read_manifest(tmp_path / name / "train.jsonl"), rejected

    summary, kept, _ = prepare("plain")
    assert summary["rejected"] == {"too long": 1} and kept == []
    summary, kept, rejected = prepare("aligned", alignment=Alignment(str(first_model), Recognizer))
    assert kept == [] and summary["rejected"] == {"uncertain alignment": len(rejected)} and len(rejected) >= 2
    assert all(f"below {MIN_ALIGNMENT_SCORE:g}" in r["reason"] for r in rejected)

    any_score = Alignment(str(first_model), Recognizer, min_score=-1000.0)
    summary, kept, rejected = prepare("any-score", alignment=any_score)
    pieces = sorted(kept, key=lambda u: u.extra["clip_start"])
    assert rejected == [] and len(pieces) == 2 and " ".join(u.text for u in pieces) == words
    assert pieces[0].extra["clip_end"] == pieces[1].extra["clip_start"]
    assert all(u.duration <= max_s and u.extra["alignment_score"] < MIN_ALIGNMENT_SCORE for u in pieces)
    ogg, _ = soundfile.read(io.BytesIO(_ogg(clip)), dtype="float32")
    assert any(a < pieces[1].extra["clip_start"] < b for a, b in cuts.pauses(ogg, RATE))


def test_rejections_name_each_dropped_clip_and_page(prepared):
    out, summary = prepared
    records = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = {(r["id"], r["reason"].split(",")[0]) for r in records}
    assert ("arilou-001.ogg", "uncertain text: digits") in reasons
    assert ("arilou-001.ogg", "uncertain text: parenthesised aside") in reasons
    assert ("syreen-000.ogg", "uncertain text: name inserted by the game") in reasons
    assert any(r["id"] == "arilou-002.ogg" and r["reason"].startswith("no transcript") for r in records)
    assert any(r["id"] == "arilou:OUT_TAKES" and r["reason"].startswith("text without audio") for r in records)
    assert summary["rejected"]["uncertain text"] == 3
    kept = [u.text for u in read_manifest(out / "train.jsonl") if u.extra["clip"] == "arilou-001.ogg"]
    assert kept == ["how is the weather today", "remind me to buy milk"]


def test_features_run_on_the_prepared_dir(prepared):
    out, _ = prepared
    summary = compute_features(out, jobs=1)
    assert summary["train"] >= 4 and summary["dev"] == 1 and summary["test"] == 4


def test_drop_processed_and_missing_archives(uqm_source, tmp_path):
    summary = prepare_uqm(tmp_path / "d", source=uqm_source[0], jobs=1, max_s=MAX_S, drop_processed=True)
    assert summary["rejected"]["processed voice"] == 1
    assert "chmmr" not in summary["splits"]["train"]["speakers"]
    with pytest.raises(DataError, match="no uqm-voice and uqm-content archive"):
        prepare_uqm(tmp_path / "e", source=tmp_path / "d" / "audio", jobs=1)


def test_klettres_is_test_only(tmp_path):
    source = tmp_path / "klettres"
    for language, names in {"en": ["alpha/A", "syllab/dog", "syllab/ch"], "en_GB": ["alpha/b"]}.items():
        for k, name in enumerate(names):
            (source / language / name).parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(source / language / f"{name}.ogg", _sentence(k), RATE, format="OGG", subtype="VORBIS")
    summary = prepare_klettres(tmp_path / "out", source=tmp_path)
    utts = read_manifest(tmp_path / "out" / "test.jsonl")
    assert sorted(u.text for u in utts) == ["a", "b", "dog"] and summary["rejected"] == 1
    assert {u.speaker for u in utts} == {"klettres-en", "klettres-en_GB"}
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_report_counts_hours_per_speaker_and_engine(prepared):
    from dasr.data.report import data_report

    out, _ = prepared
    text = data_report(out)
    report = json.loads((out / "report.json").read_text())
    train = read_manifest(out / "train.jsonl")
    arilou = sum(u.duration for u in train if u.speaker == "arilou") / 3600
    assert report["hours_per_speaker"]["train"]["arilou"] == pytest.approx(arilou, abs=1e-4)
    assert report["hours_per_engine"]["test"] == {
        "recorded": pytest.approx(report["splits"]["test"]["hours"], abs=1e-4)
    }
    assert "train hours per speaker: 2 speakers" in text


def test_recipe_real_trains_on_both_and_continues_where_it_stopped(prepared, tmp_path, capsys):
    """`dasr recipe real` on the fixture: uqm train + flite/festival synthesis of its text, a tiny model;
    a second run finds every step done and only scores again."""
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "uqm").symlink_to(prepared[0])
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("model: tiny\nepochs: 2\nbatch_frames: 100000\noptimizer: adamw\nlr: 0.01\nwarmup_steps: 2\n")
    args = ["recipe", "real", "--out", str(tmp_path / "out"), "--corpora", str(corpora), "--config", str(recipe)]
    args += ["--voices", "7", "--no-variety", "--synthetic-hours", "0.004"]
    assert main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    real = read_manifest(prepared[0] / "train.jsonl")
    synthetic = read_manifest(corpora / "synth-plain-7" / "train.jsonl")
    assert results["train_hours_real"] == pytest.approx(sum(u.duration for u in real) / 3600)
    assert results["train_hours_synthetic"] == pytest.approx(sum(u.duration for u in synthetic) / 3600)
    assert {u.speaker.partition(":")[0] for u in synthetic} <= {"flite", "festival"}
    assert len(read_manifest(tmp_path / "out" / "data" / "train.jsonl")) == len(real) + len(synthetic)
    assert [e["epoch"] for e in results["dev_curve"]] == [0, 1]
    test_words = sum(len(u.text.split()) for u in read_manifest(prepared[0] / "test.jsonl"))
    assert results["natural_voices"] == 7 and results["test_words"] == test_words > 0  # the held-out speakers
    first_steps = results["steps_s"]
    assert set(first_steps) == {"synth_s", "data_s", "train_s", "score_s"}  # uqm was there already
    assert main(args) == 0  # everything is there: the scores are read again, nothing is made
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {k: again["steps_s"][k] for k in ("synth_s", "data_s", "train_s")} == {
        k: first_steps[k] for k in ("synth_s", "data_s", "train_s")
    }
    rescoring_s = again["steps_s"]["score_s"] - first_steps["score_s"]
    assert 0 <= rescoring_s < first_steps["score_s"] / 2  # the decodes were read, not made again
    assert {k: v for k, v in again.items() if k != "steps_s"} == {k: v for k, v in results.items() if k != "steps_s"}
    assert "held-out speakers" in capsys.readouterr().out
