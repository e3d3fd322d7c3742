"""`dasr export` (ONNX for onnxruntime and sherpa-onnx), `dasr transcribe --onnx`, and `dasr demo`'s layout."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import train_tiny

from dasr.cli import main
from dasr.data import audio
from dasr.data.features import fbank
from dasr.data.manifest import read_manifest
from dasr.decode.export import export_onnx, sherpa_recognizer
from dasr.decode.lm_build import build_lm
from dasr.decode.recognizer import OnnxRecognizer, Recognizer, tuned_lm_weights
from dasr.errors import DasrError


def _sherpa_texts(export: Path, files: list[str], **features) -> list[str]:
    recognizer = sherpa_recognizer(export, **features)
    texts = []
    for f in files:
        stream = recognizer.create_stream()
        stream.accept_waveform(16000, audio.load(f))
        recognizer.decode_stream(stream)
        texts.append(_words(stream.result.text))
    return texts


def _dasr(capsys, *args) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `dasr ARGS` run in this process."""
    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _words(text: str) -> str:
    """sherpa-onnx keeps the spaces of repeated word boundaries ("a  b"); dasr joins words with one."""
    return " ".join(text.split())


@pytest.fixture
def demo_layout(speech_data_dir, tmp_path):
    """`dasr demo`'s layout: OUT/model is the experiment, OUT/data the data dir (with an LM)."""
    out = tmp_path / "out"
    train_tiny(speech_data_dir, out / "model")
    build_lm(speech_data_dir, order=2)
    files = [u.audio for u in read_manifest(speech_data_dir / "test.jsonl")]
    return out, speech_data_dir, files


def test_export_matches_pytorch_and_sherpa_onnx(demo_layout, tmp_path, capsys):
    out, data, files = demo_layout
    export = tmp_path / "onnx"
    assert main(["export", str(out), "--out", str(export), "--lm", str(data)]) == 0
    assert {p.name for p in export.iterdir()} == {
        "model.onnx",
        "tokens.txt",
        "tokenizer.json",
        "lm.arpa",
        "lm_weights.json",
    }
    meta = {p.key: p.value for p in onnx.load(str(export / "model.onnx")).metadata_props}
    assert meta["model_type"] == "zipformer2_ctc" and meta["vocab_size"] == "29" and meta["blank_id"] == "0"
    tokens = (export / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[:3] == ["<blank> 0", "\u2581 1", "' 2"] and len(tokens) == 29

    # one padded batch of the 8 real files (1.1 to 2.1 s): raw fbank into ONNX, CMVN'd fbank into PyTorch
    torch_rec, onnx_rec = Recognizer(out), OnnxRecognizer(export)
    feats = [fbank(audio.load(f)) for f in files]
    lengths = np.array([len(f) for f in feats])
    assert len(set(lengths.tolist())) == len(files)
    raw = np.zeros((len(feats), lengths.max(), 80), np.float32)
    normalised = np.zeros_like(raw)
    for i, f in enumerate(feats):
        raw[i, : len(f)], normalised[i, : len(f)] = f, torch_rec.cmvn(f)
    got, got_lens = onnx_rec.log_probs(raw, lengths)
    want, want_lens = torch_rec.log_probs(torch.from_numpy(normalised), torch.from_numpy(lengths))
    assert got_lens.tolist() == want_lens.tolist() == (lengths // 3).tolist()
    for b, n in enumerate(want_lens.tolist()):
        torch.testing.assert_close(got[b, :n], want[b, :n], rtol=1e-5, atol=1e-4)

    # sherpa-onnx computes its own fbank from the audio and decodes greedily
    dasr_texts = [torch_rec.transcribe(f) for f in files]
    assert _sherpa_texts(export, files) == dasr_texts
    assert sum(bool(t) for t in dasr_texts) >= 6  # a model that says something
    refs = [u.text for u in read_manifest(data / "test.jsonl")]
    assert dasr_texts != refs  # and not everything right: ties and near-ties are being compared too

    # dasr transcribe --onnx prints what dasr transcribe EXP prints, greedy and with the LM the export holds
    status, greedy, _ = _dasr(capsys, "transcribe", out, *files)
    assert status == 0 and greedy.splitlines() == [f"{f}\t{t}" for f, t in zip(files, dasr_texts)]
    status, with_lm, _ = _dasr(capsys, "transcribe", out, *files, "--lm", data)
    assert status == 0 and with_lm != greedy
    without_lm = tmp_path / "onnx-without-lm"
    assert main(["export", str(out), "--out", str(without_lm)]) == 0
    assert _dasr(capsys, "transcribe", "--onnx", without_lm, *files) == (0, greedy, "")
    assert _dasr(capsys, "transcribe", "--onnx", export, *files) == (0, with_lm, "")

    # once `dasr decode --lm` has tuned the weights on dev, transcribe and the export use them
    assert main(["decode", "--exp", str(out), "--data", str(data), "--split", "test", "--lm", "--beam-size", "20"]) == 0
    tuned = json.loads((out / "model" / "decode-test-lm" / "decode.json").read_text())
    assert (tuned["lm_weight"], tuned["word_score"]) != (1.0, 0.0)  # else the defaults would pass the checks below
    weights = ["--lm-weight", tuned["lm_weight"], "--word-score", tuned["word_score"]]
    status, explicit, _ = _dasr(capsys, "transcribe", out, *files, "--lm", data, *weights)
    assert status == 0 and _dasr(capsys, "transcribe", out, *files, "--lm", data)[1] == explicit
    assert main(["export", str(out), "--out", str(export), "--lm", str(data)]) == 0
    assert json.loads((export / "lm_weights.json").read_text()) == {k: tuned[k] for k in ("lm_weight", "word_score")}
    assert _dasr(capsys, "transcribe", "--onnx", export, *files) == (0, explicit, "")


def test_tuned_lm_weights(tmp_path):
    assert tuned_lm_weights(tmp_path) == {"lm_weight": 1.0, "word_score": 0.0}
    for split, weight, age in (("dev", 2.0, 100), ("test", 3.0, 0)):
        decode = tmp_path / f"decode-{split}-lm" / "decode.json"
        decode.parent.mkdir()
        decode.write_text(json.dumps({"lm_weight": weight, "word_score": -1.0, "checkpoint": "best"}))
        os.utime(decode, (time.time() - age, time.time() - age))
    assert tuned_lm_weights(tmp_path) == {"lm_weight": 3.0, "word_score": -1.0}  # the newest decode
    (tmp_path / "lm_weights.json").write_text(json.dumps({"lm_weight": 0.5, "word_score": 1.5}))
    assert tuned_lm_weights(tmp_path) == {"lm_weight": 0.5, "word_score": 1.5}  # an export's own
    (tmp_path / "lm_weights.json").write_text("{}")
    with pytest.raises(DasrError, match="lm_weights.json holds no LM weights"):
        tuned_lm_weights(tmp_path)


def test_transcribe_finds_the_model_in_demo_output(demo_layout, tmp_path, capsys):
    out, _, files = demo_layout
    # the console script, as a newcomer runs it after `make demo`
    result = subprocess.run(
        [sys.executable, "-m", "dasr", "transcribe", str(out), files[0]], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{files[0]}\t{Recognizer(out / 'model').transcribe(files[0])}\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = _dasr(capsys, "transcribe", empty, files[0])
    assert status == 1 and f"no trained model in {empty}" in err and str(empty / "model") in err
    status, _, err = _dasr(capsys, "transcribe", out)
    assert status == 1 and "one or more audio files" in err
    status, _, err = _dasr(capsys, "transcribe", "--onnx", empty, files[0])
    assert status == 1 and "model.onnx is missing" in err
    status, _, err = _dasr(capsys, "export", empty, "--out", tmp_path / "x")
    assert status == 1 and "no trained model" in err


def test_bench_export_reports_agreement(demo_layout, tmp_path):
    from lab.bench.export import run

    out, data, _ = demo_layout
    results = run(str(out), str(data), quick=True, out_dir=str(tmp_path / "results"), command="dasr bench export")
    engines = results["engines"]
    assert results["utterances"] == 8 and results["max_abs_log_prob_diff"] < 1e-3
    assert engines["onnxruntime"]["same_as_pytorch"] == engines["sherpa-onnx"]["same_as_pytorch"] == 8
    assert engines["sherpa-onnx"]["wer"] == engines["pytorch"]["wer"] > 0
    assert engines["sherpa-onnx defaults"]["same_as_pytorch"] < 8  # the fbank settings matter
    report = (tmp_path / "results" / "export.md").read_text()
    assert "| sherpa-onnx | " in report and "8 / 8" in report


def test_bpe_units_export_for_sherpa_onnx(speech_data_dir, tmp_path):
    files = [u.audio for u in read_manifest(speech_data_dir / "test.jsonl")]
    train_tiny(speech_data_dir, tmp_path / "exp", steps=80, units="bpe", bpe_vocab=40)
    export = tmp_path / "onnx"
    export_onnx(tmp_path / "exp", export)
    tokens = (export / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[:2] == ["<blank> 0", "<unk> 1"] and any(t.startswith("\u2581") for t in tokens[2:])
    rec = Recognizer(tmp_path / "exp")
    texts = [rec.transcribe(f) for f in files]
    assert sum(len(t.split()) for t in texts) >= 16  # words from "▁"-pieces, joined as sentencepiece does
    assert _sherpa_texts(export, files) == texts
