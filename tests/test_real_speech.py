"""`dasr bench real-speech`: the pocketsphinx-testdata recordings, imported as a Kaldi dir, decoded by a real model."""

from __future__ import annotations

import json

import pytest
import soundfile

from dasr.cli import main
from dasr.config import TrainConfig
from dasr.data.features import FeatureStore
from dasr.data.manifest import read_manifest
from dasr.decode import real_speech
from dasr.decode.lm_build import build_lm, lexicon_words
from dasr.errors import DasrError
from dasr.train.run import train

needs_testdata = pytest.mark.skipif(
    not (real_speech.TESTDATA / "cards").is_dir(), reason="pocketsphinx-testdata is not installed"
)


@needs_testdata
def test_clips_are_ten_transcribed_16_khz_recordings_of_two_people():
    clips = real_speech.clips()
    assert len(clips) == 10
    assert {name for name, *_ in clips} == set(real_speech.CLIP_SETS)
    assert len({utt for _, utt, _, _ in clips}) == 10
    for _, _, wav, text in clips:
        info = soundfile.info(str(wav))
        assert (info.samplerate, info.channels) == (16000, 1) and 1.0 < info.duration < 8.0
        assert text == text.strip() and "<s>" not in text and text.islower()
    texts = [t for *_, t in clips]
    assert "eight of spades four of clubs seven of hearts" in texts
    assert "he was not an ill disposed young man" in texts
    assert real_speech.sentences() == texts


def test_missing_package_and_bad_lines_are_clear_errors(tmp_path):
    with pytest.raises(DasrError, match="apt-get install pocketsphinx-testdata"):
        real_speech.clips(tmp_path)
    assert real_speech.sentences(tmp_path) == []
    for relative in real_speech.CLIP_SETS.values():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("<s> ten of clubs </s> (001)\n")
    (tmp_path / "cards/cards.transcription").write_text("ten of clubs 001\n")
    with pytest.raises(DasrError, match="cards.transcription:1: expected"):
        real_speech.clips(tmp_path)


@needs_testdata
def test_kaldi_import_of_the_recordings_keeps_ids_texts_speakers_and_durations(tmp_path):
    clips = real_speech.clips()
    kaldi = real_speech.write_kaldi_dir(clips, tmp_path / "kaldi")
    assert main(["corpus", "import-kaldi", str(kaldi), "--out", str(tmp_path / "real.jsonl"), "--strict"]) == 0
    utts = {u.id: u for u in read_manifest(tmp_path / "real.jsonl")}
    assert len(utts) == 10
    for name, utt, wav, text in clips:
        assert utts[utt].text == text and utts[utt].speaker == name
        assert utts[utt].duration == pytest.approx(soundfile.info(str(wav)).duration, abs=1e-3)


@needs_testdata
def test_bench_decodes_the_recordings_and_reports_consistent_numbers(speech_data_dir, tmp_path):
    build_lm(str(speech_data_dir), order=2)
    exp = tmp_path / "exp"
    config = TrainConfig(
        data=str(speech_data_dir), exp=str(exp), model="tiny", max_steps=30, batch_frames=100000, lr=0.01, seed=1
    )
    train(config)
    out = tmp_path / "results"
    args = ["bench", "real-speech", "--exp", str(exp), "--data", str(speech_data_dir), "--out", str(out)]
    assert main([*args, "--compare", f"espeak-only={exp},{speech_data_dir}"]) == 0
    report = json.loads((out / "real-speech-synthetic.json").read_text())
    models = report["results"]["models"]
    assert [m["label"] for m in models] == ["demo", "espeak-only"]
    head = models[0]
    clips = real_speech.clips()
    assert head["real"]["utterances"] == 10
    assert head["real"]["words"] == sum(len(t.split()) for *_, t in clips)
    assert head["real_sentences_in_train_text"] == 0  # the espeak test utterances say none of them
    hyps = (exp / "decode-real" / "hyp.txt").read_text().splitlines()
    assert sorted(line.split(" ")[0] for line in hyps) == sorted(u for _, u, _, _ in clips)
    # per clip set rescoring agrees with the whole: the word-weighted mean of the sets' WER is the total
    words = {n: sum(len(t.split()) for s, _, _, t in clips if s == n) for n in real_speech.CLIP_SETS}
    for kind in ("greedy", "lm"):
        weighted = sum(head["real_per_set"][n][f"wer_{kind}"] * words[n] for n in words) / sum(words.values())
        assert weighted == pytest.approx(head["real"][f"wer_{kind}"], abs=1e-9)
    assert 0.0 <= head["synthetic_test"]["wer_lm"] <= 1.5
    # the synthetic test per engine rescores the same decode: one engine here, so it is the whole
    assert set(head["synthetic_test_per_engine"]) == {"espeak"}
    for key in ("wer_greedy", "cer_greedy", "wer_lm", "cer_lm"):
        assert head["synthetic_test_per_engine"]["espeak"][key] == pytest.approx(head["synthetic_test"][key], abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["real_speech_wer_lm"]["value"] == head["real"]["wer_lm"]
    assert summary["real_speech_cer_greedy_espeak_only"]["value"] == models[1]["real"]["cer_greedy"]
    assert summary["real_speech_cer_greedy"]["benchmark"] == "real-speech-synthetic"
    md = (out / "real-speech-synthetic.md").read_text()
    assert "Command: `dasr" in md and "| demo |" in md and "| espeak-only | cards |" in md and "| demo | espeak |" in md
    assert (out / "real-speech-synthetic.png").stat().st_size > 1000


def test_a_held_out_set_with_domain_text_gets_its_own_lm_and_leaves_the_models(speech_data_dir, tmp_path):
    build_lm(str(speech_data_dir), order=2)
    model_lm = (speech_data_dir / "lm.arpa").read_bytes()
    utts = read_manifest(speech_data_dir / "test.jsonl")
    for u in utts:
        u.text = u.text + " zyzzyva"  # a word the train text never had
    text = tmp_path / "domain.txt"
    text.write_text("".join(u.text + "\n" for u in utts))
    plain = real_speech.held_out_data_dir(speech_data_dir, "held", utts, tmp_path / "plain")
    domain = real_speech.held_out_data_dir(speech_data_dir, "held", utts, tmp_path / "domain", domain_text=text)
    assert "zyzzyva" not in lexicon_words(plain) and "zyzzyva" in lexicon_words(domain)
    assert (plain / "lm.arpa").resolve() == (speech_data_dir / "lm.arpa").resolve()
    assert not (domain / "lm.arpa").is_symlink() and "\\2-grams:" in (domain / "lm.arpa").read_text()
    assert (speech_data_dir / "lm.arpa").read_bytes() == model_lm
    assert [u.id for u in read_manifest(domain / "held.jsonl")] == [u.id for u in utts]
    assert len(FeatureStore(domain, "held")) == len(utts)


def test_recipe_comparison_report_judges_the_goals_on_the_plateau_run(tmp_path):
    from lab.bench import real_speech_recipes as bench
    from lab.report import Report

    def model(wer_lm: float, voices: int, variety: bool = True) -> dict:
        scores = {
            name: {k: wer_lm for k, _ in bench.COLUMNS} | {"cer_greedy": 0.2, "utterances": 3, "words": 9}
            for name in bench.TEST_SETS
        }
        parts = {"real": True, "synthetic": True, "variety": variety, "voices": voices, "synthetic_hours": 4.0}
        curve = [{"epoch": 0, "step": 9, "train_s": 60.0, "dev_wer": 0.5, "dev_loss": 1.0}]
        return dict(
            scores=scores,
            parts=parts,
            natural_voices=voices,
            train_hours_real=8.6,
            train_hours_synthetic=2.5,
            dev_curve=curve,
            steps_s={},
            out="x",
        )

    results = {
        "test_sets": {name: {"utterances": 3, "hours": 0.01} for name in bench.TEST_SETS},
        "models": {
            bench.recipe_label("real"): model(0.25, 21),
            bench.recipe_label("demo"): model(0.6, 21),
            "both": model(0.5, 21),
            "both, 7 voices": model(0.7, 7),
        },
        "pocketsphinx": {"version": "5.1.1", "scores": {bench.TEST_SETS[1]: {"wer": 0.228, "cer": 0.1}}},
    }
    report = Report("real-speech", bench.TITLE, "cmd", {})
    assert bench.render(results, report) is not None
    text = "\n".join(report.sections)
    assert "Judged on **recipe: both, real model (4 x 256), to the plateau**" in text
    assert "uqm held-out speakers, WER, LM never saw the set: **25.0 %** (goal <= 30.0 %: met)" in text
    assert "WER, LM given the set's sentences: **25.0 %** (goal <= 40.0 %: met)" in text
    assert "| pocketsphinx 5.1.1 |" in text and "| 7 | " in text and "| 21 | " in text
    figures = bench.figures(results)
    assert figures["real_recipe_wer_lm_heldout_speakers"] == 0.25 and figures["real_recipe_natural_voices"] == 21
