"""`dasr bench real-speech`: the pocketsphinx-testdata recordings, imported as a Kaldi dir, decoded by a real model."""

from __future__ import annotations

import json

import pytest
import soundfile

from dasr.cli import main
from dasr.config import TrainConfig
from dasr.data.manifest import read_manifest
from dasr.decode import real_speech
from dasr.decode.lm_build import build_lm
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
    report = json.loads((out / "real-speech.json").read_text())
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
    assert summary["real_speech_cer_greedy"]["benchmark"] == "real-speech"
    md = (out / "real-speech.md").read_text()
    assert "Command: `dasr" in md and "| demo |" in md and "| espeak-only | cards |" in md and "| demo | espeak |" in md
    assert (out / "real-speech.png").stat().st_size > 1000
