"""The demo corpus: sentence grammar, voice grid, and real espeak-ng, flite and festival synthesis."""

from __future__ import annotations

import shutil

import pytest
import soundfile

from dasr.data import synth, tts
from dasr.data.manifest import read_manifest
from dasr.data.sentences import MAX_WORDS, MIN_WORDS, generate_sentences, vocabulary
from dasr.data.text import normalize
from dasr.errors import DasrError

SPLITS = ("train", "dev", "test")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
ALL_ENGINES = ("espeak", "flite", "festival")
needs_all = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("espeak-ng", "flite", "festival", "sox")),
    reason="espeak-ng, flite, festival or sox is not installed",
)


def test_sentences_are_distinct_normalised_and_deterministic():
    sentences = generate_sentences(2000, seed=0)
    assert len(sentences) == len(set(sentences)) == 2000
    assert all(normalize(s) == s for s in sentences)
    assert all(MIN_WORDS <= len(s.split()) <= MAX_WORDS for s in sentences)
    assert generate_sentences(2000, seed=0) == sentences
    assert generate_sentences(2000, seed=1) != sentences


def test_vocabulary_has_over_a_thousand_words_and_covers_the_sentences():
    words = {w for s in generate_sentences(5000, seed=0) for w in s.split()}
    assert len(words) >= 1000
    assert words <= vocabulary()


def test_voice_grid_holds_out_voices_but_not_accents_or_variants():
    for seed in (0, 5):
        by_split = {split: set(synth.voices(split, seed)) for split in SPLITS}
        assert not by_split["train"] & by_split["test"]
        assert not by_split["train"] & by_split["dev"]
        assert not by_split["dev"] & by_split["test"]
        assert sum(map(len, by_split.values())) == len(synth.ACCENTS) * len(synth.VARIANTS)

        def accents_and_variants(names):
            return {part for n in names for part in n.split("+")}

        assert accents_and_variants(by_split["test"]) <= accents_and_variants(by_split["train"])


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(DasrError, match="make demo"):
        synth.synthesize_corpus(tmp_path, hours=0.01)
    with pytest.raises(DasrError, match="apt-get install festival"):
        synth.synthesize_corpus(tmp_path, hours=0.01, engines=("festival",))
    with pytest.raises(DasrError, match="unknown speech engine 'sapi'"):
        synth.synthesize_corpus(tmp_path, hours=0.01, engines=("sapi",))


def _corpus(out_dir):
    return {split: read_manifest(out_dir / f"{split}.jsonl") for split in SPLITS}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("a", "b", "c")}
    summary = synth.synthesize_corpus(dirs["a"], hours=0.015, seed=0, jobs=2)
    synth.synthesize_corpus(dirs["b"], hours=0.015, seed=0, jobs=1)
    synth.synthesize_corpus(dirs["c"], hours=0.015, seed=1, jobs=2)
    return dirs, summary


@needs_espeak
def test_same_seed_gives_same_manifests_and_audio_bytes(corpora):
    dirs, _ = corpora
    a, b = _corpus(dirs["a"]), _corpus(dirs["b"])
    for split in SPLITS:
        assert len(a[split]) == len(b[split]) > 0
        for ua, ub in zip(a[split], b[split]):
            assert ua.audio.replace(str(dirs["a"]), str(dirs["b"])) == ub.audio
            ua.audio = ub.audio
            assert ua == ub
            with open(ua.audio.replace(str(dirs["b"]), str(dirs["a"])), "rb") as fa, open(ub.audio, "rb") as fb:
                assert fa.read() == fb.read()


@needs_espeak
def test_different_seed_gives_different_corpus(corpora):
    dirs, _ = corpora
    a, c = _corpus(dirs["a"]), _corpus(dirs["c"])
    assert [u.text for u in a["train"]] != [u.text for u in c["train"]]
    assert [u.speaker for u in a["train"]] != [u.speaker for u in c["train"]]


@needs_espeak
def test_test_and_dev_voices_and_sentences_never_occur_in_train(corpora):
    dirs, _ = corpora
    corpus = _corpus(dirs["a"])
    train = corpus["train"]
    for split in ("dev", "test"):
        held_out = corpus[split]
        assert not {u.speaker for u in held_out} & {u.speaker for u in train}
        assert not {u.text for u in held_out} & {u.text for u in train}
        assert not {u.extra["sentence"] for u in held_out} & {u.extra["sentence"] for u in train}
    assert not {u.text for u in corpus["dev"]} & {u.text for u in corpus["test"]}


@needs_espeak
def test_manifests_match_the_audio_files(corpora):
    dirs, summary = corpora
    corpus = _corpus(dirs["a"])
    ids = [u.id for split in SPLITS for u in corpus[split]]
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        assert [u.id for u in corpus[split]] == sorted(u.id for u in corpus[split])
        assert summary["splits"][split]["utterances"] == len(corpus[split])
        for u in corpus[split]:
            info = soundfile.info(u.audio)
            assert (info.samplerate, info.channels) == (16000, 1)
            assert u.duration == pytest.approx(info.frames / 16000, abs=1e-9)
            assert u.id.startswith(split + "-") and u.audio.endswith(f"audio/{split}/{u.id}.flac")
            assert normalize(u.text) == u.text
            assert u.speaker == u.extra["voice"]
            assert {"voice", "sentence", "snr_db", "speed"} <= set(u.extra)
            assert 0.9 <= u.extra["speed"] <= 1.1
    assert summary["hours"] == pytest.approx(0.015, rel=0.3)
    assert summary["x_real_time"] > 0


@needs_espeak
def test_text_file_supplies_the_sentences(tmp_path):
    lines = [
        "Turn ON the lights!",
        "",
        "  ",
        "call mom",
        "Call mom.",
        "play some jazz",
        "what time is it",
        "open the door",
        "it's ten o'clock",
    ]
    text_file = tmp_path / "sentences.txt"
    text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    synth.synthesize_corpus(tmp_path / "out", hours=0.004, seed=0, jobs=2, text_file=text_file)
    corpus = _corpus(tmp_path / "out")
    expected = {normalize(line) for line in lines if line.strip()}
    spoken = {split: {u.text for u in corpus[split]} for split in SPLITS}
    assert set().union(*spoken.values()) <= expected
    assert all(spoken.values())
    assert not spoken["test"] & spoken["train"]


@needs_espeak
def test_text_file_with_too_few_sentences_is_rejected(tmp_path):
    text_file = tmp_path / "one.txt"
    text_file.write_text("hello there\n\n", encoding="utf-8")
    with pytest.raises(DasrError, match="1 distinct sentences"):
        synth.synthesize_corpus(tmp_path / "out", hours=0.01, text_file=text_file)


def test_natural_voice_grid_holds_out_variants_but_hears_every_voice_and_shift():
    for seed in (0, 3):
        by_split = {split: set(synth.voices(split, seed, tuple(tts.ENGINES))) for split in SPLITS}
        assert not by_split["train"] & (by_split["test"] | by_split["dev"])
        assert not by_split["dev"] & by_split["test"]
        natural = {split: {v for v in vs if ":" in v} for split, vs in by_split.items()}
        assert sum(map(len, natural.values())) == len(synth.NATURAL) * len(synth.NATURAL_SHIFTS)
        for split in ("dev", "test"):
            # each natural voice once per held-out split, with a shift it is never heard with in train
            bases = [synth._parse_voice(v)[0] for v in natural[split]]
            assert sorted(bases) == sorted(synth.NATURAL)
            train_pairs = {synth._parse_voice(v) for v in natural["train"]}
            assert not {synth._parse_voice(v) for v in natural[split]} & train_pairs
        assert {synth._parse_voice(v)[1] for v in natural["train"]} == set(synth.NATURAL_SHIFTS)
    assert synth.voices("train", 0, ("flite",)) == [v for v in synth.voices("train", 0, ALL_ENGINES) if "flite:" in v]


@pytest.fixture(scope="module")
def natural_corpora(tmp_path_factory):
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("n1", "n2")}
    kw = dict(hours=0.01, seed=4, engines=ALL_ENGINES, augment_audio=True, train_text=["ten of clubs", "five five"])
    summary = synth.synthesize_corpus(dirs["n1"], jobs=2, **kw)
    synth.synthesize_corpus(dirs["n2"], jobs=1, **kw)
    return dirs, summary


@needs_all
def test_all_engines_with_augmentation_are_deterministic(natural_corpora):
    dirs, summary = natural_corpora
    a, b = _corpus(dirs["n1"]), _corpus(dirs["n2"])
    assert summary["engines"] == list(ALL_ENGINES) and summary["augment"]
    for split in SPLITS:
        assert len(a[split]) == len(b[split]) > 0
        for ua, ub in zip(a[split], b[split]):
            assert (ua.text, ua.speaker, ua.extra) == (ub.text, ub.speaker, ub.extra)
            assert open(ua.audio, "rb").read() == open(ub.audio, "rb").read()


@needs_all
def test_every_engine_speaks_and_augmentation_is_recorded_on_train_only(natural_corpora):
    dirs, _ = natural_corpora
    corpus = _corpus(dirs["n1"])
    train = corpus["train"]
    assert {u.extra["engine"] for u in train} == set(ALL_ENGINES)
    for u in train:
        info = soundfile.info(u.audio)
        assert u.duration == pytest.approx(info.frames / 16000, abs=1e-9) and u.duration > 0.3
        assert {"semitones", "tempo", "room", "noise", "snr_db", "channel"} <= set(u.extra)
        assert 0.85 <= u.extra["tempo"] <= 1.15
        shift = synth._parse_voice(u.speaker)[1]
        assert abs(u.extra["semitones"] - shift) <= 3.0
    assert any(u.extra["tempo"] != 1.0 for u in train)
    for split in ("dev", "test"):
        for u in corpus[split]:
            assert u.extra["tempo"] == 1.0 and u.extra["room"] is None and u.extra["channel"] is None
            assert u.extra["semitones"] == synth._parse_voice(u.speaker)[1]
        assert not {u.speaker for u in corpus[split]} & {u.speaker for u in train}


@needs_all
def test_train_text_is_spoken_in_train_only_by_different_voices(natural_corpora):
    dirs, _ = natural_corpora
    corpus = _corpus(dirs["n1"])
    for text in ("ten of clubs", "five five"):
        spoken = [u for u in corpus["train"] if u.text == text]
        assert len(spoken) == synth.TRAIN_TEXT_REPEATS
        assert all(u.extra["sentence"].startswith("t") for u in spoken)
        assert all(u.text != text for split in ("dev", "test") for u in corpus[split])
    lm_text = (dirs["n1"] / synth.LM_TEXT_FILE).read_text().splitlines()
    held_out = {u.text for split in ("dev", "test") for u in corpus[split]}
    assert not held_out & set(lm_text)
